"""ASGI entry point: HTTP through Django, websockets through Channels (as in its tutorial)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat import generation  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from serika_web.origin import SameOriginValidator  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Channels' tutorial has AllowedHostsOriginValidator here; ours also compares the
        # scheme and the port (serika_web/origin.py).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    # The first connection starts this process's heartbeat and its sweep of replies left
    # "streaming" by a server that was killed (daphne has no lifespan start-up hook).
    if scope["type"] != "lifespan":
        generation.ensure_maintenance()
    return await router(scope, receive, send)

"""The websocket Origin check: a socket may be opened only by a page of this very site.

Channels' AllowedHostsOriginValidator compares the Origin's host name with ALLOWED_HOSTS alone,
so a page at `http://127.0.0.1:9999` (any other program on the machine) or at plain-HTTP
`http://chat.example.com` (which an attacker on the network can serve) could open sockets with
the member's cookies. Browsers send Origin with every websocket handshake; here it must name the
scheme, host and port the handshake itself was made to, or an origin in CSRF_TRUSTED_ORIGINS,
as Django's CSRF check requires of form posts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None if malformed."""
    try:
        port = url.port
    except ValueError:
        return None
    if url.scheme not in _DEFAULT_PORTS or not url.hostname:
        return None
    return url.scheme, url.hostname, port or _DEFAULT_PORTS[url.scheme]


def _headers(scope: dict[str, Any]) -> dict[bytes, list[bytes]]:
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.lower(), []).append(value)
    return headers


def _request_scheme(scope: dict[str, Any], headers: dict[bytes, list[bytes]]) -> str:
    """http or https, as Django's request.is_secure() would say for this handshake."""
    scheme = "https" if scope.get("scheme") in {"wss", "https"} else "http"
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        # Django's META name (HTTP_X_FORWARDED_PROTO) back to the header (x-forwarded-proto).
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        if values := headers.get(header):
            forwarded = values[0].decode("latin1").split(",", 1)[0].strip()
            scheme = "https" if forwarded == secure_value else "http"
    return scheme


def _allowed_hosts() -> list[str]:
    # The same fallback as Django's own host validation when DEBUG is on.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def _trusted(origin: SplitResult) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lists the origin (with Django's `*.` subdomain patterns)."""
    key = _origin_key(origin)
    for pattern in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in pattern:
            trusted = urlsplit(pattern.lower())
            if origin.scheme == trusted.scheme and is_same_domain(
                origin.netloc.lower(), trusted.netloc.replace("*", "", 1)
            ):
                return True
        elif key is not None and key == _origin_key(urlsplit(pattern.lower())):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether a websocket handshake comes from a page of this site: its Host passes
    ALLOWED_HOSTS, and its Origin equals scheme://host:port of the handshake itself (ws → http,
    wss → https, X-Forwarded-Proto when SECURE_PROXY_SSL_HEADER trusts it) or is listed in
    CSRF_TRUSTED_ORIGINS. No Origin, several, or "null" is refused: browsers always send one."""
    headers = _headers(scope)
    origins, hosts = headers.get(b"origin", []), headers.get(b"host", [])
    if len(origins) != 1 or len(hosts) != 1:
        return False
    try:
        origin_text, host = origins[0].decode("ascii"), hosts[0].decode("ascii")
    except UnicodeDecodeError:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    origin = urlsplit(origin_text.lower())
    if origin.path or origin.query or origin.fragment or origin.username or origin.password:
        return False
    own = _origin_key(urlsplit(f"{_request_scheme(scope, headers)}://{host.lower()}"))
    key = _origin_key(origin)
    return (key is not None and key == own) or _trusted(origin)


class SameOriginValidator:
    """ASGI middleware refusing (HTTP 403 at the handshake) websockets from other origins."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

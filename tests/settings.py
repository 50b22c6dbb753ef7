"""Test overlay: the real settings with test-only defaults, so `pytest` runs with no setup.

Production-like servers started by tests use serika_web.settings itself, with their env.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")
os.environ.setdefault("SECURE_HTTPS", "false")
os.environ.setdefault("SERIKA_API_KEY", "test-key")
# Nothing leaves the machine: a test without the fake upstream (whose fixture sets the URL)
# reaches a closed local port, e.g. when a chat page lists the models in the background.
os.environ.setdefault("SERIKA_BASE_URL", "http://127.0.0.1:9/api/openai/v1")
# A title request would take the next reply a test queued on the fake upstream: titles are
# turned on by the tests about them (tests/test_titles.py), servers they start included.
os.environ.setdefault("SERIKA_AUTO_TITLES", "false")
# Every test client and live server is 127.0.0.1, and Redis keeps counts for the whole run:
# the per-address limit on sign-ups and resets is turned on by the tests about it.
os.environ.setdefault("RATE_LIMIT_ACCOUNT_REQUESTS", "")
# Conversation ids restart with every test database; a per-run channel-layer prefix keeps
# groups that Redis remembers from earlier runs out of this one (servers started by the tests
# inherit it from the environment).
os.environ.setdefault("CHANNEL_PREFIX", f"asgi-test-{os.getpid()}")

from serika_web.settings import *  # noqa: F403
from serika_web.settings import DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A real file (WAL, several threads) rather than the shared-cache memory database, whose
    # table locks ignore the busy timeout; per-process so concurrent runs do not collide.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"serika-test-{os.getpid()}.sqlite3")
    }

else:
    # Per-process test database, so two test runs on one server never drop each other's.
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

# In-process tests run inside a transaction on the test thread's connection, which other
# threads' connections cannot see: their database calls stay on Channels' one shared thread
# (tests/test_database_threads.py turns the threads on with a committed database; servers
# started by the tests use the production default).
DATABASE_THREADS = 0

# In-process tests need no collectstatic; servers started by tests use the manifest storage.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT = os.path.join(tempfile.gettempdir(), "serika-test-static")
os.makedirs(STATIC_ROOT, exist_ok=True)
MEDIA_ROOT = os.path.join(tempfile.gettempdir(), f"serika-test-media-{os.getpid()}")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Short intervals so durability tests need not wait long.
CHAT_FLUSH_INTERVAL = 0.2
CHAT_HEARTBEAT_INTERVAL = 0.5

if "pool" in DATABASES["default"].get("OPTIONS", {}):
    # No pool in the test process itself: its async tests run ORM calls in throwaway threads
    # (sync_to_async, asyncio.to_thread) that never close their connection, and a pooled
    # connection goes back only when closed, so twenty such calls would drain the pool. The
    # daphne processes the tests start use serika_web.settings, pool included
    # (tests/test_db_pool.py).
    DATABASES["default"]["OPTIONS"] = {
        k: v for k, v in DATABASES["default"]["OPTIONS"].items() if k != "pool"
    }

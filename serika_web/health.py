"""`/healthz` (the process answers) and `/readyz` (its database and channel layer answer), and
`/metrics` (serika_web/metrics.py, behind its token).

For load balancers, container health checks and uptime probes: unauthenticated, cheap, plain
text. They are answered by a middleware placed right after SecurityMiddleware, before anything
that validates the Host header, so a probe may address a process by its IP or `localhost`
whatever `ALLOWED_HOSTS` says; `SECURE_REDIRECT_EXEMPT` lets it use plain HTTP behind a TLS
proxy. A 503 from `/readyz` is an answer, not a server error: it is not logged as one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import markcoroutinefunction
from channels.layers import get_channel_layer
from django.db import DatabaseError, connection, connections
from django.http import HttpRequest, HttpResponse

from serika_web.metrics import metrics_response

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# Prometheus scrapes each process by address, like a probe (serika_web/metrics.py).
METRICS_PATH = "/metrics"
# Seconds each readiness check may take: a probe must answer well within a proxy's own timeout.
CHECK_TIMEOUT = 3.0


def _select_one() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        # A broken connection is dropped, so that the next probe (or query) connects afresh.
        connection.close_if_unusable_or_obsolete()
        raise


# A thread of the probes' own: a query waiting for a database that is down (up to
# DATABASE_POOL_TIMEOUT for a pooled connection) must hold neither Channels' shared database
# thread nor the probe's answer. A probe that finds it still busy times out.
_probe_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")


def _select_one_and_close() -> None:
    try:
        _select_one()
    finally:
        connections.close_all()


async def check_database() -> None:
    """Raise unless the database answers `SELECT 1` within the check's time."""
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(
        asyncio.wrap_future(_probe_thread.submit(_select_one_and_close), loop=loop), CHECK_TIMEOUT
    )


async def check_channel_layer() -> None:
    """Raise unless a message sent on a fresh channel of the layer comes back."""
    layer = get_channel_layer()
    async with asyncio.timeout(CHECK_TIMEOUT):
        channel = await layer.new_channel("readyz.")
        token = secrets.token_hex(8)
        await layer.send(channel, {"type": "readyz.ping", "token": token})
        message = await layer.receive(channel)
        if message.get("token") != token:
            raise RuntimeError("the layer returned another message")
        # A cancelled receive is how a channel is given up (channels_redis' pub/sub layer then
        # unsubscribes it; the in-memory layer drops its empty queue): no probe leaves one behind.
        leftover = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)
        leftover.cancel()
        await asyncio.gather(leftover, return_exceptions=True)


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": check_database,
    "channel layer": check_channel_layer,
}


async def readiness() -> tuple[bool, str]:
    """Run every check at once; (all passed, one line per check)."""
    names = list(CHECKS)
    results = await asyncio.gather(*(CHECKS[name]() for name in names), return_exceptions=True)
    lines = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            reason = "timed out" if isinstance(result, TimeoutError) else type(result).__name__
            lines.append(f"{name}: failed ({reason})")
        else:
            lines.append(f"{name}: ok")
    return all(not isinstance(r, BaseException) for r in results), "\n".join(lines) + "\n"


def _plain(text: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    # Django logs every 5xx response at ERROR ("Service Unavailable: /readyz"); a failed
    # readiness check is the answer a probe asked for, and the failing part logs its own outage.
    response._has_been_logged = True
    return response


class HealthCheckMiddleware:
    """Answers the two probe paths before the rest of the stack (sessions, Host validation)."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == HEALTH_PATH:
            return _plain("ok\n")
        if request.path == READY_PATH:
            ready, report = await readiness()
            return _plain(report, 200 if ready else 503)
        if request.path == METRICS_PATH:
            return metrics_response(request)
        return await self.get_response(request)

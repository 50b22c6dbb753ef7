"""What-if experiments: the app with candidate fixes applied as patches at start-up, to measure a
proposed change before anyone writes it. Not the app as deployed; never the default.

    python -m bench.run --asgi bench.whatif:application --app-env BENCH_WHATIF=dispatch,layer

BENCH_WHATIF is a comma-separated list of (dispatch has been in the app since b498179, and layer
was until events began to reach a process's own sockets without the layer; they stay here to
reproduce the measurements that led to them, and to show what layer no longer buys):

- dispatch: ChatConsumer skips channels' `aclose_old_connections()` (a hop to the one sync thread
  that also runs every query) for the relay events it gets from the channel layer, which never
  touch the database. channels 4.2+ runs it before every handler, so each delta to each socket
  waits behind queued queries.
- layer: an in-memory channel layer that does not deep-copy each message per receiver and cleans
  expired messages at most once a second instead of scanning every channel and group on every
  receive (O(sockets) per delta per socket in channels' InMemoryChannelLayer).

- redis_timeout: the Redis channel layer's connections get socket_timeout=15 s. redis-py 8 sets a
  5 s default read timeout, the same as channels_redis' BZPOPMIN block (5 s), so a consumer
  waiting for its next event can fail with "Timeout reading from ..." and close its socket (1011).

- redis_no_timeout: the Redis channel layer's connections get no socket timeout, so redis-py
  sends each command without `asyncio.wait_for` (and the task it creates per command).
- network=httpx: the upstream client on httpx's own transport (httpcore's anyio network backend,
  unlimited connections kept 30 s like ours) instead of `chat.upstream_network.PooledTransport`:
  what the asyncio backend still buys.
- switch=SECONDS: `sys.setswitchinterval(SECONDS)` (Python's default is 0.005).
- batching=THRESHOLD:SECONDS_PER_STREAM:MAX_WINDOW: other constants for the generation's
  adaptive batching (`chat.generation.BATCHING_*`).

SQLite connection reuse needs no patch: `--db-params conn_max_age=600`.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")

from django.conf import settings

WHATIF = {x.strip() for x in os.environ.get("BENCH_WHATIF", "").split(",") if x.strip()}

if "layer" in WHATIF and not os.environ.get("REDIS_URL"):
    settings.CHANNEL_LAYERS["default"]["BACKEND"] = "bench.whatif.LeanInMemoryChannelLayer"

if "redis_timeout" in WHATIF and os.environ.get("REDIS_URL"):
    layer = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer["hosts"] = [{"address": os.environ["REDIS_URL"], "socket_timeout": 15}]

if "redis_no_timeout" in WHATIF and os.environ.get("REDIS_URL"):
    # No socket timeout: redis-py then sends each command without `asyncio.wait_for`, which
    # wraps it in a task of its own.
    layer = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer["hosts"] = [{"address": os.environ["REDIS_URL"], "socket_timeout": None}]

for item in WHATIF:
    if item.startswith("switch="):
        sys.setswitchinterval(float(item.partition("=")[2]))

from bench.app import application  # noqa: E402  (the app, with the write counter)

for item in WHATIF:
    if item.startswith("batching="):
        from chat import generation

        threshold, per_stream, max_window = item.partition("=")[2].split(":")
        generation.BATCHING_THRESHOLD = int(threshold)
        generation.BATCHING_SECONDS_PER_STREAM = float(per_stream)
        generation.BATCHING_MAX_WINDOW = float(max_window)

if "network=httpx" in WHATIF:
    import httpx

    from chat import upstream

    def _httpx_transport(*, keepalive_expiry=None, **_):
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=keepalive_expiry
        )
        return httpx.AsyncHTTPTransport(limits=limits)

    upstream.PooledTransport = _httpx_transport

_RELAY_EVENTS = {"message.delta", "message.created", "message.done", "reply.snapshot"}

if "dispatch" in WHATIF:
    from chat.consumers import ChatConsumer

    _dispatch = ChatConsumer.dispatch

    async def dispatch(self, message):
        if message["type"] in _RELAY_EVENTS:
            handler = getattr(self, message["type"].replace(".", "_"))
            await handler(message)
        else:
            await _dispatch(self, message)

    ChatConsumer.dispatch = dispatch


def _lean_layer():
    import asyncio
    import contextlib

    from channels.exceptions import ChannelFull
    from channels.layers import InMemoryChannelLayer

    class LeanInMemoryChannelLayer(InMemoryChannelLayer):
        _last_clean = 0.0

        async def send(self, channel, message):
            assert isinstance(message, dict), "message is not a dict"
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
            try:
                queue.put_nowait((time.time() + self.expiry, dict(message)))
            except asyncio.QueueFull:
                raise ChannelFull(channel) from None

        def _clean_expired(self):
            now = time.monotonic()
            if now - self._last_clean >= 1.0:
                self._last_clean = now
                super()._clean_expired()

        async def group_send(self, group, message):
            assert isinstance(message, dict), "Message is not a dict"
            for channel in list(self.groups.get(group, {})):
                with contextlib.suppress(ChannelFull):
                    await self.send(channel, message)

    return LeanInMemoryChannelLayer


def __getattr__(name):
    if name == "LeanInMemoryChannelLayer":
        return _lean_layer()
    raise AttributeError(name)


__all__ = ["application"]

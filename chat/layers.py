"""The embedded (single-process) channel layer."""

from __future__ import annotations

import asyncio
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer


class InMemoryChannelLayer(_InMemoryChannelLayer):
    """Channels' in-memory layer with its expiry sweep run at most once a second, and no deep
    copy of every message for every receiver.

    Upstream sweeps every channel and every group on each send and receive, which makes one
    message cost O(channels): with hundreds of streams that sweep was the largest single cost of
    the relay (measured in docs/benchmarks.md). Expiry is 30 s, so a sweep a second loses nothing.
    """

    sweep_interval = 1.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        super()._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        # Upstream's send, with a shallow copy instead of a deep one: no receiver of our events
        # mutates them (consumers only serialise them), and the deep copy per receiver was a
        # measurable share of a delta's cost.
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        self.require_valid_channel_name(channel)
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull as exc:
            raise ChannelFull(channel) from exc

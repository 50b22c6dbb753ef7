"""The embedded (single-process) channel layer."""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer


class InMemoryChannelLayer(_InMemoryChannelLayer):
    """Channels' in-memory layer with its expiry sweep run at most once a second.

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

"""Which models the "Chat settings" panel offers: the upstream's `/models`, cached per process.

A page never waits for `/models`: it gets what the cache holds (however old), and a stale or
empty cache is refreshed on a thread of its own in the background, for the next page. Until the
first answer, and whenever the upstream cannot list its models, the list falls back to
`SERIKA_MODELS` (or the default model). `SERIKA_MODELS`, when set, also restricts what the
upstream lists to those ids, in that order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.conf import settings

from chat import upstream

log = logging.getLogger(__name__)

# Seconds one `/models` request may take (it never holds a page: it runs in the background).
FETCH_TIMEOUT = 5.0

_lock = threading.Lock()
_listed: list[str] | None = None  # the upstream's last answer
_fetched_at = 0.0  # monotonic time of that answer (or of the last failed try)
_refreshing = False
# Bumped by `forget`: a refresh started before then does not fill the new cache.
_generation = 0


def _refresh(generation: int) -> None:
    global _listed, _fetched_at, _refreshing

    async def fetch() -> list[str]:
        try:
            return await upstream.list_models(FETCH_TIMEOUT)
        finally:
            await upstream.close_loop_client()

    try:
        listed = asyncio.run(fetch())
    except Exception as exc:  # any failure keeps the old list
        log.warning("Could not list the upstream's models (%s); keeping the last list", exc)
        listed = None
    with _lock:
        if generation != _generation:
            return
        if listed is not None:
            _listed = listed
        _fetched_at = time.monotonic()
        _refreshing = False


def _configured() -> list[str]:
    return [m for m in settings.SERIKA_MODELS if m]


def available_models(current: str = "") -> list[str]:
    """The models to offer now (never waits), with `current` in it; refreshes when stale."""
    global _refreshing
    with _lock:
        listed = _listed
        stale = time.monotonic() - _fetched_at > settings.SERIKA_MODELS_TTL or _fetched_at == 0
        if stale and not _refreshing:
            _refreshing = True
            threading.Thread(
                target=_refresh, args=(_generation,), name="models-refresh", daemon=True
            ).start()
    configured = _configured()
    if listed is None:
        models = configured or [settings.SERIKA_DEFAULT_MODEL]
    elif configured:
        models = [m for m in configured if m in listed] or configured
    else:
        models = listed
    if current and current not in models:
        models = [current, *models]
    return models


def forget() -> None:
    """Drop the cache (tests, and a changed upstream)."""
    global _listed, _fetched_at, _refreshing, _generation
    with _lock:
        _listed, _fetched_at, _refreshing = None, 0.0, False
        _generation += 1

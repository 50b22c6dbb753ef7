"""Rate limits, with the `limits` library: replies started per member (`RATE_LIMIT_SENDS`),
cards imported per member (`RATE_LIMIT_CARD_IMPORTS`), and sign-ups and password-reset
requests per client address (`RATE_LIMIT_ACCOUNT_REQUESTS`).

These guard the server from floods (a script on a socket, a loop of uploads); they are cheap,
checked before any database work, and count every attempt. Spending is capped by the quotas
(`usage.models.reserve`), which count only the calls that started. With `REDIS_URL` the counts
live in Redis, shared by every process; without it, in the process's memory (the embedded
mode has one process). Moving windows: "30/minute" means at most 30 in any 60 seconds.

When Redis cannot be reached the limits are not applied (logged): a Redis outage must not stop
chat, which goes on without Redis (docs/architecture.md, "Outages").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from limits import RateLimitItem, parse_many
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

# A Redis that does not answer within this long counts as away: the attempt is allowed.
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Refusal:
    """An attempt over a limit: `message` says which, `retry_after` in how many seconds."""

    message: str
    retry_after: int


@functools.cache
def _items(spec: str) -> tuple[RateLimitItem, ...]:
    # Checked at startup too (serika_web/settings.py), so a typo fails loudly there.
    return tuple(parse_many(spec)) if spec.strip() else ()


def _key_prefix() -> str:
    # The channel layer's prefix: two instances sharing a Redis keep apart, as do test runs.
    return f"{settings.CHANNEL_LAYERS['default'].get('CONFIG', {}).get('prefix', 'asgi')}:limits"


def _redis_options() -> dict:
    return {
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    }


# The limiter of synchronous code (views), per process; and the async one of the event loop it
# was made on (its Redis connections and the memory storage's expiry task belong to that loop).
_sync_limiter: MovingWindowRateLimiter | None = None
_async_limiter: tuple[asyncio.AbstractEventLoop, aio_strategies.MovingWindowRateLimiter] | None = (
    None
)


def _limiter() -> MovingWindowRateLimiter:
    global _sync_limiter
    if _sync_limiter is None:
        if settings.REDIS_URL:
            storage = RedisStorage(settings.REDIS_URL, key_prefix=_key_prefix(), **_redis_options())
        else:
            storage = MemoryStorage()
        _sync_limiter = MovingWindowRateLimiter(storage)
    return _sync_limiter


def _async() -> aio_strategies.MovingWindowRateLimiter:
    global _async_limiter
    loop = asyncio.get_running_loop()
    if _async_limiter is None or _async_limiter[0] is not loop:
        if settings.REDIS_URL:
            storage = aio_storage.RedisStorage(
                f"async+{settings.REDIS_URL}",
                implementation="redispy",
                key_prefix=_key_prefix(),
                **_redis_options(),
            )
        else:
            storage = aio_storage.MemoryStorage()
        _async_limiter = (loop, aio_strategies.MovingWindowRateLimiter(storage))
    return _async_limiter[1]


def reset() -> None:
    """Forget this process's limiters and their in-memory counts (tests)."""
    global _sync_limiter, _async_limiter
    _sync_limiter = _async_limiter = None


def _per(item: RateLimitItem) -> str:
    name = item.GRANULARITY.name
    if item.multiples > 1:
        return f"per {item.multiples} {name}s"
    return f"an {name}" if name == "hour" else f"a {name}"


def _retry_after(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


async def check_send(user_id: int) -> Refusal | None:
    """Count an attempt of member `user_id` to start a reply; a Refusal when over
    `RATE_LIMIT_SENDS`."""
    items = _items(settings.RATE_LIMIT_SENDS)
    if not items:
        return None
    try:
        limiter = _async()
        for item in items:
            if not await limiter.hit(item, "send", str(user_id)):
                reset_time, _ = await limiter.get_window_stats(item, "send", str(user_id))
                wait = _retry_after(reset_time)
                return Refusal(
                    f"You are starting replies too fast: at most {item.amount} {_per(item)}. "
                    f"Try again in {wait} s.",
                    wait,
                )
    except Exception as exc:
        log.warning("Send rate limit not applied: its storage failed (%s)", exc)
    return None


def refused_page(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    """The page of an attempt over a rate limit: HTTP 429, what the limit is, when to retry."""
    response = render(
        request,
        "usage/rate_limited.html",
        {"message": refusal.message, "back": request.path},
        status=429,
    )
    response["Retry-After"] = str(refusal.retry_after)
    return response


def _hit(spec: str, namespace: str, key: str, cost: int, refusal) -> Refusal | None:
    """Count `cost` attempts of `key` against the limits of `spec`; when one is passed,
    `refusal(item, remaining, wait)` says so (nothing is counted for the limit refused)."""
    try:
        limiter = _limiter()
        for item in _items(spec):
            if not limiter.hit(item, namespace, key, cost=cost):
                reset_time, remaining = limiter.get_window_stats(item, namespace, key)
                return refusal(item, remaining, _retry_after(reset_time))
    except Exception as exc:
        log.warning("Rate limit %s not applied: its storage failed (%s)", namespace, exc)
    return None


def check_card_import(user_id: int, cards: int) -> Refusal | None:
    """Count `cards` card files member `user_id` is importing; a Refusal (nothing counted for
    the limit refused) when that would pass `RATE_LIMIT_CARD_IMPORTS`."""
    if cards <= 0:
        return None

    def refusal(item: RateLimitItem, remaining: int, wait: int) -> Refusal:
        can = f"you can import {remaining} more now" if remaining else "none are left"
        return Refusal(
            f"You may import at most {item.amount} cards {_per(item)}; {can}. "
            f"Try again in {math.ceil(wait / 60)} min.",
            wait,
        )

    return _hit(settings.RATE_LIMIT_CARD_IMPORTS, "card-import", str(user_id), cards, refusal)


def check_account_request(address: str | None) -> Refusal | None:
    """Count a sign-up or password-reset request from client address `address` (each can
    make an account or send an e-mail); a Refusal when over `RATE_LIMIT_ACCOUNT_REQUESTS`."""

    def refusal(item: RateLimitItem, remaining: int, wait: int) -> Refusal:
        return Refusal(
            f"Too many sign-up or password reset requests from your address: at most "
            f"{item.amount} {_per(item)}. Try again in {math.ceil(wait / 60)} min.",
            wait,
        )

    return _hit(settings.RATE_LIMIT_ACCOUNT_REQUESTS, "account", address or "unknown", 1, refusal)

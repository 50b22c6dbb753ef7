"""Which processes have sockets open on a conversation, kept in Redis with expiry.

A process delivers the events of its conversations straight to its own sockets
(`chat.events`); it publishes them through Redis only while another process has a socket on the
same conversation. Each process records its conversations in one Redis hash per conversation
(field: the process id, value: when the entry expires), refreshed every `REFRESH_SECONDS`, and
caches what it read of the others for `CACHE_SECONDS`. A socket that joins a streaming reply
from another process asks the generating process for a snapshot first, which tells that process
at once that someone follows (`mark_followed`), so no cache delay applies to it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

log = logging.getLogger(__name__)

TTL_SECONDS = 30.0
REFRESH_SECONDS = 10.0
CACHE_SECONDS = 3.0

# conversation id → (monotonic time until which it is known, whether other processes follow)
_others: dict[int, tuple[float, bool]] = {}
_clients: dict[asyncio.AbstractEventLoop, object] = {}


def _redis():
    """This event loop's Redis client (the layer's own connections are its business)."""
    from redis.asyncio import Redis

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        _clients[loop] = client
    return client


def _key(conversation_id: int) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "asgi")
    return f"{prefix}:presence:{int(conversation_id)}"


def _process_id() -> str:
    from chat.events import PROCESS_ID

    return PROCESS_ID


async def join(conversation_ids: list[int]) -> None:
    """Record (or refresh) this process's sockets on these conversations."""
    if not conversation_ids:
        return
    expires = str(time.time() + TTL_SECONDS)
    async with _redis().pipeline(transaction=False) as pipe:
        for conversation_id in conversation_ids:
            pipe.hset(_key(conversation_id), _process_id(), expires)
            pipe.expire(_key(conversation_id), int(TTL_SECONDS))
        await pipe.execute()


async def leave(conversation_id: int) -> None:
    """This process has no socket on the conversation any more."""
    await _redis().hdel(_key(conversation_id), _process_id())


def known(conversation_id: int) -> bool | None:
    """Whether another process follows the conversation, as cached; None when not known."""
    entry = _others.get(conversation_id)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


async def others_follow(conversation_id: int) -> bool:
    """Whether another process has a socket on the conversation (read from Redis, cached).

    When Redis cannot say, the answer is yes: publishing needlessly costs little, and an
    unpublished event costs a follower a resync.
    """
    cached = known(conversation_id)
    if cached is not None:
        return cached
    try:
        entries = await _redis().hgetall(_key(conversation_id))
    except Exception:
        return True
    now = time.time()
    me = _process_id().encode()
    follow = any(field != me and float(expires) > now for field, expires in entries.items())
    _others[conversation_id] = (time.monotonic() + CACHE_SECONDS, follow)
    if len(_others) > 10_000:
        _forget_expired()
    return follow


def mark_followed(conversation_id: int) -> None:
    """Another process's socket asked for a snapshot: it follows from now on."""
    _others[conversation_id] = (time.monotonic() + TTL_SECONDS, True)


def _forget_expired() -> None:
    now = time.monotonic()
    for conversation_id in [c for c, (until, _) in _others.items() if until < now]:
        del _others[conversation_id]


async def close() -> None:
    """Close this event loop's client (tests end their loops)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    _others.clear()
    if client is not None:
        await client.aclose()


# --- which generating processes are alive ------------------------------------------------------
# A process that cannot reach the database cannot mark its live replies there, and after an
# outage it may reach it again later than others do (its connection pool backs off). So each
# generating process also marks its control channel alive in Redis, independently of the
# database, and a sweep spares the replies of every process marked there.
ALIVE_SECONDS = 10.0


def _generators_key() -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "asgi")
    return f"{prefix}:generators"


async def mark_generator_alive(channel: str, ttl: float) -> None:
    """Record that the process listening on `channel` is alive for the next `ttl` seconds."""
    await _redis().zadd(_generators_key(), {channel: time.time() + ttl})


async def alive_generators() -> set[str]:
    """The control channels of the processes marked alive (empty when Redis cannot say)."""
    now = time.time()
    key = _generators_key()
    try:
        await _redis().zremrangebyscore(key, "-inf", now)
        members = await _redis().zrangebyscore(key, now, "+inf")
    except Exception:
        return set()
    return {member.decode() for member in members}

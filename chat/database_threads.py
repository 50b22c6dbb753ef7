"""Which threads run the chat's database work: one shared thread on SQLite, a few on PostgreSQL.

Channels' `database_sync_to_async` runs every call of a process on one shared thread. On SQLite
that is the right place: the database takes one writer at a time anyway, and each call is
mostly Python (the ORM) that holds the GIL. On PostgreSQL a call mostly waits for the server's
replies, one round trip per statement, and on one thread a burst of sends queued behind each
other's waits: with 500 members sending at once on two processes, the last reply's first token
came 12 s after its send, and with four threads 6 s (`docs/benchmarks.md`).

So on PostgreSQL these calls run on a pool of `DATABASE_THREADS` threads, each borrowing a
connection from the connection pool for the call and giving it back after, as Channels' wrapper
does. Nothing relies on the one thread's order: a member's writes are serialised by the lock on
their row (`chat.actions._member_writing`), as they must be between processes anyway, and each
socket and each generation awaits its own calls one at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

P = ParamSpec("P")
R = TypeVar("R")

_pool: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> ThreadPoolExecutor | None:
    """The database threads (made on first use), or None: use Channels' shared thread."""
    global _pool
    count = getattr(settings, "DATABASE_THREADS", 0)
    if count < 1:
        return None
    if _pool is None or _pool[0] != count:  # tests change the setting
        _pool = (count, ThreadPoolExecutor(count, thread_name_prefix="database"))
    return _pool[1]


def database_call(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` made awaitable like `database_sync_to_async(fn)` (stale connections closed before
    and after), run on a database thread when there are any, else on Channels' shared one."""
    shared = database_sync_to_async(fn)
    pooled: tuple[ThreadPoolExecutor, Callable[P, Awaitable[R]]] | None = None

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        nonlocal pooled
        executor = _threads()
        if executor is None:
            return await shared(*args, **kwargs)
        if pooled is None or pooled[0] is not executor:  # made once per pool, not per call
            pooled = (
                executor,
                database_sync_to_async(fn, thread_sensitive=False, executor=executor),
            )
        return await pooled[1](*args, **kwargs)

    return call

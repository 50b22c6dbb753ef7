"""The app exactly as deployed (`serika_web.asgi:application`), plus a SQL statement counter for
the benchmark: every new database connection gets a Django execute wrapper that classifies each
statement and bumps a counter in a small memory-mapped file (BENCH_COUNTER_FILE), which the load
client reads at phase boundaries. Cost: one Python call and a struct update per query (~1-2 µs)
against queries that cost 50-500 µs. No app code is changed.

    daphne -b 127.0.0.1 -p 8000 bench.app:application
"""

from __future__ import annotations

import mmap
import os
import threading

from bench.common import COUNTER_SIZE as SIZE
from bench.common import COUNTER_SLOT as SLOT
from serika_web.asgi import application  # noqa: F401  (the app under test, as deployed)


def _classify(sql: str, params) -> int | None:
    head = sql.lstrip()[:7].upper()
    if head == "SELECT " or head.startswith(("SAVEPOI", "RELEASE", "BEGIN", "COMMIT")):
        return None
    if '"chat_message"' not in sql[:40]:
        if head.startswith(("INSERT", "UPDATE", "DELETE")):
            return 7
        return None
    if head.startswith("INSERT"):
        return 2 if params and "assistant" in params else 1
    if head.startswith("UPDATE"):
        set_clause = sql[sql.find(" SET ") + 5 :][:40]
        if set_clause.startswith('"status"'):
            return 4  # finish_reply (and the stale sweep)
        if set_clause.startswith('"content"'):
            return 3  # flush_reply
        if set_clause.startswith('"updated_at"'):
            return 5  # touch_replies
        return 6
    return 7


def _install(path: str) -> None:
    from django.db.backends.signals import connection_created

    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size < SIZE:
            f.truncate(SIZE)
        counters = mmap.mmap(f.fileno(), SIZE)
    lock = threading.Lock()

    def bump(slot: int) -> None:
        with lock:
            offset = 8 * slot
            SLOT.pack_into(counters, offset, SLOT.unpack_from(counters, offset)[0] + 1)

    def wrapper(execute, sql, params, many, context):
        bump(0)
        slot = _classify(sql, params)
        if slot is not None:
            bump(slot)
        return execute(sql, params, many, context)

    def on_connection(sender, connection, **kwargs):
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(on_connection, weak=False)


if os.environ.get("BENCH_COUNTER_FILE"):
    _install(os.environ["BENCH_COUNTER_FILE"])

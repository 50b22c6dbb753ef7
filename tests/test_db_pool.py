"""PostgreSQL connections are pooled per process: bounded, shared by a burst, and a request that
cannot get one in time is a readable 503. Real daphne processes on the test database."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection

from bench.open_chats import ConnectionCounter, make_members, open_chats
from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="the connection pool is PostgreSQL's (SQLite keeps one connection)",
    ),
]

# The servers' connections carry this name in pg_stat_activity.
APP_NAME = "serika-pool-test"


def conninfo() -> str:
    return live.database_url().replace("postgres://", "postgresql://", 1)


def start_servers(daphne_servers, count: int, **env: str) -> list[live.LiveServer]:
    daphne_servers.env["DATABASE_URL"] = f"{live.database_url()}?application_name={APP_NAME}"
    daphne_servers.env.update(env)
    return [daphne_servers.start() for _ in range(count)]


def test_a_hundred_members_opening_chats_at_once_share_a_pool_of_two_per_process(
    daphne_servers,
):
    servers = start_servers(daphne_servers, 2, DATABASE_POOL_MAX_SIZE="2")
    character_id, keys = make_members(100)
    name = django_settings.SESSION_COOKIE_NAME
    members = [(servers[i % 2].url, name, key) for i, key in enumerate(keys)]

    dbname = connection.settings_dict["NAME"]
    with ConnectionCounter(conninfo(), dbname, application_name=APP_NAME) as counter:
        durations, errors = asyncio.run(open_chats(members, character_id))

    assert errors == []
    assert len(durations) == 100
    # Two processes, two connections each (without the pool: one per concurrent request).
    assert 0 < counter.most <= 4


@contextmanager
def a_page_load_holding_the_only_connection(server: live.LiveServer, cookie: str):
    """Another client locks the session table, and a page load takes the server's only
    connection and waits on the lock with it, until the block ends; yields a dict that then
    holds that page load's response under "r"."""
    first: dict[str, httpx.Response] = {}
    with psycopg.connect(conninfo()) as locker:
        locker.execute("LOCK TABLE django_session IN ACCESS EXCLUSIVE MODE")
        waiting = threading.Thread(
            target=lambda: first.update(
                r=httpx.get(f"{server.url}/", headers={"Cookie": cookie}, timeout=30)
            )
        )
        waiting.start()
        wait_for_a_lock_waiter(connection.settings_dict["NAME"])
        try:
            yield first
        finally:
            locker.rollback()
    waiting.join(30)


def test_a_request_that_cannot_get_a_connection_in_time_gets_a_readable_503(daphne_servers, alice):
    (server,) = start_servers(
        daphne_servers, 1, DATABASE_POOL_MAX_SIZE="1", DATABASE_POOL_TIMEOUT="1"
    )
    cookie = live.session_cookie(alice)
    home = f"{server.url}/"
    assert httpx.get(home, headers={"Cookie": cookie}).status_code == 200

    with a_page_load_holding_the_only_connection(server, cookie) as first:
        busy = httpx.get(home, headers={"Cookie": cookie}, timeout=30)

    assert busy.status_code == 503
    assert "The server is busy" in busy.text
    assert "Try again in a few seconds" in busy.text
    assert "Traceback" not in busy.text
    assert busy.headers["Retry-After"] == "5"
    # The request that held the connection finished once the lock went.
    assert first["r"].status_code == 200
    output = server.output()
    assert "couldn't get a connection" in output  # the pool's own message, logged
    # The pool's error is logged as itself, not as a broken session.
    assert "has no attribute '_session_cache'" not in output


async def test_a_frame_that_cannot_get_a_connection_in_time_is_refused_and_the_socket_stays(
    daphne_servers, upstream, alice, character
):
    (server,) = start_servers(
        daphne_servers, 1, DATABASE_POOL_MAX_SIZE="1", DATABASE_POOL_TIMEOUT="1"
    )
    conversation = await live.in_thread(lambda: actions.start_conversation(alice, character))
    ws = await live.open_socket(server, alice, conversation.pk)
    cookie = await live.in_thread(lambda: live.session_cookie(alice))

    with a_page_load_holding_the_only_connection(server, cookie):
        await ws.send({"type": "message.send", "content": "anyone there?"})
        error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "unavailable"
    assert not await live.in_thread(
        lambda: Message.objects.filter(content="anyone there?").exists()
    )

    # Once the database answers again, the same socket works.
    upstream.enqueue(Reply(tokens=["Here ", "I am."]))
    await ws.send({"type": "message.send", "content": "anyone there now?"})
    done = await ws.receive_until(lambda f: f["type"] == "message.done")
    assert done["message"]["content"] == "Here I am."
    await ws.close()


def wait_for_a_lock_waiter(dbname: str, timeout: float = 15.0) -> None:
    """Until a server connection waits on a lock (the blocked request has its connection)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            (waiting,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = %s AND wait_event_type = 'Lock'",
                (dbname, APP_NAME),
            ).fetchone()
            if waiting:
                return
            time.sleep(0.05)
    pytest.fail("no server request waited on the lock")

"""Replies survive an outage of the database or of Redis, on real daphne processes.

The outages are real: each test starts a PostgreSQL cluster or a redis-server of its own
(`tests/private_services.py`), stops it in the middle of a reply and starts it again. These
tests run in the PostgreSQL + Redis pass only (they need no database of pytest's, but several
processes need Redis to share a conversation, and the embedded pass has the rest covered).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from tests import live
from tests.fake_upstream import Reply
from tests.live import (
    LiveServers,
    LiveSocket,
    in_thread,
    open_socket,
    open_socket_with_cookie,
    start_reply,
)
from tests.private_services import private_postgres, private_redis

static_root = live.static_root
daphne_servers = live.daphne_servers
fixtures = (private_postgres, private_redis)  # registered in this module

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="outage tests run in the PostgreSQL + Redis pass (make test-services)",
    ),
]

TOKENS = [f"word{i:03d} " for i in range(240)]
FULL = "".join(TOKENS)
# How long each outage lasts. The drill used 30 s (database) and 15 s (Redis); these
# defaults keep the suite short and still outlast three heartbeats. OUTAGE_SECONDS overrides both.
DATABASE_DOWN_SECONDS = float(os.environ.get("OUTAGE_SECONDS", 4))
REDIS_DOWN_SECONDS = float(os.environ.get("OUTAGE_SECONDS", 2))


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=live.ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


SEED = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from chat import actions
alice = get_user_model().objects.create_user("alice", password="alice-password")
client = Client()
client.force_login(alice)
name = "sessionid"
print(json.dumps({
    "cookie": f"{name}={client.cookies[name].value}",
    "conversations": [actions.start_conversation(alice, None).pk for _ in range(2)],
}))
"""


def shown_lengths(tab: LiveSocket, reply_id: int) -> list[int]:
    """The length of the reply's text as this tab showed it after each frame."""
    text, lengths = "", []
    for frame in tab.frames:
        if frame["type"] == "message.snapshot" and frame["message"]["id"] == reply_id:
            text = frame["message"]["content"]
        elif frame["type"] == "message.delta" and frame["id"] == reply_id:
            text += frame["text"]
        elif frame["type"] in {"message.done"} and frame["message"]["id"] == reply_id:
            text = frame["message"]["content"]
        else:
            continue
        lengths.append(len(text))
    return lengths


async def test_a_reply_outlives_a_database_outage_with_every_character_shown(
    upstream, static_root, tmp_path, private_postgres, request
):
    env = live.server_env(
        DATABASE_URL=private_postgres.url(),
        SERIKA_BASE_URL=upstream.base_url,
        STATIC_ROOT=str(static_root),
        DATA_DIR=str(tmp_path / "data"),
        MEDIA_ROOT=str(tmp_path / "media"),
        # A database call waits this long for a pooled connection before it fails; the default
        # (30 s) would outlast this test's outage before the refused send is answered.
        DATABASE_POOL_TIMEOUT="3",
    )
    manage(env, "migrate", "--noinput", "-v", "0")
    seed = json.loads(manage(env, "shell", stdin=SEED).strip().splitlines()[-1])
    conversation, other = seed["conversations"]
    servers = LiveServers(env, tmp_path)
    try:
        # Two processes: the sweep of the one that is not generating must not take the reply
        # for dead once the database is back.
        server_a, server_b = servers.start(), servers.start()
        upstream.enqueue(Reply(tokens=TOKENS, gap=0.03))  # about 7 s
        tab_a = await open_socket_with_cookie(server_a, seed["cookie"], conversation)
        tab_b = await open_socket_with_cookie(server_b, seed["cookie"], conversation)
        idle_tab = await open_socket_with_cookie(server_a, seed["cookie"], other)
        await tab_b.send({"type": "sync", "after": 0})
        reply_id = await start_reply(tab_a)
        await tab_a.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 20)

        await asyncio.to_thread(private_postgres.stop)
        down_at = time.monotonic()
        # A send while the database is away is refused with a clear error, storing nothing.
        await idle_tab.send({"type": "message.send", "content": "are you there?"})
        refused = await idle_tab.receive_until(lambda f: f["type"] == "error", timeout=20)
        assert refused["code"] == "unavailable"
        # Longer than three heartbeats (1.5 s here): long enough for a sweep to strike.
        await asyncio.sleep(max(0.0, DATABASE_DOWN_SECONDS - (time.monotonic() - down_at)))
        await asyncio.to_thread(private_postgres.start)

        done_a = await tab_a.receive_until(lambda f: f["type"] == "message.done", timeout=60)
        done_b = await tab_b.receive_until(
            lambda f: f["type"] == "message.done" and f["message"]["status"] != "interrupted",
            timeout=60,
        )
        assert done_a["message"]["status"] == "complete"
        assert done_a["message"]["content"] == FULL
        assert done_b["message"]["content"] == FULL
        for tab in (tab_a, tab_b):
            lengths = shown_lengths(tab, reply_id)
            assert lengths == sorted(lengths), "a tab had its text replaced by a shorter one"
            assert not [
                f
                for f in tab.frames
                if f["type"] == "message.done" and f["message"]["status"] == "interrupted"
            ], "another process's sweep took the live reply for dead"
        stored = manage(
            env,
            "shell",
            "-c",
            "import json; from chat.models import Message; "
            f"m = Message.objects.get(pk={reply_id}); print(json.dumps([m.status, m.content]))"
            "; print(Message.objects.filter(content='are you there?').count())",
        ).splitlines()
        assert json.loads(stored[-2]) == ["complete", FULL]
        assert stored[-1] == "0"
        # The outage is logged once as a warning, with its end; no traceback.
        output = server_a.output()
        assert output.count("The database is unreachable") == 1, output
        assert "The database is reachable again" in output
        assert "Task exception was never retrieved" not in output
        for tab in (tab_a, tab_b, idle_tab):
            await tab.close()
    except BaseException:
        servers.stop_all()
        live._report_failure(request, servers.servers)
        raise
    finally:
        servers.stop_all()


@pytest.mark.django_db(transaction=True)
async def test_a_reply_outlives_a_redis_outage_and_every_tab_shows_it_when_redis_is_back(
    daphne_servers, upstream, private_redis, alice
):
    from chat import actions

    conversation = await in_thread(lambda: actions.start_conversation(alice, None))
    daphne_servers.env["REDIS_URL"] = private_redis.url
    server_a, server_b = daphne_servers.start(), daphne_servers.start()
    upstream.enqueue(Reply(tokens=TOKENS, gap=0.02))  # about 5 s
    tab_a = await open_socket(server_a, alice, conversation.pk)
    tab_b = await open_socket(server_b, alice, conversation.pk)
    await tab_b.send({"type": "sync", "after": 0})
    await tab_b.receive_until(lambda f: f["type"] == "conversation.sync")
    reply_id = await start_reply(tab_a)
    await tab_b.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 5)

    await asyncio.to_thread(private_redis.stop)
    down_at = time.monotonic()
    # The tab on the generating process keeps streaming: its events do not need Redis.
    done_a = await tab_a.receive_until(lambda f: f["type"] == "message.done", timeout=30)
    assert done_a["message"]["status"] == "complete"
    assert done_a["message"]["content"] == FULL
    assert tab_a.streamed(reply_id)[0] == FULL
    # A send during the outage either works or is refused cleanly: never a streaming row
    # with no generation behind it.
    upstream.enqueue(Reply(tokens=["short ", "one"], gap=0.01))
    await tab_a.send({"type": "message.send", "content": "and another"})
    answer = await tab_a.receive_until(lambda f: f["type"] in {"message.done", "error"})
    if answer["type"] == "error":
        assert answer["code"] == "unavailable"
    else:
        assert answer["message"]["status"] == "complete"

    await asyncio.sleep(max(0.0, REDIS_DOWN_SECONDS - (time.monotonic() - down_at)))
    await asyncio.to_thread(private_redis.start)
    back_at = time.monotonic()
    done_b = await tab_b.receive_until(
        lambda f: f["type"] == "message.done" and f["message"]["id"] == reply_id, timeout=10
    )
    assert time.monotonic() - back_at <= 10
    assert done_b["message"]["status"] == "complete"
    assert done_b["message"]["content"] == FULL
    lengths = shown_lengths(tab_b, reply_id)
    assert lengths == sorted(lengths)
    from chat.models import Message

    left = await in_thread(lambda: list(Message.objects.filter(status="streaming")))
    assert left == [], "a streaming row was left with no generation behind it"
    await tab_a.close()
    await tab_b.close()

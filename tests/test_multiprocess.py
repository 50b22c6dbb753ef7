"""Replies on real daphne processes: across processes, across a crash, past a closed socket."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import in_thread, open_socket, start_reply

# The live-server fixtures, registered in this module.
static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server

pytestmark = [pytest.mark.multiprocess, pytest.mark.django_db(transaction=True)]

# A reply slow enough to join, crash or leave mid-stream: 40 chunks, 0.1 s apart (~4 s).
SLOW_TOKENS = [f"w{i:02d} " for i in range(40)]
SLOW_TEXT = "".join(SLOW_TOKENS)


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def poll_reply(reply_id: int, ready, timeout: float = 15.0) -> Message:
    """The reply once `ready(reply)` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await in_thread(lambda: Message.objects.get(pk=reply_id))
        if ready(reply):
            return reply
        if time.monotonic() >= deadline:
            pytest.fail(
                f"reply {reply_id} still {reply.status!r} with {reply.content!r} "
                f"after {timeout:g} s"
            )
        await asyncio.sleep(0.1)


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs REDIS_URL: the in-memory channel layer cannot join two processes",
)
async def test_a_second_tab_on_another_process_joins_a_streaming_reply_without_gap_or_duplicate(
    daphne_servers, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=SLOW_TOKENS, gap=0.1))
    server_a = daphne_servers.start()
    server_b = daphne_servers.start()
    last_before = await in_thread(lambda: conversation.messages.last().pk)

    tab_a = await open_socket(server_a, alice, conversation.pk)
    reply_id = await start_reply(tab_a)
    # Mid-stream on A before the second tab opens on B.
    await tab_a.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 5)

    tab_b = await open_socket(server_b, alice, conversation.pk)
    await tab_b.send({"type": "sync", "after": last_before})
    sync = await tab_b.receive_until(lambda f: f["type"] == "conversation.sync")
    assert [(m["role"], m["status"]) for m in sync["messages"]] == [
        ("user", "complete"),
        ("assistant", "streaming"),
    ]
    snapshot = await tab_b.receive_until(lambda f: f["type"] == "message.snapshot")
    done = await tab_b.receive_until(lambda f: f["type"] == "message.done", timeout=20)

    # The snapshot (from A's generation, through Redis) held text, and live deltas followed.
    assert snapshot["message"]["id"] == reply_id
    assert snapshot["message"]["content"], "the snapshot came before any text"
    assert SLOW_TEXT.startswith(snapshot["message"]["content"])
    live_deltas = [
        f
        for f in tab_b.frames[tab_b.frames.index(snapshot) :]
        if f["type"] == "message.delta" and f["id"] == reply_id
    ]
    assert live_deltas, "no live delta reached the second tab after its snapshot"
    text, seq = tab_b.streamed(reply_id)  # asserts consecutive seq numbers
    assert done["message"]["status"] == "complete"
    assert done["message"]["content"] == SLOW_TEXT
    assert text == SLOW_TEXT
    assert seq == done["seq"]
    # The first tab saw the same text.
    await tab_a.receive_until(lambda f: f["type"] == "message.done")
    assert tab_a.streamed(reply_id)[0] == SLOW_TEXT
    await tab_a.close()
    await tab_b.close()


async def test_a_reply_whose_server_was_killed_is_marked_interrupted_with_its_flushed_text(
    daphne_servers, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=SLOW_TOKENS, gap=0.1))
    server_a = daphne_servers.start()
    tab = await open_socket(server_a, alice, conversation.pk)
    reply_id = await start_reply(tab)
    await tab.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 5)
    await poll_reply(reply_id, lambda r: r.content, timeout=5)  # some text was flushed

    server_a.kill()
    await upstream.await_client_disconnects(1)
    flushed = (await in_thread(lambda: Message.objects.get(pk=reply_id))).content
    assert flushed
    assert SLOW_TEXT.startswith(flushed)
    assert flushed != SLOW_TEXT

    # A new process on the same database sweeps the dead one's reply once someone connects.
    server_b = daphne_servers.start()
    tab = await open_socket(server_b, alice, conversation.pk)
    reply = await poll_reply(reply_id, lambda r: r.status != Message.Status.STREAMING)
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.error_code == "interrupted"
    assert reply.content == flushed
    assert reply.content_html  # rendered for the page
    assert reply.generator_channel == ""

    await tab.send({"type": "sync", "after": 0})
    sync = await tab.receive_until(lambda f: f["type"] == "conversation.sync")
    shown = next(m for m in sync["messages"] if m["id"] == reply_id)
    assert (shown["status"], shown["content"]) == ("interrupted", flushed)
    await tab.close()


async def test_a_reply_keeps_streaming_to_the_database_after_its_socket_closes(
    daphne_server, upstream, conversation, alice
):
    tokens = [f"t{i:02d} " for i in range(20)]
    upstream.enqueue(Reply(tokens=tokens, gap=0.05))
    tab = await open_socket(daphne_server, alice, conversation.pk)
    reply_id = await start_reply(tab)
    await tab.receive_until(lambda f: f["type"] == "message.delta")
    await tab.close()

    reply = await poll_reply(reply_id, lambda r: r.status != Message.Status.STREAMING)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "".join(tokens)
    assert reply.finish_reason == "stop"
    assert upstream.client_disconnects == 0  # the upstream stream was read to its end
    assert daphne_server.alive


async def test_a_quiet_reply_can_still_be_stopped_after_the_channel_layer_idled_past_its_poll(
    daphne_server, upstream, conversation, alice
):
    # channels_redis blocks up to 5 s per Redis poll; nothing may break when one comes back
    # empty (no frame, no delta, no control message for longer than that).
    upstream.enqueue(Reply(tokens=["late"], first_delay=30.0))
    tab = await open_socket(daphne_server, alice, conversation.pk)
    reply_id = await start_reply(tab)
    await asyncio.sleep(6.5)
    await tab.send({"type": "generation.stop"})
    done = await tab.receive_until(lambda f: f["type"] == "message.done", timeout=5)

    assert done["message"]["id"] == reply_id
    assert done["message"]["status"] == "stopped"
    assert "Exception inside application" not in daphne_server.output()
    assert "Task exception was never retrieved" not in daphne_server.output()
    await tab.close()


async def _count_published(group_channel: str, during):
    """How many messages Redis carried on `group_channel` while `during()` ran."""
    from redis.asyncio import Redis

    redis = Redis.from_url(os.environ["REDIS_URL"])
    pubsub = redis.pubsub()
    await pubsub.subscribe(group_channel)
    count = 0

    async def listen() -> None:
        nonlocal count
        async for message in pubsub.listen():
            if message["type"] == "message":
                count += 1

    listener = asyncio.ensure_future(listen())
    try:
        await during()
        await asyncio.sleep(0.3)
    finally:
        listener.cancel()
        await pubsub.aclose()
        await redis.aclose()
    return count


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (two processes)")
async def test_a_conversation_open_in_one_process_costs_redis_nothing_until_another_follows(
    daphne_servers, upstream, conversation, alice
):
    from django.conf import settings

    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    group_channel = f"{prefix}__group__conversation.{conversation.pk}"
    server_a = daphne_servers.start()
    server_b = daphne_servers.start()
    tab_a = await open_socket(server_a, alice, conversation.pk)
    # Answered once the socket's set-up (which announces it on the group) has finished.
    await tab_a.send({"type": "sync", "after": 0})
    await tab_a.receive_until(lambda f: f["type"] == "conversation.sync")

    async def one_reply() -> None:
        upstream.enqueue(Reply(tokens=SLOW_TOKENS[:10], gap=0.02))
        await start_reply(tab_a)
        await tab_a.receive_until(lambda f: f["type"] == "message.done")

    alone = await _count_published(group_channel, one_reply)
    assert alone == 0, "events of a conversation open in one process went through Redis"

    tab_b = await open_socket(server_b, alice, conversation.pk)
    await tab_b.send({"type": "sync", "after": 0})
    await tab_b.receive_until(lambda f: f["type"] == "conversation.sync")
    followed = await _count_published(group_channel, one_reply)
    # two created, the deltas and done: the other process's tab hears all of it.
    assert followed >= 4
    done_b = await tab_b.receive_until(lambda f: f["type"] == "message.done")
    assert done_b["message"]["content"] == "".join(SLOW_TOKENS[:10])
    await tab_a.close()
    await tab_b.close()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (three processes)")
async def test_three_processes_follow_stop_and_reload_one_reply(
    daphne_servers, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["tick "], repeat=400, gap=0.02))  # 8 s unless stopped
    server_a, server_b, server_c = (daphne_servers.start() for _ in range(3))
    tab_a = await open_socket(server_a, alice, conversation.pk)
    tab_b = await open_socket(server_b, alice, conversation.pk)  # open before the reply
    reply_id = await start_reply(tab_a)
    await tab_b.receive_until(lambda f: f["type"] == "message.delta" and f["id"] == reply_id)

    # A tab on a third process joins mid-reply, then stops it.
    tab_c = await open_socket(server_c, alice, conversation.pk)
    await tab_c.send({"type": "sync", "after": reply_id - 1})
    await tab_c.receive_until(lambda f: f["type"] == "message.snapshot")
    await tab_c.receive_until(lambda f: f["type"] == "message.delta")
    await tab_c.send({"type": "generation.stop"})
    finals = [
        await tab.receive_until(lambda f: f["type"] == "message.done", timeout=10)
        for tab in (tab_a, tab_b, tab_c)
    ]
    assert {f["message"]["status"] for f in finals} == {"stopped"}
    text = finals[0]["message"]["content"]
    assert text.startswith("tick tick") and len(text) < len("tick ") * 400
    for tab in (tab_a, tab_b, tab_c):
        assert tab.streamed(reply_id)[0] == text  # consecutive seq, no gap or duplicate
    # A reload on the second process shows the stored reply.
    await tab_b.close()
    reloaded = await open_socket(server_b, alice, conversation.pk)
    await reloaded.send({"type": "sync", "after": reply_id - 1})
    sync = await reloaded.receive_until(lambda f: f["type"] == "conversation.sync")
    assert [(m["status"], m["content"]) for m in sync["messages"]] == [("stopped", text)]
    for tab in (tab_a, tab_c, reloaded):
        await tab.close()


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs REDIS_URL: the in-memory channel layer cannot join two processes",
)
async def test_tree_changes_on_one_process_reach_a_tab_on_the_other(
    daphne_servers, upstream, conversation, alice
):
    server_a = daphne_servers.start()
    server_b = daphne_servers.start()
    tab_a = await open_socket(server_a, alice, conversation.pk)
    tab_b = await open_socket(server_b, alice, conversation.pk)
    for tab in (tab_a, tab_b):  # both joined: presence says the other process follows
        await tab.send({"type": "sync", "after": 0})
        await tab.receive_until(lambda f: f["type"] == "conversation.sync")

    upstream.enqueue(Reply(tokens=["First"]))
    first_id = await start_reply(tab_a, "Question")
    await tab_b.receive_until(lambda f: f["type"] == "message.done")

    # Regenerated on A: B sees the new alternative stream in.
    upstream.enqueue(Reply(tokens=SLOW_TOKENS[:10], gap=0.05))
    await tab_a.send({"type": "message.regenerate", "id": first_id})
    created = await tab_b.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    second_id = created["message"]["id"]
    assert created["message"]["siblings"] == [first_id, second_id]
    done = await tab_b.receive_until(lambda f: f["type"] == "message.done", timeout=20)
    assert done["message"]["content"] == "".join(SLOW_TOKENS[:10])
    assert tab_b.streamed(second_id)[0] == done["message"]["content"]

    # The first alternative chosen on B: A shows it.
    await tab_b.send({"type": "branch.switch", "id": first_id})
    changed = await tab_a.receive_until(lambda f: f["type"] == "path.changed")
    assert [m["id"] for m in changed["messages"]] == [first_id]

    # Continued on B: A follows the same reply streaming on.
    upstream.enqueue(Reply(tokens=[" and more"]))
    await tab_b.send({"type": "message.continue", "id": first_id})
    continued = await tab_a.receive_until(lambda f: f["type"] == "message.continued")
    assert continued["message"]["content"] == "First"
    done = await tab_a.receive_until(lambda f: f["type"] == "message.done")
    assert done["message"]["content"] == "First and more"

    # Corrected in place on A, then deleted on B: each seen by the other.
    await tab_a.send({"type": "message.edit", "id": first_id, "content": "First, corrected"})
    updated = await tab_b.receive_until(lambda f: f["type"] == "message.updated")
    assert updated["message"]["content"] == "First, corrected"
    await tab_b.send({"type": "message.delete", "id": first_id})
    changed = await tab_a.receive_until(lambda f: f["type"] == "path.changed")
    assert [m["id"] for m in changed["messages"]] == [second_id]
    await tab_a.close()
    await tab_b.close()

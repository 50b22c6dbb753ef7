"""Replies are never lost: sockets come and go, generations belong to the server."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chat import actions, generation
from chat.models import Message
from tests.conftest import store_chain
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = [f"t{i} " for i in range(40)]
FULL = "".join(TOKENS)


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def test_closing_the_tab_mid_reply_does_not_stop_it(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(tokens=TOKENS, gap=0.01))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    created = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    await ws.receive_until(lambda f: f["type"] == "message.delta")
    await ws.close()

    reply_id = created["message"]["id"]
    async with asyncio.timeout(10):
        while (await Message.objects.aget(pk=reply_id)).status == "streaming":
            await asyncio.sleep(0.05)
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == "complete"
    assert reply.content == FULL


async def test_a_reconnecting_tab_gets_the_text_so_far_then_the_rest_exactly_once(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=TOKENS, gap=0.02))
    first = await connect(alice, conversation.pk)
    await first.send({"type": "message.send", "content": "go"})
    created = await first.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    reply_id = created["message"]["id"]
    for _ in range(5):
        await first.receive_until(lambda f: f["type"] == "message.delta")
    await first.close()
    await asyncio.sleep(0.1)

    second = await connect(alice, conversation.pk)
    await second.send({"type": "sync", "after": reply_id - 1})
    sync = await second.receive()
    assert sync["type"] == "conversation.sync"
    assert [m["id"] for m in sync["messages"]] == [reply_id]
    snapshot = await second.receive_until(lambda f: f["type"] == "message.snapshot")
    assert snapshot["message"]["seq"] >= 5
    assert FULL.startswith(snapshot["message"]["content"])
    assert len(snapshot["message"]["content"]) >= len("".join(TOKENS[:5]))
    done = await second.done()
    assert done["content"] == FULL
    # streamed_text asserts consecutive sequence numbers: no gap, no duplicate.
    assert second.streamed_text(reply_id) == FULL


async def test_a_second_tab_follows_the_same_reply_live(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(tokens=TOKENS, gap=0.01))
    one = await connect(alice, conversation.pk)
    two = await connect(alice, conversation.pk)
    await one.send({"type": "message.send", "content": "go"})
    done_one, done_two = await asyncio.gather(one.done(), two.done())
    assert done_one["content"] == done_two["content"] == FULL
    assert one.streamed_text(done_one["id"]) == two.streamed_text(done_two["id"]) == FULL


async def test_stop_works_from_another_tab(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(tokens=["x "], repeat=500, gap=0.02))
    one = await connect(alice, conversation.pk)
    await one.send({"type": "message.send", "content": "go"})
    await one.receive_until(lambda f: f["type"] == "message.delta")
    two = await connect(alice, conversation.pk)
    await two.send({"type": "generation.stop"})
    done = await one.done(timeout=2)
    assert done["status"] == "stopped"


async def test_partial_text_is_flushed_about_once_an_interval_not_per_token(
    connect, upstream, conversation, alice, settings, monkeypatch
):
    settings.CHAT_FLUSH_INTERVAL = 0.2
    flushes: list[str] = []
    real_flush = actions.flush_replies

    async def counting_flush(texts):
        flushes.extend(texts.values())
        await real_flush(texts)

    monkeypatch.setattr(actions, "flush_replies", counting_flush)
    upstream.enqueue(Reply(tokens=["w "], repeat=100, gap=0.01))  # about one second
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    created = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    await asyncio.sleep(0.5)
    midway = await Message.objects.aget(pk=created["message"]["id"])
    assert midway.status == "streaming"
    assert midway.content.startswith("w w")
    done = await ws.done()
    assert done["content"] == "w " * 100
    assert 2 <= len(flushes) <= 10


async def test_replies_left_streaming_by_a_dead_process_are_marked_interrupted(
    connect, conversation, alice, settings
):
    [reply] = await sync_to_async(store_chain)(
        conversation,
        {
            "role": "assistant",
            "status": "streaming",
            "content": "half a tho",
            "generator_channel": "generation.dead!abc",
        },
    )
    stale = timezone.now() - timedelta(seconds=settings.CHAT_HEARTBEAT_INTERVAL * 10)
    await Message.objects.filter(pk=reply.pk).aupdate(updated_at=stale)

    ws = await connect(alice, conversation.pk)  # the first connection starts the sweep
    async with asyncio.timeout(5):
        while (await Message.objects.aget(pk=reply.pk)).status == "streaming":
            await asyncio.sleep(0.05)
    stored = await Message.objects.aget(pk=reply.pk)
    assert stored.status == "interrupted"
    assert stored.content == "half a tho"
    assert stored.generator_channel == ""
    await ws.send({"type": "sync", "after": reply.pk - 1})
    [shown] = (await ws.receive_until(lambda f: f["type"] == "conversation.sync"))["messages"]
    assert shown["status"] == "interrupted"
    assert "server stopped" in shown["error"]


async def test_the_sweep_leaves_live_replies_of_this_process_alone(
    connect, upstream, conversation, alice, settings
):
    upstream.enqueue(Reply(tokens=["slow "], repeat=30, gap=0.05))  # 1.5 s, three heartbeats
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    done = await ws.done(timeout=10)
    assert done["status"] == "complete"
    assert not generation._live


async def test_stop_sent_through_the_layer_by_another_process_reaches_the_generation(
    connect, upstream, conversation, alice
):
    from channels.layers import get_channel_layer

    upstream.enqueue(Reply(tokens=["x "], repeat=500, gap=0.02))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    await ws.receive_until(lambda f: f["type"] == "message.delta")
    reply = await Message.objects.aget(conversation=conversation, status="streaming")
    # What request_stop sends when the reply lives in another process.
    await get_channel_layer().send(
        reply.generator_channel, {"type": "generation.stop", "reply_id": reply.pk}
    )
    done = await ws.done(timeout=5)
    assert done["status"] == "stopped"


async def test_a_stop_whose_cancellation_a_library_loses_still_stops_the_reply(
    connect, upstream, conversation, alice, monkeypatch
):
    import json

    from channels.generic.websocket import AsyncWebsocketConsumer

    # Python 3.11's asyncio.wait_for, which redis-py wraps around every command, returns instead
    # of raising when a cancellation lands in the loop iteration where its inner call completed.
    # The websocket send below loses the cancellation the same way, every time: Stop is
    # requested while the third delta is being sent (this process's sockets get deltas from
    # inside the stream task).
    send = AsyncWebsocketConsumer.send

    async def send_losing_a_cancellation(self, text_data=None, bytes_data=None, close=False):
        await send(self, text_data, bytes_data, close)
        frame = json.loads(text_data) if text_data else {}
        if frame.get("type") == "message.delta" and frame["seq"] == 3:
            reply = await Message.objects.aget(pk=frame["id"])
            await generation.request_stop(reply.generator_channel, reply.pk)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)

    monkeypatch.setattr(AsyncWebsocketConsumer, "send", send_losing_a_cancellation)
    upstream.enqueue(Reply(tokens=["x "], repeat=500, gap=0.01))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    done = await ws.done(timeout=5)
    assert done["status"] == "stopped"
    assert done["content"].startswith("x x x")
    assert len(done["content"]) < len("x ") * 100
    await upstream.await_client_disconnects(1, timeout=2)
    reply = await Message.objects.aget(pk=done["id"])
    assert (reply.status, reply.content) == ("stopped", done["content"])


async def test_flushes_and_heartbeats_do_not_wait_for_the_shared_database_thread(
    connect, upstream, conversation, alice
):
    import time

    from channels.db import database_sync_to_async

    from tests.live import in_thread

    upstream.enqueue(Reply(tokens=["x "], repeat=150, gap=0.02))  # 3 s
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    created = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    await ws.receive_until(lambda f: f["type"] == "message.delta")

    def saved() -> int:
        return len(Message.objects.get(pk=created["message"]["id"]).content)

    # Another member's slow work holds Channels' one shared database thread for 1.5 s.
    busy = asyncio.ensure_future(database_sync_to_async(time.sleep)(1.5))
    await asyncio.sleep(0.1)
    before = await in_thread(saved)
    await asyncio.sleep(1.0)
    during = await in_thread(saved)
    await busy
    assert during > before, "the reply's text was not saved while the shared thread was busy"
    assert (await ws.done())["status"] == "complete"

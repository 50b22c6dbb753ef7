"""One member cannot take every generation: at most CHAT_MAX_CONCURRENT_PER_USER at once."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import actions
from chat.models import Message
from tests.conftest import store_chain
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_member_with_three_replies_streaming_is_refused_a_fourth(
    connect, upstream, alice, bob, settings
):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 3
    slow = Reply(tokens=["x "], repeat=200, gap=0.02)
    upstream.enqueue(slow, slow, slow, slow)
    chats = [await sync_to_async(actions.start_conversation)(alice, None) for _ in range(4)]
    sockets = [await connect(alice, chat.pk) for chat in chats]
    for ws in sockets[:3]:
        await ws.send({"type": "message.send", "content": "go"})
        await ws.receive_until(lambda f: f["type"] == "message.delta")

    await sockets[3].send({"type": "message.send", "content": "one more"})
    error = await sockets[3].receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "too_many_replies"
    assert "3 replies" in error["message"]
    assert not await Message.objects.filter(content="one more").aexists()
    # Retry counts too: a fifth chat whose last reply failed cannot be retried now.
    failed = await sync_to_async(actions.start_conversation)(alice, None)
    await sync_to_async(store_chain)(
        failed,
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "status": "failed", "error": "boom"},
    )
    retry_ws = await connect(alice, failed.pk)
    await retry_ws.send({"type": "message.retry"})
    error = await retry_ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "too_many_replies"
    assert await Message.objects.filter(conversation=failed).acount() == 2

    # Bob is not held back by Alice's replies.
    bobs = await sync_to_async(actions.start_conversation)(bob, None)
    bob_ws = await connect(bob, bobs.pk)
    await bob_ws.send({"type": "message.send", "content": "hello"})
    await bob_ws.receive_until(lambda f: f["type"] == "message.delta")

    # Once one of Alice's replies ends, she may send again.
    await sockets[0].send({"type": "generation.stop"})
    await sockets[0].done()
    upstream.enqueue(Reply(tokens=["ok"]))
    await sockets[3].send({"type": "message.send", "content": "one more"})
    created = await sockets[3].receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "user"
    )
    assert created["message"]["content"] == "one more"

"""Bad frames get a clear error frame and change nothing."""

from __future__ import annotations

import json

import pytest

from chat import actions
from chat.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def error_for(ws, frame) -> dict:
    await ws.send(frame)
    reply = await ws.receive()
    assert reply["type"] == "error"
    return reply


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('{"content": "no type"}', "bad_frame"),
        ('{"type": "launch.missiles"}', "unknown_type"),
        ('{"type": "message.send", "content": "   "}', "empty_message"),
        ('{"type": "message.send", "content": 42}', "empty_message"),
        ('{"type": "sync", "after": "zero"}', "bad_frame"),
        ('{"type": "generation.stop"}', "not_streaming"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_stores_nothing(
    connect, upstream, alice, conversation, frame, code
):
    before = await Message.objects.acount()
    ws = await connect(alice, conversation.pk)
    reply = await error_for(ws, frame)
    assert reply["code"] == code
    assert reply["message"]
    assert await Message.objects.acount() == before
    assert upstream.requests == []


async def test_an_over_long_message_is_refused(connect, upstream, alice, conversation, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    ws = await connect(alice, conversation.pk)
    reply = await error_for(ws, {"type": "message.send", "content": "x" * 101})
    assert reply["code"] == "message_too_long"
    assert not await Message.objects.filter(role="user").aexists()


async def test_an_oversized_frame_is_refused_before_parsing(
    connect, upstream, alice, conversation, settings
):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    ws = await connect(alice, conversation.pk)
    reply = await error_for(ws, json.dumps({"type": "message.send", "content": "y" * 2000}))
    assert reply["code"] == "frame_too_large"
    assert not await Message.objects.filter(role="user").aexists()


async def test_binary_frames_are_refused(connect, alice, conversation):
    ws = await connect(alice, conversation.pk)
    await ws.communicator.send_to(bytes_data=b"\x00\x01")
    reply = await ws.receive()
    assert reply == {"type": "error", "code": "bad_frame", "message": "Frames must be JSON text."}


async def test_the_socket_keeps_working_after_a_bad_frame(connect, upstream, alice, conversation):
    ws = await connect(alice, conversation.pk)
    await error_for(ws, "{oops")
    await ws.send({"type": "message.send", "content": "now properly"})
    done = await ws.done()
    assert done["status"] == "complete"


async def test_a_deeply_nested_frame_gets_an_error_and_the_socket_stays_open(
    connect, upstream, alice, conversation, caplog
):
    ws = await connect(alice, conversation.pk)
    nested = "[" * 100_000 + "]" * 100_000  # 200 kB, deeper than the JSON parser's stack
    error = await error_for(ws, nested)
    assert error["code"] == "bad_json"
    assert "Traceback" not in caplog.text
    await ws.send({"type": "message.send", "content": "still here"})
    done = await ws.done()
    assert done["status"] == "complete"

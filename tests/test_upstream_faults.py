"""Every upstream fault ends in a stored, visible state with a readable reason — never a spinner."""

from __future__ import annotations

import logging

import pytest

from chat import actions
from chat.models import Message
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def reply_to(connect, user, conversation, reply: Reply | None = None) -> dict:
    ws = await connect(user, conversation.pk)
    await ws.send({"type": "message.send", "content": "hello"})
    done = await ws.done(timeout=15)
    stored = await Message.objects.aget(pk=done["id"])
    assert stored.status == done["status"]
    assert stored.content == done["content"]
    assert stored.error == done["error"]
    return done


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Reply(status=401), "auth", "rejected the API key"),
        (Reply(status=402), "payment", "out of credits"),
        (Reply(status=500), "server_error", "HTTP 500"),
        (Reply(status=503), "server_error", "HTTP 503"),
        (Reply(status=400, error_message="bad model"), "bad_request", "bad model"),
    ],
)
async def test_an_http_error_fails_the_reply_with_a_readable_reason(
    connect, upstream, conversation, alice, reply, code, words
):
    upstream.enqueue(reply)
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == code
    assert words in done["error"]


async def test_rate_limiting_shows_when_to_try_again(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(status=429, headers={"Retry-After": "7"}))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == "rate_limited"
    assert "Try again in 7 s" in done["error"]


async def test_a_wrong_api_key_never_appears_in_the_error(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_API_KEY = "sk-secret-wrong-key"
    upstream.enqueue(Reply(status=401, error_message="Incorrect API key: sk-secret-wrong-key"))
    done = await reply_to(connect, alice, conversation)
    assert done["error_code"] == "auth"
    assert "sk-secret" not in str(done)


async def test_an_error_echoing_the_key_is_redacted(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(status=400, error_message="key test-key is not allowed for this"))
    done = await reply_to(connect, alice, conversation)
    assert "test-key" not in done["error"]
    assert "[redacted]" in done["error"]


async def test_an_error_inside_the_stream_keeps_the_text_that_arrived(
    connect, upstream, conversation, alice
):
    upstream.enqueue(
        Reply(tokens=["one ", "two ", "three"], error_after=2, error_message="overloaded")
    )
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == "stream_error"
    assert "overloaded" in done["error"]
    assert done["content"] == "one two "


async def test_a_connection_reset_mid_stream_keeps_the_text_that_arrived(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["one ", "two ", "three"], reset_after=2))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == "connection"
    assert done["content"] == "one two "


async def test_a_stalled_stream_is_abandoned_after_the_idle_timeout(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_STREAM_IDLE_TIMEOUT = 0.5
    upstream.enqueue(Reply(tokens=["one ", "two"], stall_after=1))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == "stalled"
    assert done["content"] == "one "
    await upstream.await_client_disconnects(1)


async def test_keep_alive_comments_longer_than_the_idle_timeout_are_not_a_stall(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_STREAM_IDLE_TIMEOUT = 0.5
    upstream.enqueue(Reply(tokens=["finally"], keepalive_comments=6, keepalive_interval=0.2))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "complete"
    assert done["content"] == "finally"


async def test_a_stream_that_ends_without_finish_reason_is_truncated_not_complete(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["one ", "two ", "three"], end_after=2))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "truncated"
    assert done["content"] == "one two "
    assert "may be incomplete" in done["error"]


async def test_a_malformed_line_is_logged_and_skipped(
    connect, upstream, conversation, alice, caplog
):
    upstream.enqueue(Reply(tokens=["one ", "two ", "three"], malformed_after=1))
    with caplog.at_level(logging.WARNING, logger="chat.upstream"):
        done = await reply_to(connect, alice, conversation)
    assert done["status"] == "complete"
    assert done["content"] == "one two three"
    assert "malformed" in caplog.text


async def test_an_unreachable_upstream_fails_the_reply(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_BASE_URL = "http://127.0.0.1:9/api/openai/v1"
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert done["error_code"] == "connection"


async def test_without_an_api_key_the_reply_fails_saying_how_to_set_one(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_API_KEY = ""
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "failed"
    assert "SERIKA_API_KEY" in done["error"]
    assert upstream.requests == []


async def test_a_runaway_stream_is_stopped_at_the_size_cap(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_STREAM_MAX_CHARS = 50
    upstream.enqueue(Reply(tokens=["0123456789"], repeat=100))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "truncated"
    assert done["error_code"] == "size_limit"
    assert 50 <= len(done["content"]) <= 60


async def test_a_runaway_stream_is_stopped_at_the_time_cap(
    connect, upstream, conversation, alice, settings
):
    settings.SERIKA_STREAM_MAX_SECONDS = 0.5
    upstream.enqueue(Reply(tokens=["tick "], repeat=100, gap=0.05))
    done = await reply_to(connect, alice, conversation)
    assert done["status"] == "truncated"
    assert done["error_code"] == "time_limit"
    assert done["content"].startswith("tick tick")

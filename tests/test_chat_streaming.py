"""Streaming a reply over the websocket, end to end through the fake upstream."""

from __future__ import annotations

import re

import pytest

from chat import actions
from chat.models import Message
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def test_a_reply_streams_to_the_browser_and_is_stored_complete(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["Hel", "lo ", "Alice", "!"]))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "sync", "after": 0})
    sync = await ws.receive()
    assert sync["type"] == "conversation.sync"
    assert [m["content"] for m in sync["messages"]] == ["Hello alice, I am Serika!"]

    await ws.send({"type": "message.send", "content": "Hi there"})
    done = await ws.done()

    assert done["status"] == "complete"
    assert done["content"] == "Hello Alice!"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] is not None
    assert ws.streamed_text(done["id"]) == "Hello Alice!"
    reply = await Message.objects.aget(pk=done["id"])
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Hello Alice!"
    assert reply.completion_tokens == done["usage"]["completion_tokens"]


async def test_the_request_carries_persona_history_settings_and_character_id(
    connect, upstream, conversation, alice, character
):
    character.serika_character_id = "char_123"
    await character.asave()
    conversation.temperature = 0.7
    conversation.max_tokens = 321
    await conversation.asave()
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "What is up?"})
    await ws.done()

    [request] = upstream.requests
    body = request.json
    assert request.headers["authorization"] == "Bearer test-key"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["character_id"] == "char_123"
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 321
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["messages"][0]["role"] == "system"
    assert "You are Serika, talking to alice." in body["messages"][0]["content"]
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Hello alice, I am Serika!"},
        {"role": "user", "content": "What is up?"},
    ]


async def test_the_user_message_is_stored_before_the_upstream_is_called(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["slow"], first_delay=1.0))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "Remember me"})
    await upstream.await_requests(1)
    assert await Message.objects.filter(role="user", content="Remember me").aexists()
    await ws.done()


async def test_a_split_multibyte_reply_arrives_intact(connect, upstream, conversation, alice):
    tokens = ["héllo ", "世界 ", "🙂", " done"]
    upstream.enqueue(Reply(tokens=tokens, split_every=1, crlf=True, keepalive_comments=3))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "unicode please"})
    done = await ws.done()
    assert done["content"] == "".join(tokens)
    assert done["status"] == "complete"


async def test_markdown_in_replies_is_rendered_and_sanitized(
    connect, upstream, conversation, alice
):
    text = "**bold** <script>alert(1)</script> [x](javascript:alert(1)) ![i](https://e.x/p.png)"
    upstream.enqueue(Reply(tokens=[text]))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "md"})
    done = await ws.done()
    assert "<strong>bold</strong>" in done["html"]
    assert "<script" not in done["html"]
    assert "javascript:" not in done["html"].replace("[x](javascript:alert(1))", "")
    assert "<img" not in done["html"]
    assert 'rel="noopener noreferrer nofollow"' in done["html"]


async def test_a_second_send_while_a_reply_streams_is_refused_and_stores_nothing(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["a"] * 50, gap=0.02))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "first"})
    await ws.receive_until(lambda f: f["type"] == "message.delta")
    await ws.send({"type": "message.send", "content": "second"})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "busy"
    await ws.done()
    assert not await Message.objects.filter(content="second").aexists()
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_stop_closes_the_upstream_connection_and_keeps_the_partial_reply(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(tokens=["word "], repeat=500, gap=0.02))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "talk forever"})
    for _ in range(3):
        await ws.receive_until(lambda f: f["type"] == "message.delta")
    await ws.send({"type": "generation.stop"})
    done = await ws.done(timeout=5)
    assert done["status"] == "stopped"
    assert done["content"].startswith("word word word")
    await upstream.await_client_disconnects(1, timeout=2)
    reply = await Message.objects.aget(pk=done["id"])
    assert reply.status == "stopped"
    assert reply.content == done["content"]


async def test_finish_reason_length_is_stored_as_cut_off(connect, upstream, conversation, alice):
    upstream.enqueue(Reply(tokens=["partial"], finish_reason="length"))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "long please"})
    done = await ws.done()
    assert done["status"] == "complete"
    assert done["finish_reason"] == "length"


async def test_retry_after_a_failure_streams_a_new_reply_to_the_same_message(
    connect, upstream, conversation, alice
):
    upstream.enqueue(Reply(status=503), Reply(tokens=["Second ", "try"]))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "please"})
    failed = await ws.done()
    assert failed["status"] == "failed"
    await ws.send({"type": "message.retry"})
    done = await ws.done()
    assert done["status"] == "complete"
    assert done["content"] == "Second try"
    retry_body = upstream.requests[1].json
    assert retry_body["messages"][-1] == {"role": "user", "content": "please"}
    assert await Message.objects.filter(conversation=conversation, role="user").acount() == 1


async def test_under_load_tokens_are_read_and_sent_in_batches_without_losing_text(
    connect, upstream, conversation, alice, monkeypatch
):
    from chat import generation

    # Pretend the server is busy: every stream waits 50 ms between upstream reads.
    monkeypatch.setattr(generation, "BATCHING_THRESHOLD", 0)
    monkeypatch.setattr(generation, "BATCHING_SECONDS_PER_STREAM", 0.05)
    tokens = [f"t{i} " for i in range(40)]
    upstream.enqueue(Reply(tokens=tokens, gap=0.005))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    done = await ws.done()
    deltas = [f for f in ws.frames if f["type"] == "message.delta"]
    assert done["content"] == "".join(tokens)
    assert ws.streamed_text(done["id"]) == "".join(tokens)
    assert len(deltas) < len(tokens) / 3


async def test_an_idle_server_forwards_each_token_as_its_own_delta(
    connect, upstream, conversation, alice
):
    tokens = [f"t{i} " for i in range(10)]
    upstream.enqueue(Reply(tokens=tokens, gap=0.03))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    done = await ws.done()
    deltas = [f["text"] for f in ws.frames if f["type"] == "message.delta"]
    assert deltas == tokens
    assert done["content"] == "".join(tokens)


# The statements of a send's one database call (see the first test below).
def _send_statements() -> list[str]:
    from django.db import connection

    lock = ["SELECT auth_user"] if connection.features.has_select_for_update else []
    return [
        *lock,
        "SELECT django_session",
        "SELECT auth_user",
        "SELECT chat_conversation",
        "SELECT chat_message",
        "INSERT chat_message",
        "INSERT chat_message",
        "UPDATE chat_conversation",
        "WITH chat_message",
        "INSERT usage_reservation",
    ]


def send_and_capture(client, user, conversation, content: str):
    """Send `content` as `user`; return the StartedReply and the statements it ran."""
    from asgiref.sync import async_to_sync
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.access import SocketAccess

    client.force_login(user)
    access = SocketAccess(client.session.session_key, user.pk, conversation.pk)
    with CaptureQueriesContext(connection) as captured:
        started = async_to_sync(actions.post_user_message)(access, content, "channel")
    statements = [
        q["sql"].split()[0] + " " + re.search(r'(?:FROM|INTO|^UPDATE)\s+"(\w+)"', q["sql"])[1]
        for q in captured.captured_queries
        if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    return started, statements


def test_a_send_costs_a_fixed_set_of_queries_in_one_database_call(client, alice, conversation):
    started, statements = send_and_capture(client, alice, conversation, "Hi there")
    # On PostgreSQL the member's row is locked first (their writes run one after another),
    # then the session, the user, the conversation with its character, owner and persona (one
    # query), the owner's streaming replies counted against the cap, both messages (the reply
    # below the question), the conversation's shown branch and timestamp, the history for the
    # prompt (one recursive query), then the reply's reservation, inserted only if the member's
    # quotas leave room for it (one statement).
    assert statements == _send_statements()
    assert started.request.messages[-1] == {"role": "user", "content": "Hi there"}
    assert started.reply.status == Message.Status.STREAMING
    assert started.reply.prompt_note == ""


def test_a_send_whose_lorebook_was_partly_scanned_says_so_with_one_more_update(
    client, alice, settings
):
    from characters.models import Character

    # Each search of this key backtracks until its own 50 ms cap; the budget allows about two.
    entry = {"keys": ["/^(a|aa)+$/"], "content": "Never shown.", "use_regex": True}
    book = {"entries": [{**entry, "insertion_order": i} for i in range(20)]}
    character = Character.objects.create(name="Slow", character_book=book)
    conversation = actions.start_conversation(alice, character)
    settings.CHAT_LOREBOOK_BUDGET_SECONDS = 0.1

    started, statements = send_and_capture(client, alice, conversation, "a" * 40 + "!")

    # The prompt is built after the send's one database call; its note is stored by a second,
    # made only when the prompt left something out.
    expected = _send_statements()
    assert statements[: len(expected)] == expected
    assert statements[len(expected) :] == ["UPDATE chat_message"]
    note = started.reply.prompt_note
    assert note.startswith("The lorebook was only partly scanned")
    assert Message.objects.get(pk=started.reply.pk).prompt_note == note
    assert "Never shown." not in started.request.messages[0]["content"]


def test_the_history_of_a_reply_is_its_branch_without_empty_turns(conversation, alice):
    from chat.reply_requests import history_up_to
    from tests.conftest import store_chain

    other = actions.start_conversation(alice, None)
    S = Message.Status
    store_chain(other, {"role": "user", "content": "another chat"})
    first, answer, _, second, failed = store_chain(
        conversation,
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "assistant", "content": ""},  # empty: nothing to send
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "it broke half", "status": S.FAILED},
    )
    # An alternative of the first answer, and a reply streaming beside the failed one: neither
    # is on the branch of that reply.
    Message.objects.create(
        conversation=conversation, parent=first, role="assistant", content="another answer"
    )
    reply = Message.objects.create(
        conversation=conversation, parent=second, role="assistant", status=S.STREAMING
    )
    Message.objects.create(conversation=conversation, parent=reply, role="user", content="later")

    history = history_up_to(conversation.pk, reply.parent_id)

    assert [(turn.role, turn.content) for turn in history] == [
        ("assistant", "Hello alice, I am Serika!"),  # the greeting
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]
    # Everything shown is sent, a failed reply's text too; a streaming one is not.
    assert [t.content for t in history_up_to(conversation.pk, failed.pk)][-2:] == [
        "second question",
        "it broke half",
    ]
    assert [t.content for t in history_up_to(conversation.pk, reply.pk + 1)][-2:] == [
        "second question",
        "later",
    ]
    assert history_up_to(other.pk, answer.pk) == []  # another conversation's message: nothing

"""The conversation as a tree over the websocket: regenerate and alternatives, edit and branch,
continue, delete, and what the upstream is sent (exactly the branch shown).

Alice owns the conversation; Bob is another member, who must never reach her messages.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from cardspec.prompt import CONTINUE_NUDGE
from chat import actions
from chat.models import Conversation, Message
from tests.conftest import store_chain
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

GREETING = {"role": "assistant", "content": "Hello alice, I am Serika!"}


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


def sent_history(request) -> list[dict[str, str]]:
    """The chat turns of an upstream request (the leading system prompt left out)."""
    messages = request.json["messages"]
    assert messages[0]["role"] == "system"
    return messages[1:]


async def leaf_of(conversation) -> int:
    return (await Conversation.objects.aget(pk=conversation.pk)).current_leaf_id


async def exchange(ws, upstream, content: str, answer: str) -> dict:
    """Send `content`, let the upstream answer `answer`; the reply's final message."""
    upstream.enqueue(Reply(tokens=[answer]))
    await ws.send({"type": "message.send", "content": content})
    return await ws.done()


async def error_of(ws) -> dict:
    return await ws.receive_until(lambda f: f["type"] == "error")


# --- regenerate and alternatives ---------------------------------------------------------------
async def test_regenerate_adds_an_alternative_and_the_prompt_holds_only_the_shown_branch(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "Tell me a joke", "Joke one")
    assert first["siblings"] == [first["id"]]

    upstream.enqueue(Reply(tokens=["Joke two"]))
    await ws.send({"type": "message.regenerate", "id": first["id"]})
    created = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    second = await ws.done()
    assert created["message"]["parent"] == first["parent"]
    assert created["message"]["siblings"] == [first["id"], second["id"]]
    assert second["content"] == "Joke two"

    # The regenerated request is the branch up to the question: no earlier attempt in it.
    assert sent_history(upstream.requests[1]) == [
        GREETING,
        {"role": "user", "content": "Tell me a joke"},
    ]
    # Both replies are kept; the new one is shown, and the next send follows it.
    assert await Message.objects.filter(parent_id=first["parent"]).acount() == 2
    assert await leaf_of(conversation) == second["id"]
    await exchange(ws, upstream, "Another", "Sure")
    assert sent_history(upstream.requests[2]) == [
        GREETING,
        {"role": "user", "content": "Tell me a joke"},
        {"role": "assistant", "content": "Joke two"},
        {"role": "user", "content": "Another"},
    ]


async def test_choosing_an_earlier_alternative_shows_its_branch_and_the_prompt_follows_it(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "Tell me a joke", "Joke one")
    upstream.enqueue(Reply(tokens=["Joke two"]))
    await ws.send({"type": "message.retry"})  # Retry is Regenerate of the latest reply
    second = await ws.done()
    await exchange(ws, upstream, "Explain it", "Well…")

    await ws.send({"type": "branch.switch", "id": first["id"]})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    # Everything after the question is replaced by the first joke (which has no replies).
    assert changed["parent"] == first["parent"]
    assert [m["id"] for m in changed["messages"]] == [first["id"]]
    assert changed["messages"][0]["siblings"] == [first["id"], second["id"]]
    assert await leaf_of(conversation) == first["id"]

    await exchange(ws, upstream, "Ha", "Thanks")
    assert sent_history(upstream.requests[-1]) == [
        GREETING,
        {"role": "user", "content": "Tell me a joke"},
        {"role": "assistant", "content": "Joke one"},
        {"role": "user", "content": "Ha"},
    ]

    # Back to the second joke: its newest branch ("Explain it", "Well…") comes with it.
    await ws.send({"type": "branch.switch", "id": second["id"]})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    assert [m["content"] for m in changed["messages"]] == ["Joke two", "Explain it", "Well…"]


async def test_the_chat_page_shows_the_branch_with_its_alternatives(
    client, connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "Question", "Answer one")
    upstream.enqueue(Reply(tokens=["Answer two"]))
    await ws.send({"type": "message.regenerate", "id": first["id"]})
    second = await ws.done()

    await sync_to_async(client.force_login)(alice)
    page = (await sync_to_async(client.get)(f"/conversations/{conversation.pk}/")).content.decode()
    assert "Answer two" in page
    assert "Answer one" not in page
    assert f'data-siblings="{first["id"]},{second["id"]}"' in page


# --- edit ---------------------------------------------------------------------------------------
async def test_editing_a_question_branches_and_the_old_branch_stays_reachable(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    original = await exchange(ws, upstream, "What is 2+2?", "5")
    question_id = original["parent"]

    upstream.enqueue(Reply(tokens=["4"]))
    await ws.send({"type": "message.edit", "id": question_id, "content": "What is 2+2 exactly?"})
    edited = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "user"
    )
    answer = await ws.done()
    greeting = await Message.objects.aget(conversation=conversation, greeting_index=0)
    assert edited["message"]["parent"] == greeting.pk
    assert edited["message"]["siblings"] == [question_id, edited["message"]["id"]]
    assert answer["content"] == "4"
    assert sent_history(upstream.requests[-1]) == [
        GREETING,
        {"role": "user", "content": "What is 2+2 exactly?"},
    ]
    # The original question and its answer are untouched, one alternative away.
    assert (await Message.objects.aget(pk=question_id)).content == "What is 2+2?"
    await ws.send({"type": "branch.switch", "id": question_id})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    assert [m["content"] for m in changed["messages"]] == ["What is 2+2?", "5"]


async def test_editing_a_reply_corrects_it_in_place_and_the_model_sees_the_correction(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    tab2 = await connect(alice, conversation.pk)
    reply = await exchange(ws, upstream, "Name a colour", "Bleu")
    await ws.send({"type": "message.edit", "id": reply["id"], "content": "Blue"})
    updated = await ws.receive_until(lambda f: f["type"] == "message.updated")
    assert updated["message"]["id"] == reply["id"]
    assert updated["message"]["content"] == "Blue"
    assert updated["message"]["html"] == "<p>Blue</p>\n"
    assert updated["message"]["edited_at"] is not None
    # Every tab sees it.
    seen = await tab2.receive_until(lambda f: f["type"] == "message.updated")
    assert seen["message"]["content"] == "Blue"

    await exchange(ws, upstream, "Why?", "Because")
    assert sent_history(upstream.requests[-1])[-2:] == [
        {"role": "assistant", "content": "Blue"},
        {"role": "user", "content": "Why?"},
    ]
    assert await Message.objects.filter(conversation=conversation).acount() == 5


@pytest.mark.parametrize("content", ["", "   ", None, 12])
async def test_an_empty_edit_is_refused_and_changes_nothing(
    connect, upstream, alice, conversation, content
):
    ws = await connect(alice, conversation.pk)
    reply = await exchange(ws, upstream, "Hi", "Hello")
    await ws.send({"type": "message.edit", "id": reply["id"], "content": content})
    assert (await error_of(ws))["code"] == "empty_message"
    assert (await Message.objects.aget(pk=reply["id"])).content == "Hello"


# --- continue -----------------------------------------------------------------------------------
async def test_continue_appends_to_the_same_reply_and_asks_the_upstream_to_carry_on(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    tab2 = await connect(alice, conversation.pk)
    upstream.enqueue(Reply(tokens=["Once upon", " a time"], finish_reason="length"))
    await ws.send({"type": "message.send", "content": "A story, please"})
    cut = await ws.done()
    assert cut["finish_reason"] == "length"

    upstream.enqueue(Reply(tokens=[", there was", " a fox."]))
    await ws.send({"type": "message.continue", "id": cut["id"]})
    continued = await ws.receive_until(lambda f: f["type"] == "message.continued")
    assert continued["message"]["id"] == cut["id"]
    assert continued["message"]["status"] == "streaming"
    assert continued["message"]["content"] == "Once upon a time"
    done = await ws.done()
    assert done["id"] == cut["id"]
    assert done["status"] == "complete"
    assert done["content"] == "Once upon a time, there was a fox."
    assert done["finish_reason"] == "stop"
    # The usage adds up: the first part's reply tokens and the continuation's.
    # (The fake upstream counts one token per chunk: two, then two more.)
    assert cut["usage"]["completion_tokens"] == 2
    assert done["usage"]["completion_tokens"] == 4
    # The deltas carry only the new text; a tab rebuilds the whole reply from the event.
    new_text = "".join(
        f["text"] for f in ws.frames if f["type"] == "message.delta" and f["seq"] >= 1
    )
    assert new_text.endswith(", there was a fox.")
    await tab2.receive_until(lambda f: f["type"] == "message.continued")
    assert (await tab2.done())["content"] == "Once upon a time, there was a fox."

    assert sent_history(upstream.requests[1]) == [
        GREETING,
        {"role": "user", "content": "A story, please"},
        {"role": "assistant", "content": "Once upon a time"},
        {"role": "system", "content": CONTINUE_NUDGE},
    ]
    stored = await Message.objects.aget(pk=cut["id"])
    assert stored.content == "Once upon a time, there was a fox."
    assert await Message.objects.filter(conversation=conversation).acount() == 3


async def test_only_the_latest_reply_can_be_continued(connect, upstream, alice, conversation):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "One", "Uno")
    await exchange(ws, upstream, "Two", "Dos")
    await ws.send({"type": "message.continue", "id": first["id"]})
    assert (await error_of(ws))["code"] == "cannot_continue"
    question = first["parent"]
    await ws.send({"type": "message.continue", "id": question})
    assert (await error_of(ws))["code"] == "cannot_continue"
    assert (await Message.objects.aget(pk=first["id"])).status == "complete"
    assert len(upstream.requests) == 2


# --- delete -------------------------------------------------------------------------------------
async def test_deleting_a_message_removes_it_and_what_hangs_below_it(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    tab2 = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "One", "Uno")
    await exchange(ws, upstream, "Two", "Dos")
    await ws.send({"type": "message.delete", "id": first["id"]})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    # The branch now ends at the question the deleted reply answered.
    assert changed["parent"] == first["parent"]
    assert changed["messages"] == []
    assert (await tab2.receive_until(lambda f: f["type"] == "path.changed"))["messages"] == []
    assert await leaf_of(conversation) == first["parent"]
    contents = [m.content async for m in Message.objects.filter(conversation=conversation)]
    assert contents == [GREETING["content"], "One"]

    # Sending again continues from what is shown.
    await exchange(ws, upstream, "Again", "Otra vez")
    assert [m["content"] for m in sent_history(upstream.requests[-1])] == [
        GREETING["content"],
        "One",
        "Again",
    ]


async def test_deleting_the_shown_alternative_shows_the_nearest_one(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "Q", "A1")
    for answer in ["A2", "A3"]:
        upstream.enqueue(Reply(tokens=[answer]))
        await ws.send({"type": "message.retry"})
        await ws.done()
    await ws.send({"type": "branch.switch", "id": first["id"] + 1})  # A2
    await ws.receive_until(lambda f: f["type"] == "path.changed")

    await ws.send({"type": "message.delete", "id": first["id"] + 1})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    [shown] = changed["messages"]
    assert shown["content"] == "A1"  # the one before it
    assert shown["siblings"] == [first["id"], first["id"] + 2]


# --- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message.regenerate"},
        {"type": "message.continue"},
        {"type": "message.edit", "content": "changed"},
        {"type": "message.delete"},
        {"type": "branch.switch"},
    ],
)
async def test_a_message_of_another_conversation_or_member_is_not_found(
    connect, upstream, alice, bob, character, conversation, frame
):
    ws = await connect(alice, conversation.pk)
    reply = await exchange(ws, upstream, "Mine", "Yours")
    her_other = await sync_to_async(actions.start_conversation)(alice, character)
    bobs = await sync_to_async(actions.start_conversation)(bob, character)
    [bobs_message] = await sync_to_async(store_chain)(bobs, {"role": "user", "content": "Bob's"})
    foreign_ids = [
        bobs_message.pk,
        await Message.objects.filter(conversation=her_other).values_list("pk", flat=True).afirst(),
        10**9,
    ]
    before = [m async for m in Message.objects.order_by("pk").values()]
    for foreign in foreign_ids:
        await ws.send({**frame, "id": foreign})
        error = await error_of(ws)
        # A continue of a message not in this conversation names the same refusal.
        assert error["code"] == "not_found", (frame, foreign, error)
    assert [m async for m in Message.objects.order_by("pk").values()] == before
    assert await leaf_of(conversation) == reply["id"]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("bad", ["7", 1.5, True, -3, 0, [1], {"id": 1}])
@pytest.mark.parametrize(
    "kind", ["message.delete", "branch.switch", "message.edit", "message.regenerate"]
)
async def test_a_message_id_that_is_not_an_id_is_a_bad_frame(
    connect, alice, conversation, kind, bad
):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": kind, "id": bad, "content": "x"})
    assert (await error_of(ws))["code"] == "bad_frame"
    assert await Message.objects.acount() == 1


@pytest.mark.parametrize(
    "frame",
    [
        lambda r: {"type": "message.regenerate", "id": r["id"]},
        lambda r: {"type": "message.retry"},
        lambda r: {"type": "message.continue", "id": r["id"]},
        lambda r: {"type": "message.edit", "id": r["parent"], "content": "edited"},
        lambda r: {"type": "message.edit", "id": r["id"], "content": "edited"},
        lambda r: {"type": "message.delete", "id": r["id"]},
        lambda r: {"type": "branch.switch", "id": r["parent"]},
    ],
)
async def test_nothing_changes_the_tree_while_a_reply_streams(
    connect, upstream, alice, conversation, frame
):
    ws = await connect(alice, conversation.pk)
    earlier = await exchange(ws, upstream, "First", "Done")
    upstream.enqueue(Reply(tokens=["slow"] * 4, gap=0.3))
    await ws.send({"type": "message.send", "content": "Second"})
    streaming = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["status"] == "streaming"
    )
    before = [m async for m in Message.objects.exclude(status="streaming").order_by("pk").values()]

    await ws.send(frame(earlier))
    assert (await error_of(ws))["code"] == "busy"

    assert [
        m async for m in Message.objects.exclude(status="streaming").order_by("pk").values()
    ] == before
    assert await leaf_of(conversation) == streaming["message"]["id"]
    done = await ws.done()
    assert done["content"] == "slow" * 4
    assert len(upstream.requests) == 2


async def test_a_branch_switch_racing_a_send_from_another_tab_never_hides_the_streaming_reply(
    connect, upstream, alice, conversation
):
    tab_a = await connect(alice, conversation.pk)
    tab_b = await connect(alice, conversation.pk)
    first = await exchange(tab_a, upstream, "Q", "A1")
    upstream.enqueue(Reply(tokens=["A2"]))
    await tab_a.send({"type": "message.retry"})
    await tab_a.done()
    for _ in range(5):
        upstream.enqueue(Reply(tokens=["racing"], first_delay=0.2))
        # Both at once: whichever the server takes first, the reply that streams is shown.
        await asyncio.gather(
            tab_a.send({"type": "message.send", "content": "go"}),
            tab_b.send({"type": "branch.switch", "id": first["id"]}),
        )
        reply = await tab_a.done()
        assert await leaf_of(conversation) == reply["id"]
        assert (await Message.objects.aget(pk=reply["id"])).status == "complete"


# --- resync -------------------------------------------------------------------------------------
async def test_a_tab_that_reconnects_gets_the_branch_shown_meanwhile(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    first = await exchange(ws, upstream, "Q", "A1")
    upstream.enqueue(Reply(tokens=["A2"]))
    await ws.send({"type": "message.retry"})
    second = await ws.done()
    greeting_id = first["parent"] - 1
    shown_by_tab = [greeting_id, first["parent"], second["id"]]

    # While the tab was away, another one went back to the first answer and edited it.
    other = await connect(alice, conversation.pk)
    await other.send({"type": "branch.switch", "id": first["id"]})
    await other.receive_until(lambda f: f["type"] == "path.changed")
    await other.send({"type": "message.edit", "id": first["id"], "content": "A1, edited"})
    await other.receive_until(lambda f: f["type"] == "message.updated")

    back = await connect(alice, conversation.pk)
    await back.send({"type": "sync", "after": second["id"], "have": shown_by_tab})
    sync = await back.receive_until(lambda f: f["type"] == "conversation.sync")
    assert sync["path"] == [greeting_id, first["parent"], first["id"]]
    assert sync["alternatives"] == {str(first["id"]): [first["id"], second["id"]]}
    # Only what the tab lacks: the first answer, in its edited form.
    assert [(m["id"], m["content"]) for m in sync["messages"]] == [(first["id"], "A1, edited")]


# --- the migration ------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_existing_chats_become_chains_showing_every_message(alice):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before = [("chat", "0002_greeting_index_prompt_note")]
    after = [("chat", "0003_message_tree")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldConversation = old_apps.get_model("chat", "Conversation")
    OldMessage = old_apps.get_model("chat", "Message")
    chats = [OldConversation.objects.create(owner_id=alice.pk, model="m") for _ in range(2)]
    empty = OldConversation.objects.create(owner_id=alice.pk, model="m")
    for i in range(4):  # interleaved, as concurrent chats write
        for chat in chats:
            OldMessage.objects.create(
                conversation=chat, role="user" if i % 2 else "assistant", content=f"{chat.pk}-{i}"
            )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from chat.tree import visible_path

    for chat in chats:
        conversation = Conversation.objects.get(pk=chat.pk)
        _, shown = visible_path(conversation)
        assert [m.content for m in shown] == [f"{chat.pk}-{i}" for i in range(4)]
        assert all(m.siblings == [m.pk] for m in shown)
    assert Conversation.objects.get(pk=empty.pk).current_leaf_id is None


async def test_a_tab_that_reconnects_while_a_reply_is_continued_follows_it(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    reply = await exchange(ws, upstream, "A story", "Once")
    upstream.enqueue(Reply(tokens=[f" w{i}" for i in range(20)], gap=0.1))
    await ws.send({"type": "message.continue", "id": reply["id"]})
    await ws.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 3)

    # A tab that had the whole branch, the reply shown as finished, comes back mid-stream.
    back = await connect(alice, conversation.pk)
    await back.send(
        {
            "type": "sync",
            "after": reply["id"],
            "have": [reply["parent"] - 1, reply["parent"], reply["id"]],
        }
    )
    sync = await back.receive_until(lambda f: f["type"] == "conversation.sync")
    assert [(m["id"], m["status"]) for m in sync["messages"]] == [(reply["id"], "streaming")]
    snapshot = await back.receive_until(lambda f: f["type"] == "message.snapshot")
    assert snapshot["message"]["content"].startswith("Once w0")
    done = await back.done()
    full = "Once" + "".join(f" w{i}" for i in range(20))
    assert done["content"] == full
    assert back.streamed_text(reply["id"]) == full

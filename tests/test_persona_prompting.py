"""The chat side of personas: greetings, the context budget, and who speaks (local or upstream)."""

from __future__ import annotations

import pytest

from chat import actions
from chat.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def greeter(character):
    character.nickname = "Seri"
    character.alternate_greetings = ["Yo {{user}}!", "", "Welcome back, <USER>."]
    character.save()
    return character


@pytest.fixture
def conversation(alice, greeter):
    return actions.start_conversation(alice, greeter)


def test_a_new_chat_opens_with_the_first_greeting_using_the_nickname(conversation):
    [greeting] = conversation.messages.all()
    assert greeting.content == "Hello alice, I am Seri!"
    assert greeting.greeting_index == 0


async def test_the_greeting_can_be_switched_before_the_first_reply(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "greeting.switch", "index": 2})
    switched = await ws.done()
    assert switched["content"] == "Welcome back, alice."
    assert switched["greeting_index"] == 2
    stored = await Message.objects.aget(pk=switched["id"])
    assert stored.content == "Welcome back, alice."

    await ws.send({"type": "message.send", "content": "hi"})
    await ws.done()
    assert upstream.requests[0].json["messages"][1] == {
        "role": "assistant",
        "content": "Welcome back, alice.",
    }


async def test_the_greeting_is_locked_once_the_user_has_replied(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "hi"})
    await ws.done()
    await ws.send({"type": "greeting.switch", "index": 1})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "greeting_locked"
    greeting = await Message.objects.filter(greeting_index__isnull=False).aget()
    assert greeting.greeting_index == 0


@pytest.mark.parametrize("index", [-1, 3, 99])
async def test_a_greeting_index_out_of_range_is_refused(alice, connect, conversation, index):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "greeting.switch", "index": index})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "greeting_locked"


async def test_older_turns_are_left_out_to_fit_the_budget_and_the_user_is_told(
    connect, upstream, alice, conversation, greeter
):
    greeter.context_tokens = 200
    await greeter.asave()
    for i in range(30):
        await Message.objects.acreate(
            conversation=conversation, role="user", content=f"old message {i} " * 10
        )
        await Message.objects.acreate(
            conversation=conversation, role="assistant", content=f"old answer {i} " * 10
        )
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "the latest question"})
    done = await ws.done()
    assert "left out to fit the model's context" in done["prompt_note"]
    sent = upstream.requests[0].json["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1] == {"role": "user", "content": "the latest question"}
    assert len(sent) < 20


async def test_an_upstream_persona_character_sends_only_its_id_and_the_history(
    connect, upstream, alice, conversation, greeter
):
    greeter.serika_character_id = "serika-42"
    greeter.prompt_mode = "upstream"
    await greeter.asave()
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "who are you?"})
    await ws.done()
    body = upstream.requests[0].json
    assert body["character_id"] == "serika-42"
    assert [m["role"] for m in body["messages"]] == ["assistant", "user"]


async def test_a_local_persona_with_an_id_sends_both(
    connect, upstream, alice, conversation, greeter
):
    greeter.serika_character_id = "serika-42"
    await greeter.asave()
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "who are you?"})
    await ws.done()
    body = upstream.requests[0].json
    assert body["character_id"] == "serika-42"
    assert body["messages"][0]["role"] == "system"
    assert "Seri" in body["messages"][0]["content"]


async def test_the_members_persona_is_used_for_user_in_greetings_and_prompts(
    connect, upstream, alice, greeter
):
    from asgiref.sync import sync_to_async

    from characters.models import UserPersona

    await UserPersona.objects.acreate(
        user=alice, display_name="Captain Alice", description="A starship captain."
    )
    conversation = await sync_to_async(actions.start_conversation)(alice, greeter)
    greeting = await conversation.messages.aget()
    assert greeting.content == "Hello Captain Alice, I am Seri!"

    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "status report"})
    await ws.done()
    system = upstream.requests[0].json["messages"][0]["content"]
    assert "talking to Captain Alice" in system
    assert "A starship captain." in system

"""The chat side of personas: greetings, the context budget, and who speaks (local or upstream)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import actions
from chat.models import Message
from tests.conftest import store_chain

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


def test_a_new_chat_opens_with_the_first_greeting_and_keeps_the_others_as_alternatives(
    conversation,
):
    greetings = list(conversation.messages.order_by("pk"))
    assert [(g.content, g.greeting_index, g.parent_id) for g in greetings] == [
        ("Hello alice, I am Seri!", 0, None),
        ("Yo alice!", 1, None),  # the empty alternate greeting is skipped
        ("Welcome back, alice.", 2, None),
    ]
    assert conversation.current_leaf_id == greetings[0].pk


async def test_another_greeting_is_chosen_like_any_alternative_and_opens_the_prompt(
    connect, upstream, alice, conversation
):
    welcome = await Message.objects.aget(greeting_index=2)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "branch.switch", "id": welcome.pk})
    changed = await ws.receive_until(lambda f: f["type"] == "path.changed")
    assert changed["parent"] is None
    [shown] = changed["messages"]
    assert shown["content"] == "Welcome back, alice."
    assert len(shown["siblings"]) == 3

    await ws.send({"type": "message.send", "content": "hi"})
    await ws.done()
    assert upstream.requests[0].json["messages"][1:] == [
        {"role": "assistant", "content": "Welcome back, alice."},
        {"role": "user", "content": "hi"},
    ]


async def test_a_greeting_cannot_be_regenerated(connect, upstream, alice, conversation):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.retry"})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "nothing_to_retry"
    assert await conversation.messages.acount() == 3
    assert upstream.requests == []


async def test_older_turns_are_left_out_to_fit_the_budget_and_the_user_is_told(
    connect, upstream, alice, conversation, greeter
):
    greeter.context_tokens = 200
    await greeter.asave()
    await sync_to_async(store_chain)(
        conversation,
        *(
            turn
            for i in range(30)
            for turn in (
                {"role": "user", "content": f"old message {i} " * 10},
                {"role": "assistant", "content": f"old answer {i} " * 10},
            )
        ),
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
    from characters.models import UserPersona

    await UserPersona.objects.acreate(
        user=alice, display_name="Captain Alice", description="A starship captain."
    )
    conversation = await sync_to_async(actions.start_conversation)(alice, greeter)
    greeting = await conversation.messages.aget(greeting_index=0)
    assert greeting.content == "Hello Captain Alice, I am Seri!"

    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "status report"})
    await ws.done()
    system = upstream.requests[0].json["messages"][0]["content"]
    assert "talking to Captain Alice" in system
    assert "A starship captain." in system


async def test_the_characters_note_and_lore_at_depth_reach_the_upstream_inside_the_chat(
    connect, upstream, alice, conversation, greeter
):
    # SillyTavern's character's note (`extensions.depth_prompt`) one message up, as the member
    # (role "user"), and a lorebook entry at depth 0 as system: both in the chat, not in the
    # system message.
    greeter.extensions = {
        "depth_prompt": {
            "prompt": "{{char}} never tells {{user}} the password.",
            "depth": 1,
            "role": "user",
        },
        "talkativeness": "0.5",
    }
    greeter.character_book = {
        "entries": [
            {
                "keys": ["password"],
                "content": "{{char}} knows the password: swordfish.",
                "enabled": True,
                "insertion_order": 100,
                "extensions": {"position": 4, "depth": 0, "role": 0},
            }
        ]
    }
    await greeter.asave()
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "What is the password?"})
    await ws.done()
    assert upstream.requests[0].json["messages"] == [
        {"role": "system", "content": "You are Seri, talking to alice.\n\nA cheerful guide."},
        {"role": "assistant", "content": "Hello alice, I am Seri!"},
        {"role": "user", "content": "Seri never tells alice the password."},
        {"role": "user", "content": "What is the password?"},
        {"role": "system", "content": "Seri knows the password: swordfish."},
    ]

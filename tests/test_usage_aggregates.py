"""Every upstream call adds its tokens to its member's day, per character and model, in the
transaction that stores the reply's final state: the aggregates match the replies' own figures,
estimates (marked as such) where the upstream sent none, and a continue counts only its part.

Alice chats with Serika (the `character` fixture) and without a character.
"""

from __future__ import annotations

import threading
from datetime import UTC

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from cardspec.prompt import count_message_tokens, estimate_tokens
from chat import actions
from chat.models import Message
from tests.fake_upstream import Reply
from usage.accounting import Charge
from usage.models import DailyUsage, Reservation, record

pytestmark = pytest.mark.django_db(transaction=True)


def today():
    return timezone.now().astimezone(UTC).date()


async def rows(**filters) -> list[DailyUsage]:
    return [row async for row in DailyUsage.objects.filter(**filters).order_by("pk")]


async def test_the_days_figures_are_the_sum_of_its_replies_per_character_and_model(
    connect, upstream, alice, character
):
    upstream.enqueue(Reply(tokens=["a", "b", "c"]), Reply(tokens=["d", "e"]), Reply(tokens=["f"]))
    with_serika = await sync_to_async(actions.start_conversation)(alice, character)
    plain = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, with_serika.pk)
    for text in ("first", "second question"):
        await ws.send({"type": "message.send", "content": text})
        await ws.done()
    other = await connect(alice, plain.pk)
    await other.send({"type": "message.send", "content": "hello"})
    await other.done()

    replies = [m async for m in Message.objects.filter(role="assistant", model__gt="")]
    [serika_day, plain_day] = await rows(user=alice)
    assert (serika_day.day, serika_day.character_pk, serika_day.character_name) == (
        today(),
        character.pk,
        "Serika",
    )
    assert serika_day.model == with_serika.model
    serikas = [r for r in replies if r.conversation_id == with_serika.pk]
    assert serika_day.requests == 2
    assert serika_day.prompt_tokens == sum(r.prompt_tokens for r in serikas)
    assert serika_day.completion_tokens == sum(r.completion_tokens for r in serikas) == 5
    assert serika_day.estimated_tokens == 0
    assert (plain_day.character_pk, plain_day.requests, plain_day.completion_tokens) == (0, 1, 1)
    assert not await Reservation.objects.filter(settled_at=None).aexists()


async def test_a_reply_without_usage_is_counted_by_estimate_and_marked_so(connect, upstream, alice):
    upstream.enqueue(Reply(tokens=["Hello", " there", ", friend"], usage=False))
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "hi " * 40})
    done = await ws.done()
    assert done["usage"] is None  # the reply shows no figures it was not given

    [sent] = upstream.requests
    prompt = count_message_tokens(sent.json["messages"])
    completion = estimate_tokens("Hello there, friend")
    [day] = await rows(user=alice)
    assert (day.prompt_tokens, day.completion_tokens) == (prompt, completion)
    assert day.estimated_tokens == prompt + completion


async def test_a_stopped_reply_counts_what_it_used_so_far(connect, upstream, alice):
    upstream.enqueue(Reply(tokens=["word "] * 200, gap=0.02))
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    for _ in range(3):
        await ws.receive_until(lambda f: f["type"] == "message.delta")
    await ws.send({"type": "generation.stop"})
    done = await ws.done()
    assert done["status"] == "stopped"
    [day] = await rows(user=alice)
    assert day.completion_tokens == estimate_tokens(done["content"]) > 0
    assert day.prompt_tokens > 0
    assert day.estimated_tokens == day.prompt_tokens + day.completion_tokens


async def test_a_call_refused_before_any_text_counts_as_a_request_without_tokens(
    connect, upstream, alice
):
    upstream.enqueue(Reply(status=500))
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "go"})
    assert (await ws.done())["status"] == "failed"
    [day] = await rows(user=alice)
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (1, 0, 0)


async def test_a_continue_counts_only_its_own_call(connect, upstream, alice):
    upstream.enqueue(
        Reply(tokens=["Once", " upon"], finish_reason="length"),
        Reply(tokens=[" a", " time"]),
        Reply(tokens=[" there", " lived", " a", " fox"], usage=False),
    )
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "Tell me a story"})
    first = await ws.done()
    await ws.send({"type": "message.continue"})
    second = await ws.done()
    # The reply's own figures add every part's completion tokens up.
    assert second["usage"]["completion_tokens"] == 4
    assert len(upstream.requests) == 2
    [day] = await rows(user=alice)
    assert day.requests == 2
    assert day.completion_tokens == 4  # 2 + 2, not 2 + (2 + 2)
    assert day.prompt_tokens == first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert day.estimated_tokens == 0

    # A continue the upstream sends no usage for: only its new text is estimated.
    await ws.send({"type": "message.continue"})
    third = await ws.done()
    assert third["content"] == "Once upon a time there lived a fox"
    [day] = await rows(user=alice)
    new_part = estimate_tokens(" there lived a fox")
    prompt = count_message_tokens(upstream.requests[2].json["messages"])
    assert day.requests == 3
    assert day.completion_tokens == 4 + new_part
    assert day.estimated_tokens == new_part + prompt


def test_record_adds_a_call_that_reserved_nothing_such_as_a_title(alice, character):
    record(alice.pk, character, "title-model", Charge(120, 8))
    record(alice.pk, character, "title-model", Charge(100, 6, estimated_tokens=6))
    [day] = DailyUsage.objects.filter(user=alice)
    assert (day.requests, day.prompt_tokens, day.completion_tokens, day.estimated_tokens) == (
        2,
        220,
        14,
        6,
    )


def test_increments_made_at_once_are_never_lost(alice):
    """One upsert per call, computed by the database: threads adding to the same row at once
    (each on its own connection) lose nothing."""
    workers, calls = 8, 25
    barrier = threading.Barrier(workers)

    def add() -> None:
        barrier.wait()
        try:
            for _ in range(calls):
                record(alice.pk, None, "m", Charge(3, 2, 1))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=add) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    [day] = DailyUsage.objects.filter(user=alice)
    total = workers * calls
    assert (day.requests, day.prompt_tokens, day.completion_tokens, day.estimated_tokens) == (
        total,
        3 * total,
        2 * total,
        total,
    )


def test_a_renamed_character_keeps_one_row_a_day_under_its_latest_name(alice, character):
    record(alice.pk, character, "m", Charge(1, 1))
    character.name = "Serika II"
    character.save()
    record(alice.pk, character, "m", Charge(1, 1))
    [day] = DailyUsage.objects.filter(user=alice)
    assert (day.character_name, day.requests) == ("Serika II", 2)


@pytest.mark.parametrize("returning", [True, False])
def test_a_reservation_is_settled_once_with_or_without_update_returning(
    alice, monkeypatch, returning
):
    """UPDATE ... RETURNING where the database has it (PostgreSQL, SQLite >= 3.35), a read then
    the UPDATE where it does not; either way a second settlement finds nothing to settle."""
    from django.db import connection

    from chat.models import Conversation
    from tests.conftest import store_chain
    from usage.models import settle

    conversation = Conversation.objects.create(owner=alice, model="m")
    [reply] = store_chain(conversation, {"role": "assistant", "model": "m", "content": "x" * 35})
    Reservation.objects.create(
        user=alice, reply=reply, model="m", prompt_tokens=7, tokens=99, created_at=timezone.now()
    )
    # Only for the settlement: Django's own inserts need the flag as it is.
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", returning)
    assert settle(reply.pk, text=reply.content) == Charge(7, 10, 17)
    assert settle(reply.pk, Charge(1, 1)) is None
    [day] = DailyUsage.objects.filter(user=alice)
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (1, 7, 10)

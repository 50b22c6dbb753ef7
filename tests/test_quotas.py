"""Quotas: tokens per day and per month and replies per minute, per member and per group (the
lowest wins), reserved in the send's own transaction and settled when the reply ends.

Alice is held to quotas; Bob shares her group in some tests; Root is staff (exempt by default).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections
from django.test import Client
from django.utils import timezone

from cardspec.prompt import Turn
from chat import actions
from chat.access import SocketAccess
from chat.models import Message
from chat.reply_requests import PromptInputs
from tests.conftest import store_chain
from tests.fake_upstream import Reply
from usage import models as usage
from usage.accounting import (
    Charge,
    Limits,
    QuotaExceeded,
    Standing,
    estimate_prompt,
    measure,
    next_month,
)
from usage.models import DailyUsage, Quota, Reservation

NOW = datetime(2026, 3, 14, 15, 30, tzinfo=UTC)


def standing(**kwargs) -> Standing:
    values = {
        "limits": Limits(),
        "today": 0,
        "this_month": 0,
        "reserved": 0,
        "recent_requests": 0,
        "oldest_recent": None,
        "now": NOW,
        **kwargs,
    }
    return Standing(**values)


# --- The arithmetic ------------------------------------------------------------------------------
def test_a_reply_fits_while_used_plus_reserved_plus_its_need_stays_within_the_limit():
    limits = Limits(tokens_per_day=1000)
    assert standing(limits=limits, today=600, reserved=200).refusal(200) is None
    refusal = standing(limits=limits, today=600, reserved=200).refusal(201)
    assert refusal.startswith("Your daily quota of 1,000 tokens has 200 tokens left")
    assert "resets at 00:00 UTC" in refusal


def test_a_used_up_daily_quota_says_so_and_when_it_resets():
    refusal = standing(limits=Limits(tokens_per_day=200_000), today=200_000).refusal(10)
    assert refusal == "Your daily quota of 200,000 tokens is used up; it resets at 00:00 UTC."


def test_a_quota_taken_by_replies_being_written_says_to_wait_for_them():
    refusal = standing(limits=Limits(tokens_per_day=1000), today=400, reserved=600).refusal(1)
    assert "taken up by the replies being written now" in refusal


def test_the_monthly_quota_resets_on_the_first_of_the_next_month():
    refusal = standing(limits=Limits(tokens_per_month=5_000_000), this_month=5_000_000).refusal(1)
    assert refusal == (
        "Your monthly quota of 5,000,000 tokens is used up; it resets on 1 April at 00:00 UTC."
    )
    assert next_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)).isoformat() == "2027-01-01"


def test_replies_per_minute_count_the_calls_started_in_the_last_minute():
    limits = Limits(requests_per_minute=3)
    assert standing(limits=limits, recent_requests=2).refusal(1) is None
    refusal = standing(
        limits=limits, recent_requests=3, oldest_recent=NOW - timedelta(seconds=45)
    ).refusal(1)
    assert refusal == "Your quota allows 3 replies a minute; try again in 15 s."


def test_what_is_left_never_goes_below_zero():
    s = standing(
        limits=Limits(tokens_per_day=100, tokens_per_month=1000),
        today=90,
        this_month=90,
        reserved=50,
    )
    assert s.left_today() == 0
    assert s.left_this_month() == 860
    assert standing().left_today() is None


def test_a_calls_cost_is_the_upstreams_count_else_an_estimate_marked_as_such():
    messages = [{"role": "user", "content": "x" * 35}]
    assert measure(12, 3, prompt_messages=messages, new_text="abc", prompt_processed=True) == (
        Charge(12, 3, 0)
    )
    estimated = measure(
        None, None, prompt_messages=messages, new_text="y" * 7, prompt_processed=True
    )
    assert estimated == Charge(10 + 4, 2, 16)  # 35 chars + the per-message overhead; 7 chars
    # Refused before any text: no prompt was processed.
    assert measure(
        None, None, prompt_messages=messages, new_text="", prompt_processed=False
    ) == Charge(0, 0, 0)


def test_the_prompt_estimate_counts_the_branch_and_never_exceeds_the_context_budget():
    inputs = PromptInputs(
        character=None,
        history=[Turn("user", "a" * 700), Turn("assistant", "b" * 700)],
        user_name="Alice",
        user_description="",
        context_tokens=16_000,
        model="m",
        temperature=None,
        max_tokens=None,
        character_id="",
    )
    assert estimate_prompt(inputs) == 400 + 5 * 4
    small = PromptInputs(**{**inputs.__dict__, "context_tokens": 100})
    assert estimate_prompt(small) == 100


# --- Reserved in the send's transaction -----------------------------------------------------------
def access_for(user, conversation) -> SocketAccess:
    client = Client()
    client.force_login(user)
    return SocketAccess(client.session.session_key, user.pk, conversation.pk)


def send(user, conversation, content: str = "go"):
    return async_to_sync(actions.post_user_message)(
        access_for(user, conversation), content, "channel"
    )


@pytest.mark.django_db(transaction=True)
def test_a_send_reserves_its_prompt_estimate_plus_its_max_tokens(alice, settings):
    conversation = actions.start_conversation(alice, None)
    conversation.max_tokens = 300
    conversation.save()
    started = send(alice, conversation, "x" * 35)
    [reservation] = Reservation.objects.all()
    assert reservation.reply_id == started.reply.pk
    assert reservation.user_id == alice.pk
    assert reservation.prompt_tokens == 10 + 4 * 4  # one turn of 35 characters; 4 messages
    assert reservation.tokens == reservation.prompt_tokens + 300
    assert reservation.settled_at is None
    # Without a max_tokens of its own, a chat's reply reserves QUOTA_REPLY_TOKENS.
    settings.QUOTA_REPLY_TOKENS = 777
    other = actions.start_conversation(alice, None)
    send(alice, other, "x" * 35)
    assert Reservation.objects.get(reply__conversation=other).tokens == 26 + 777


@pytest.mark.django_db(transaction=True)
def test_a_refused_send_stores_nothing(alice):
    Quota.objects.create(user=alice, tokens_per_day=500)
    DailyUsage.objects.create(
        user=alice, day=timezone.now().astimezone(UTC).date(), model="m", prompt_tokens=500
    )
    conversation = actions.start_conversation(alice, None)
    messages_before = Message.objects.count()
    with pytest.raises(QuotaExceeded, match="daily quota of 500 tokens is used up"):
        send(alice, conversation)
    assert Message.objects.count() == messages_before
    assert not Reservation.objects.exists()
    conversation.refresh_from_db()
    assert conversation.current_leaf_id is None


@pytest.mark.django_db(transaction=True)
def test_a_group_quota_holds_for_each_member_and_the_lowest_wins(alice, bob, settings):
    settings.QUOTA_TOKENS_PER_DAY = 1_000_000
    writers = Group.objects.create(name="Writers")
    alice.groups.add(writers)
    bob.groups.add(writers)
    Quota.objects.create(group=writers, tokens_per_day=2000)
    Quota.objects.create(user=bob, tokens_per_day=5000)  # his own is higher: the group's wins
    for member in (alice, bob):
        conversation = actions.start_conversation(member, None)
        conversation.max_tokens = 2500
        conversation.save()
        with pytest.raises(QuotaExceeded, match="daily quota of 2,000 tokens"):
            send(member, conversation)
    # Outside the group, the site's default holds.
    alice.groups.clear()
    conversation = actions.start_conversation(alice, None)
    conversation.max_tokens = 2500
    conversation.save()
    send(alice, conversation)


@pytest.mark.django_db(transaction=True)
def test_a_members_own_quota_may_be_above_the_default_and_zero_allows_nothing(alice, settings):
    settings.QUOTA_TOKENS_PER_DAY = 500
    conversation = actions.start_conversation(alice, None)
    conversation.max_tokens = 800
    conversation.save()
    with pytest.raises(QuotaExceeded, match="daily quota of 500 tokens"):
        send(alice, conversation)
    quota = Quota.objects.create(user=alice, tokens_per_day=900)
    send(alice, conversation)
    Message.objects.filter(status="streaming").update(status="complete")
    quota.tokens_per_day = 0
    quota.save()
    with pytest.raises(QuotaExceeded, match="daily quota of 0 tokens is used up"):
        send(alice, conversation)


@pytest.mark.django_db(transaction=True)
def test_staff_are_exempt_unless_quota_exempt_staff_is_off(settings):
    root = get_user_model().objects.create_user("root", password="x", is_staff=True)
    settings.QUOTA_TOKENS_PER_DAY = 10
    conversation = actions.start_conversation(root, None)
    send(root, conversation)
    assert Reservation.objects.filter(user=root).count() == 1  # counted all the same
    settings.QUOTA_EXEMPT_STAFF = False
    other = actions.start_conversation(root, None)
    with pytest.raises(QuotaExceeded):
        send(root, other)


@pytest.mark.django_db(transaction=True)
def test_replies_per_minute_are_counted_across_conversations(alice, settings):
    settings.QUOTA_REQUESTS_PER_MINUTE = 2
    settings.CHAT_MAX_CONCURRENT_PER_USER = 10
    chats = [actions.start_conversation(alice, None) for _ in range(3)]
    send(alice, chats[0])
    send(alice, chats[1])
    with pytest.raises(QuotaExceeded, match=r"allows 2 replies a minute; try again in \d+ s"):
        send(alice, chats[2])
    # A minute later the window has moved on.
    Reservation.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    send(alice, chats[2])


@pytest.mark.django_db(transaction=True)
def test_regenerate_continue_and_a_questions_edit_reserve_too(alice):
    conversation = actions.start_conversation(alice, None)
    question, answer = store_chain(
        conversation,
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi there, how can I", "finish_reason": "length"},
    )
    access = access_for(alice, conversation)
    quota = Quota.objects.create(user=alice, tokens_per_day=0)
    for verb, *args in (
        (actions.regenerate_reply, access, "channel", answer.pk),
        (actions.continue_reply, access, "channel", answer.pk),
        (actions.edit_message, access, question.pk, "hello again", "channel"),
    ):
        with pytest.raises(QuotaExceeded):
            async_to_sync(verb)(*args)
    assert Message.objects.filter(conversation=conversation).count() == 2  # nothing new
    quota.delete()
    started = async_to_sync(actions.continue_reply)(access, "channel", answer.pk)
    reservation = Reservation.objects.get(reply=started.reply)
    assert reservation.text_offset == len("Hi there, how can I")


# --- Concurrency: many sends at once -----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_many_sends_at_once_never_reserve_more_than_the_quota(alice, settings):
    """Twelve threads, each with its own database connection, send at once in twelve chats; the
    quota leaves room for exactly four replies. On PostgreSQL the member's row lock orders the
    sends' transactions, on SQLite its write lock."""
    settings.CHAT_MAX_CONCURRENT_PER_USER = 50
    room_for, tries = 4, 12
    reply_tokens = 10_000
    # Each reply needs its max_tokens plus a prompt estimate of a few tokens: four fit, a
    # fifth cannot.
    Quota.objects.create(user=alice, tokens_per_day=room_for * reply_tokens + 5_000)
    chats = []
    for _ in range(tries):
        chat = actions.start_conversation(alice, None)
        chat.max_tokens = reply_tokens
        chat.save()
        chats.append(chat)
    accesses = [access_for(alice, chat) for chat in chats]
    barrier = threading.Barrier(tries)
    outcomes: list[str] = []

    def one(access: SocketAccess) -> None:
        barrier.wait()
        try:
            async_to_sync(actions.post_user_message)(access, "go", "channel")
            outcomes.append("started")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(access,)) for access in accesses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["refused"] * (tries - room_for) + ["started"] * room_for
    assert Reservation.objects.count() == room_for
    assert Message.objects.filter(role="user").count() == room_for  # the refused stored nothing
    reserved = sum(Reservation.objects.values_list("tokens", flat=True))
    assert reserved <= room_for * reply_tokens + 5_000


# --- Settled at the end ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_reply_in_flight_holds_its_reservation_until_it_ends(
    connect, upstream, alice, settings
):
    settings.CHAT_MAX_CONCURRENT_PER_USER = 5
    # Room for one reply in flight (a 1,500-token reservation), not two.
    await Quota.objects.acreate(user=alice, tokens_per_day=2_500)
    upstream.enqueue(Reply(tokens=["slow "] * 20, gap=0.05), Reply(tokens=["ok"]))
    first, second = [await sync_to_async(actions.start_conversation)(alice, None) for _ in "ab"]
    for chat in (first, second):
        chat.max_tokens = 1500
        await chat.asave()
    one = await connect(alice, first.pk)
    two = await connect(alice, second.pk)
    await one.send({"type": "message.send", "content": "go"})
    await one.receive_until(lambda f: f["type"] == "message.delta")

    await two.send({"type": "message.send", "content": "me too"})
    error = await two.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "quota_exceeded"
    assert error["message"].startswith("Your daily quota of 2,500 tokens has 98")
    assert "fewer than this reply may use (up to 1,518 with its prompt)" in error["message"]
    assert not await Message.objects.filter(content="me too").aexists()

    # Settled at its end to what it used (far less than reserved): room again.
    done = await one.done()
    assert done["status"] == "complete"
    assert not await Reservation.objects.filter(settled_at=None).aexists()
    await two.send({"type": "message.send", "content": "me too"})
    assert (await two.done())["content"] == "ok"


@pytest.mark.django_db(transaction=True)
async def test_a_reply_swept_after_its_process_died_is_settled_with_an_estimate(
    connect, alice, settings
):
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    [_question, reply] = await sync_to_async(store_chain)(
        conversation,
        {"role": "user", "content": "tell me"},
        {
            "role": "assistant",
            "status": "streaming",
            "content": "y" * 70,
            "generator_channel": "generation.dead!abc",
            "model": "m",
        },
    )
    await Reservation.objects.acreate(
        user=alice,
        reply=reply,
        model="m",
        prompt_tokens=40,
        tokens=1064,
        created_at=timezone.now(),
    )
    stale = timezone.now() - timedelta(seconds=settings.CHAT_HEARTBEAT_INTERVAL * 10)
    await Message.objects.filter(pk=reply.pk).aupdate(updated_at=stale)
    # Still streaming: its reservation counts against the quota.
    assert (await sync_to_async(usage.standing)(alice.pk)).reserved == 1064

    await connect(alice, conversation.pk)  # the first connection starts the sweep
    async with asyncio.timeout(5):
        while (await Message.objects.aget(pk=reply.pk)).status == "streaming":
            await asyncio.sleep(0.05)
    assert (await sync_to_async(usage.standing)(alice.pk)).reserved == 0
    [day] = [row async for row in DailyUsage.objects.filter(user=alice)]
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (1, 40, 20)
    assert day.estimated_tokens == 60


@pytest.mark.django_db(transaction=True)
def test_a_reservation_of_a_reply_no_longer_streaming_stops_counting(alice):
    """A process that died mid-reply leaves its reservation unsettled until a sweep; but once
    the reply is not streaming, whatever marked it so, the reservation no longer counts."""
    conversation = actions.start_conversation(alice, None)
    [reply] = store_chain(conversation, {"role": "assistant", "status": "streaming", "model": "m"})
    Reservation.objects.create(
        user=alice, reply=reply, model="m", prompt_tokens=1, tokens=900, created_at=timezone.now()
    )
    assert usage.standing(alice.pk).reserved == 900
    Message.objects.filter(pk=reply.pk).update(status="failed")
    assert usage.standing(alice.pk).reserved == 0


@pytest.mark.django_db(transaction=True)
def test_old_settled_reservations_are_purged_but_recent_ones_kept_for_the_minute_count(alice):
    conversation = actions.start_conversation(alice, None)
    [reply] = store_chain(conversation, {"role": "assistant", "model": "m"})
    now = timezone.now()

    def reservation(age: timedelta, settled: bool) -> Reservation:
        return Reservation.objects.create(
            user=alice,
            reply=reply,
            model="m",
            prompt_tokens=1,
            tokens=1,
            created_at=now - age,
            settled_at=now if settled else None,
        )

    old = reservation(timedelta(minutes=5), settled=True)
    recent = reservation(timedelta(seconds=30), settled=True)
    orphan = reservation(timedelta(days=2), settled=False)  # its reply is not streaming
    assert usage.purge_reservations(now) == 2
    assert list(Reservation.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Reservation.objects.filter(pk__in=[old.pk, orphan.pk]).exists()


# --- Edited in the admin ---------------------------------------------------------------------
@pytest.mark.django_db
def test_staff_set_a_quota_for_a_member_or_a_group_in_the_admin(admin_client, alice):
    writers = Group.objects.create(name="Writers")
    url = "/admin/usage/quota/add/"
    both = admin_client.post(url, {"user": alice.pk, "group": writers.pk, "tokens_per_day": 5})
    assert "Choose a member or a group (one, not both)." in both.content.decode()
    assert not Quota.objects.exists()
    assert (
        admin_client.post(url, {"group": writers.pk, "tokens_per_day": 200_000}).status_code == 302
    )
    page = admin_client.get("/admin/usage/quota/").content.decode()
    assert "group Writers" in page
    assert Quota.objects.get().tokens_per_day == 200_000

"""Titles (written by the model, or the member's own), pin, archive, and the grouped list.

Alice owns the conversations; Bob is another member who must never see or change them.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import actions, conversation_actions, titles
from chat.conversation_list import age_label, grouped
from chat.models import Conversation
from tests.conftest import store_chain
from tests.fake_upstream import Reply


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


@pytest.fixture
def titles_on(settings):
    settings.SERIKA_AUTO_TITLES = True
    return settings


async def reload(conversation) -> Conversation:
    return await Conversation.objects.aget(pk=conversation.pk)


# --- automatic titles -----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_the_first_reply_gets_a_title_that_every_socket_of_the_member_hears(
    connect, upstream, alice, bob, character, conversation, titles_on
):
    other = await sync_to_async(actions.start_conversation)(alice, character)
    bobs = await sync_to_async(actions.start_conversation)(bob, character)
    ws = await connect(alice, conversation.pk)
    elsewhere = await connect(alice, other.pk)
    bob_ws = await connect(bob, bobs.pk)
    upstream.enqueue(Reply(tokens=["Hi!"]), Reply(tokens=['"Greetings and', ' small talk."']))

    await ws.send({"type": "message.send", "content": "Hello"})
    await ws.done()
    updated = await ws.receive_until(lambda f: f["type"] == "conversation.updated")
    assert updated["conversation"] == {
        "id": conversation.pk,
        "title": "Greetings and small talk",
        "pinned": False,
        "archived": False,
    }
    # The member's other tabs list it too; nobody else hears of it.
    seen = await elsewhere.receive_until(lambda f: f["type"] == "conversation.updated")
    assert seen["conversation"]["title"] == "Greetings and small talk"
    stored = await reload(conversation)
    assert (stored.title, stored.title_source) == ("Greetings and small talk", "auto")

    # The title's tokens are Alice's usage, beside her reply's: two calls, 1 + 2 reply tokens
    # (the fake upstream counts one a chunk).
    from usage.models import DailyUsage

    days = [d async for d in DailyUsage.objects.filter(user=alice)]
    assert sum(d.requests for d in days) == 2
    assert sum(d.completion_tokens for d in days) == 3
    title_request = upstream.requests[1].json
    assert "stream" not in title_request
    assert title_request["model"] == conversation.model
    assert title_request["max_tokens"] == 24
    assert "User: Hello\n\nAssistant: Hi!" in title_request["messages"][1]["content"]

    # Later replies do not ask again.
    upstream.enqueue(Reply(tokens=["Sure."]))
    await ws.send({"type": "message.send", "content": "More"})
    await ws.done()
    await bob_ws.send({"type": "sync", "after": 0})
    await bob_ws.receive_until(lambda f: f["type"] == "conversation.sync")
    assert [f["type"] for f in bob_ws.frames] == ["conversation.sync"]
    assert len(upstream.requests) == 3


@pytest.mark.django_db(transaction=True)
async def test_the_title_model_setting_and_a_slow_title_never_delay_the_reply(
    connect, upstream, alice, conversation, titles_on
):
    titles_on.SERIKA_TITLE_MODEL = "openai/title-model"
    upstream.enqueue(Reply(tokens=["Hi!"]), Reply(tokens=["Slow title"], first_delay=1.5))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "Hello"})
    done = await ws.done(timeout=1.0)  # well before the title is written
    assert done["status"] == "complete"
    assert (await reload(conversation)).title == "Serika"
    updated = await ws.receive_until(lambda f: f["type"] == "conversation.updated", timeout=10)
    assert updated["conversation"]["title"] == "Slow title"
    assert upstream.requests[1].json["model"] == "openai/title-model"


@pytest.mark.django_db(transaction=True)
async def test_a_failed_title_keeps_the_default_and_is_not_asked_again(
    connect, upstream, alice, conversation, titles_on
):
    upstream.enqueue(Reply(tokens=["Hi!"]), Reply(status=500))
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "Hello"})
    assert (await ws.done())["status"] == "complete"
    await upstream.await_requests(2)
    upstream.enqueue(Reply(tokens=["Again"]))
    await ws.send({"type": "message.send", "content": "Again"})
    await ws.done()
    stored = await reload(conversation)
    assert stored.title == "Serika"
    assert len(upstream.requests) == 3


@pytest.mark.django_db(transaction=True)
async def test_titles_can_be_turned_off(connect, upstream, alice, conversation, settings):
    settings.SERIKA_AUTO_TITLES = False
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "Hello"})
    await ws.done()
    assert len(upstream.requests) == 1
    assert (await reload(conversation)).title_source == ""


def first_exchange(conversation):
    """A question and its complete reply, as the first reply's end leaves them."""
    _, reply = store_chain(
        conversation,
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!", "status": "complete"},
    )
    return reply


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("quota", "staff", "asked"),
    [
        ({"tokens_per_day": 5_000}, False, False),  # 10 tokens left today
        ({"tokens_per_month": 5_000}, False, False),  # 10 left this month
        ({"tokens_per_day": 100_000}, False, True),  # room enough
        ({"tokens_per_day": 5_000}, True, True),  # staff are exempt (QUOTA_EXEMPT_STAFF)
    ],
)
async def test_no_title_is_asked_when_the_members_token_quota_has_no_room_for_it(
    upstream, alice, conversation, titles_on, caplog, quota, staff, asked
):
    from usage.models import DailyUsage, Quota
    from usage.views import utc_today

    reply = await sync_to_async(first_exchange)(conversation)
    alice.is_staff = staff
    await alice.asave(update_fields=["is_staff"])
    await Quota.objects.acreate(user=alice, **quota)
    await DailyUsage.objects.acreate(
        user=alice, day=utc_today(), model="openai/gpt-4o-mini", requests=1, prompt_tokens=4_990
    )
    upstream.enqueue(Reply(tokens=["Greetings"]))

    with caplog.at_level(logging.INFO, logger="chat.titles"):
        await titles.write_title(reply.pk)

    stored = await reload(conversation)
    if asked:
        assert len(upstream.requests) == 1
        assert stored.title == "Greetings"
    else:
        # The character's name stays, no upstream call is made, and the log says why.
        assert upstream.requests == []
        assert stored.title == "Serika"
        assert f"No title for conversation {conversation.pk}: the " in caplog.text
        assert "token quota has 10 left" in caplog.text
        # Claimed all the same: the next reply does not ask again.
        assert await conversation_actions.claim_auto_title(reply.pk) is None


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_first_replies_writes_its_titles_a_few_at_a_time(
    upstream, alice, character, titles_on, monkeypatch
):
    import asyncio

    from chat import upstream as upstream_module

    chats = [
        await Conversation.objects.acreate(owner=alice, character=character, title="Serika")
        for _ in range(6)
    ]
    replies = [await sync_to_async(first_exchange)(chat) for chat in chats]
    upstream.enqueue(*[Reply(tokens=[f"Topic {n}"]) for n in range(6)])
    # The real request, held a little, so that titles would overlap if they could.
    complete, running, most = upstream_module.complete, 0, 0

    async def held(request, seconds):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)
            return await complete(request, seconds)
        finally:
            running -= 1

    monkeypatch.setattr(upstream_module, "complete", held)

    await asyncio.gather(*(titles.write_title(reply.pk) for reply in replies))

    assert most == titles.TITLE_CONCURRENCY
    assert sorted([(await reload(chat)).title for chat in chats]) == [
        f"Topic {n}" for n in range(6)
    ]


# --- renaming ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_rename_is_heard_by_every_tab_and_no_automatic_title_replaces_it(
    connect, upstream, alice, conversation, titles_on
):
    ws = await connect(alice, conversation.pk)
    tab2 = await connect(alice, conversation.pk)
    await ws.send({"type": "conversation.rename", "title": "  My   trip\nplans  "})
    updated = await tab2.receive_until(lambda f: f["type"] == "conversation.updated")
    assert updated["conversation"]["title"] == "My trip plans"
    stored = await reload(conversation)
    assert (stored.title, stored.title_source) == ("My trip plans", "member")

    await ws.send({"type": "message.send", "content": "Hello"})
    await ws.done()
    assert len(upstream.requests) == 1  # no title asked
    assert (await reload(conversation)).title == "My trip plans"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("title", ["", "   ", None, 7, ["x"]])
async def test_an_empty_title_is_refused(connect, alice, conversation, title):
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "conversation.rename", "title": title})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "empty_title"
    assert (await reload(conversation)).title == "Serika"


def test_model_titles_are_cleaned():
    assert conversation_actions.clean_title(' "Trip to Kyoto." ') == "Trip to Kyoto"
    assert conversation_actions.clean_title("**Bold title**") == "Bold title"
    assert conversation_actions.clean_title("\u201cCurly\u201d") == "Curly"
    assert conversation_actions.clean_title("a" * 300) == "a" * 200
    assert conversation_actions.clean_title(' " ') == ""


# --- the list ---------------------------------------------------------------------------------
def test_age_headings():
    now = timezone.now().replace(hour=12)
    assert age_label(now, now) == "Today"
    assert age_label(now - timedelta(days=1), now) == "Yesterday"
    assert age_label(now - timedelta(days=6), now) == "Previous 7 days"
    assert re.fullmatch(r"[A-Z][a-z]+ \d{4}", age_label(now - timedelta(days=40), now))


@pytest.mark.django_db
def test_the_sidebar_puts_pinned_first_groups_by_age_and_leaves_archived_out(
    client, alice, bob, character
):
    now = timezone.now()
    made = {}
    for name, age in [("old", 40), ("week", 3), ("yesterday", 1), ("today", 0), ("pin", 90)]:
        conv = actions.start_conversation(alice, character)
        Conversation.objects.filter(pk=conv.pk).update(
            title=name, updated_at=now - timedelta(days=age)
        )
        made[name] = conv
    conversation_actions.set_pinned(made["pin"], True)
    archived = actions.start_conversation(alice, character)
    Conversation.objects.filter(pk=archived.pk).update(title="archived one")
    conversation_actions.set_archived(archived, True)
    Conversation.objects.filter(pk=actions.start_conversation(bob, character).pk).update(
        title="bob's"
    )

    client.force_login(alice)
    page = client.get("/").content.decode()
    sidebar = page[page.index('<aside class="sidebar"') : page.index("</aside>")]
    headings = re.findall(r'<h3 class="conversation-group">([^<]+)</h3>', sidebar)
    assert headings[:4] == ["Pinned", "Today", "Yesterday", "Previous 7 days"]
    assert len(headings) == 5  # and the month of the oldest
    titles = re.findall(r'<span class="title">([^<]+)</span>', sidebar)
    assert titles == ["pin", "today", "yesterday", "week", "old"]
    assert "bob&#x27;s" not in page and "archived one" not in page

    archived_page = client.get("/conversations/?archived=1").content.decode()
    assert "archived one" in archived_page
    assert "today" not in re.findall(r'<span class="title">([^<]+)</span>', archived_page)[-1:]


@pytest.mark.django_db
def test_the_full_list_pages_filters_by_character_and_keeps_a_constant_query_count(
    client, alice, character
):
    from characters.models import Character

    other = Character.objects.create(name="Other", first_mes="Hi")

    def add(count, who):
        for _ in range(count):
            actions.start_conversation(alice, who)

    client.force_login(alice)
    add(5, character)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/conversations/").status_code == 200
    add(60, character)
    add(3, other)
    with CaptureQueriesContext(connection) as many:
        first = client.get("/conversations/").content.decode()
    assert len(many) == len(few)
    assert first.count("data-conversation-link=") == 50 + 50  # the page, and the sidebar
    assert "Page 1 of 2" in first
    second = client.get("/conversations/?page=2").content.decode()
    main = second[second.index("<main") :]
    assert main.count("data-conversation-link=") == 18
    # Anything but a plain number is no filter (Unicode digits included).
    assert client.get("/conversations/?character=%C2%B2").status_code == 200
    filtered = client.get(f"/conversations/?character={other.pk}").content.decode()
    main = filtered[filtered.index("<main") :]
    assert main.count("data-conversation-link=") == 3


@pytest.mark.django_db
def test_pin_and_archive_are_the_owners_only(client, alice, bob, conversation):
    client.force_login(bob)
    assert client.post(f"/conversations/{conversation.pk}/pin/", {"pinned": "1"}).status_code == 404
    assert (
        client.post(f"/conversations/{conversation.pk}/archive/", {"archived": "1"}).status_code
        == 404
    )
    conversation.refresh_from_db()
    assert conversation.pinned_at is None and conversation.archived_at is None

    client.force_login(alice)
    client.post(f"/conversations/{conversation.pk}/pin/", {"pinned": "1"})
    client.post(f"/conversations/{conversation.pk}/archive/", {"archived": "1"})
    conversation.refresh_from_db()
    assert conversation.pinned_at is not None and conversation.archived_at is not None
    page = client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert ">Unpin</button>" in page and ">Unarchive</button>" in page


def test_grouping_keeps_list_order():
    now = timezone.now().replace(hour=12)
    convs = [
        Conversation(pk=1, pinned_at=now, updated_at=now - timedelta(days=9)),
        Conversation(pk=2, updated_at=now),
        Conversation(pk=3, updated_at=now - timedelta(hours=1)),
    ]
    groups = grouped(convs, now)
    assert [(g.label, [c.pk for c in g.conversations]) for g in groups] == [
        ("Pinned", [1]),
        ("Today", [2, 3]),
    ]

"""Search: a member's titles and message text, kept up to date by the database, shown with the
matching passage highlighted, and a hit opened at its message on its own branch.

Alice owns the conversations; Bob is another member, whose conversations must never appear in
her results (nor hers in his), even when they hold the very words she looks for.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import actions, search
from chat.models import Conversation, Message
from tests.conftest import store_chain
from tests.fake_upstream import Reply


def found(user, text: str) -> list[tuple[str, str]]:
    """What `user` finds for `text`: ("title", title) and ("message", content) hits in order."""
    return [
        ("message", hit.message.content) if hit.message else ("title", hit.conversation.title)
        for hit in search.search(user, text)
    ]


def messages_found(user, text: str) -> list[str]:
    return [content for kind, content in found(user, text) if kind == "message"]


def chat(owner, title: str, *texts: str) -> Conversation:
    """A conversation of `owner` titled `title` with `texts` as one branch (user, assistant, …)."""
    conversation = Conversation.objects.create(owner=owner, title=title, model="test-model")
    roles = ["user", "assistant"]
    store_chain(conversation, *({"role": roles[i % 2], "content": t} for i, t in enumerate(texts)))
    return conversation


@pytest.fixture
def kyoto(alice):
    return chat(alice, "Spring in Kyoto", "Plan a trip to Kyoto", "Kyoto in spring is lovely.")


# --- what is found -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_alice_finds_her_titles_and_her_message_text_newest_first(alice, kyoto):
    chat(alice, "Osaka food", "Where to eat in Osaka?", "Try the takoyaki near the castle.")
    assert found(alice, "kyoto") == [
        ("title", "Spring in Kyoto"),
        ("message", "Kyoto in spring is lovely."),
        ("message", "Plan a trip to Kyoto"),
    ]
    # Every word must match, in any order, whatever the case.
    assert messages_found(alice, "SPRING kyoto") == ["Kyoto in spring is lovely."]
    assert messages_found(alice, "takoyaki castle") == ["Try the takoyaki near the castle."]
    assert found(alice, "kyoto osaka") == []


@pytest.mark.django_db
def test_the_last_word_also_matches_as_a_prefix(alice, kyoto):
    assert messages_found(alice, "lov") == ["Kyoto in spring is lovely."]
    assert messages_found(alice, "lovely spr") == ["Kyoto in spring is lovely."]
    # Only the last word, and from three letters on: "lo" alone would match half the language.
    assert messages_found(alice, "lov spring") == []
    assert messages_found(alice, "lo") == []


@pytest.mark.django_db
def test_bobs_conversations_never_appear_in_alices_results(alice, bob, kyoto):
    bobs = chat(bob, "Kyoto with Bob", "Bob's secret Kyoto plan", "Kyoto secrets for Bob.")
    assert all(hit.conversation.owner_id == alice.pk for hit in search.search(alice, "kyoto"))
    assert found(alice, "secret") == []
    assert found(alice, "bob") == []
    assert found(bob, "kyoto") == [
        ("title", "Kyoto with Bob"),
        ("message", "Kyoto secrets for Bob."),
        ("message", "Bob's secret Kyoto plan"),
    ]
    assert found(bob, "lovely") == []
    # Nor through the page, nor by opening one of his hits as if it were hers.
    client = _client(alice)
    page = client.get("/search/", {"q": "kyoto"}).content.decode()
    assert "Spring in Kyoto" in page
    assert "Bob" not in page
    bob_message = Message.objects.filter(conversation=bobs).last()
    assert client.get(f"/conversations/{bobs.pk}/?message={bob_message.pk}").status_code == 404
    # Another conversation's message id on her own conversation is only ignored.
    page = client.get(f"/conversations/{kyoto.pk}/?message={bob_message.pk}").content.decode()
    assert "data-found" not in page
    assert "secret" not in page


@pytest.mark.django_db
def test_a_member_whose_chats_are_all_older_than_everyone_elses_finds_them_all(
    alice, bob, kyoto, monkeypatch
):
    """The walk through the matches starts at Alice's newest message, found beyond the site's
    newest ones (here 5) by a look at each of her conversations."""
    monkeypatch.setattr(search, "RECENT_MESSAGES", 5)
    older = chat(alice, "Older", *(f"Kyoto note {i}" for i in range(60)))
    Message.objects.filter(conversation=older).update(content="Kyoto old note")
    for i in range(10):
        chat(bob, f"Bob {i}", f"Kyoto plan {i}", "Kyoto again")
    with CaptureQueriesContext(connection) as queries:
        hits = search.search(alice, "kyoto", limit=70)
    assert len(queries) == 4
    assert [hit.message.content for hit in hits if hit.message] == ["Kyoto old note"] * 60 + [
        "Kyoto in spring is lovely.",
        "Plan a trip to Kyoto",
    ]
    # Paging below it, and a member with no messages at all.
    assert len(search.search(alice, "kyoto", limit=70, before=hits[-1].message.pk)) == 0
    Message.objects.filter(conversation__owner=alice).delete()
    assert found(alice, "kyoto") == [("title", "Spring in Kyoto")]


@pytest.mark.django_db
def test_an_inactive_or_anonymous_member_finds_nothing(alice, kyoto):
    from django.contrib.auth.models import AnonymousUser

    assert found(AnonymousUser(), "kyoto") == []
    alice.is_active = False
    alice.save()
    assert found(alice, "kyoto") == []


@pytest.mark.django_db
def test_archived_conversations_are_found_and_said_to_be_archived(alice, kyoto):
    from chat import conversation_actions

    conversation_actions.set_archived(kyoto, True)
    assert found(alice, "kyoto")[0] == ("title", "Spring in Kyoto")
    page = _client(alice).get("/search/", {"q": "kyoto"}).content.decode()
    assert "Archived" in page


@pytest.mark.django_db
def test_bulk_created_messages_as_an_import_stores_them_are_found(alice):
    """An import stores its messages with bulk_create, which sends no signals: the index is the
    database's own, so they are found all the same."""
    conversation = Conversation.objects.create(owner=alice, title="Imported", model="m")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user", content=f"imported line {i} zephyr")
        for i in range(30)
    )
    Conversation.objects.bulk_create([Conversation(owner=alice, title="Zephyr notes", model="m")])
    hits = found(alice, "zephyr")
    assert hits[0] == ("title", "Zephyr notes")
    assert len(hits) == 31


# --- kept up to date -----------------------------------------------------------------------------
@pytest.fixture
def started(alice, character):
    return actions.start_conversation(alice, character)


async def exchange(ws, upstream, content: str, answer: str) -> dict:
    upstream.enqueue(Reply(tokens=[answer]))
    await ws.send({"type": "message.send", "content": content})
    return await ws.done()


@pytest.mark.django_db(transaction=True)
async def test_a_finished_reply_an_edit_and_a_rename_are_found_at_once(
    connect, upstream, alice, started
):
    ws = await connect(alice, started.pk)
    reply = await exchange(ws, upstream, "Name a flower", "The wisteria blooms in May.")
    assert await sync_to_async(messages_found)(alice, "wisteria") == ["The wisteria blooms in May."]

    # A reply corrected in place: found by its new text only.
    await ws.send({"type": "message.edit", "id": reply["id"], "content": "The camellia, in May."})
    await ws.receive_until(lambda f: f["type"] == "message.updated")
    assert await sync_to_async(messages_found)(alice, "wisteria") == []
    assert await sync_to_async(messages_found)(alice, "camellia") == ["The camellia, in May."]

    await ws.send({"type": "conversation.rename", "title": "Flower talk"})
    await ws.receive_until(lambda f: f["type"] == "conversation.updated")
    assert await sync_to_async(found)(alice, "flower") == [
        ("title", "Flower talk"),
        ("message", "Name a flower"),
    ]
    # The old title is gone (the greeting still says the name).
    assert await sync_to_async(found)(alice, "serika") == [("message", "Hello alice, I am Serika!")]


@pytest.mark.django_db(transaction=True)
async def test_deleting_a_message_takes_its_whole_subtree_out_of_the_results(
    connect, upstream, alice, started
):
    ws = await connect(alice, started.pk)
    question = await ws.send({"type": "message.send", "content": "Tell me about otters"})
    upstream.enqueue(Reply(tokens=["Otters hold hands."]))
    first = await ws.done()
    question = first["parent"]
    upstream.enqueue(Reply(tokens=["Otters use stones."]))
    await ws.send({"type": "message.regenerate", "id": first["id"]})
    await ws.done()
    await exchange(ws, upstream, "More otters please", "Otters sleep afloat.")
    assert len(await sync_to_async(messages_found)(alice, "otters")) == 5

    await ws.send({"type": "message.delete", "id": question})
    await ws.receive_until(lambda f: f["type"] == "path.changed")
    assert await sync_to_async(messages_found)(alice, "otters") == []
    assert not await Message.objects.filter(content__icontains="otter").aexists()


@pytest.mark.django_db
def test_a_deleted_conversation_leaves_no_hits(alice, kyoto):
    _client(alice).post(f"/conversations/{kyoto.pk}/delete/")
    assert found(alice, "kyoto") == []
    # A new conversation reusing nothing of the old one is found normally.
    chat(alice, "Kyoto again", "Back to Kyoto")
    assert found(alice, "kyoto") == [("title", "Kyoto again"), ("message", "Back to Kyoto")]


# --- the results page ----------------------------------------------------------------------------
def _client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_snippet_is_escaped_text_with_the_matches_marked(alice):
    chat(alice, "<b>Bold</b> title", "Run <script>alert('x')</script> now, script kiddie")
    page = _client(alice).get("/search/", {"q": "script"}).content.decode()
    assert "<script>alert" not in page
    assert "&lt;<mark>script</mark>&gt;alert(&#x27;x&#x27;)&lt;/<mark>script</mark>&gt;" in page
    assert "<mark>script</mark> kiddie" in page
    page = _client(alice).get("/search/", {"q": "bold"}).content.decode()
    assert "&lt;b&gt;<mark>Bold</mark>&lt;/b&gt; title" in page
    assert "<b>Bold" not in page


def test_a_long_message_shows_the_passage_around_its_first_match():
    text = (
        "Once upon a time " + "there was nothing much. " * 40 + "Then a heron came. " + "x " * 200
    )
    snippet = search.highlight(text, search.parse("heron"))
    assert snippet.startswith("…")
    assert snippet.endswith("…")
    assert "Then a <mark>heron</mark> came." in snippet
    assert len(snippet) < search.SNIPPET_CHARS + 40
    # Diacritics are folded as FTS5 folds them; the text shown keeps its own.
    assert search.highlight("Un café noir", search.parse("cafe")) == "Un <mark>café</mark> noir"
    # The prefix is marked to the end of its word; a whole word only as a word.
    assert search.highlight("lovely love glove", search.parse("lov")) == (
        "<mark>lovely</mark> <mark>love</mark> glove"
    )
    assert search.highlight("lovely love", search.parse("love x")) == "lovely <mark>love</mark>"


HOSTILE = [
    "",
    "   ",
    '"',
    '""',
    "'",
    "*",
    "kyoto*",
    "* kyoto",
    "NEAR(kyoto spring)",
    "NEAR",
    "kyoto NEAR spring",
    "AND",
    "kyoto OR osaka",
    "NOT kyoto",
    "-kyoto",
    "title:kyoto",
    "content : kyoto",
    "{content}: kyoto",
    "^kyoto",
    "kyoto & spring | !osaka",
    "kyoto:*",
    "'kyoto' <-> 'spring'",
    "(((kyoto",
    "\\",
    "kyoto\x00spring",
    "%_%",
    "😀 kyoto",
    "東京",
    "a" * 3000,
    "kyoto " * 2000,
    "x" * 10_000,
]


@pytest.mark.django_db
@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_queries_are_only_words(alice, kyoto, query):
    response = _client(alice).get("/search/", {"q": query})
    assert response.status_code == 200
    # Syntax characters are not operators: what remains are the words.
    if query in {"kyoto*", "* kyoto", "-kyoto", "^kyoto", "kyoto:*", "(((kyoto", "😀 kyoto"}:
        assert "Kyoto in spring is lovely." in messages_found(alice, query)
    if query in {"NEAR(kyoto spring)", "kyoto NEAR spring", "kyoto OR osaka", "NOT kyoto"}:
        assert messages_found(alice, query) == []  # "near", "or", "not" are words to find


@pytest.mark.django_db
def test_the_results_page_runs_a_fixed_number_of_queries_and_pages_older_matches(alice, character):
    for i in range(12):
        conversation = chat(alice, f"Trip {i}", f"Heron sighting {i}", f"A heron, number {i}.")
        Conversation.objects.filter(pk=conversation.pk).update(character=character)
    client = _client(alice)
    client.get("/search/", {"q": "heron"})  # sessions and caches warmed
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/search/", {"q": "heron"}).content.decode()
    # Session and member, the sidebar's list, the titles, the member's newest message, the
    # messages: however many hits.
    assert len(queries) == 6, [q["sql"] for q in queries]
    assert page.lower().count("<mark>heron</mark>") == 24
    assert "Older matches" not in page

    from chat import views

    views.SEARCH_PAGE_SIZE, size = 10, views.SEARCH_PAGE_SIZE
    try:
        page = client.get("/search/", {"q": "heron"}).content.decode()
        assert page.count('class="snippet"') == 10
        older = re.search(r'href="\?q=heron&amp;before=(\d+)"', page)
        assert older, "a link to the older matches"
        rest = client.get("/search/", {"q": "heron", "before": older[1]}).content.decode()
        assert rest.count('class="snippet"') == 10
        last = client.get("/search/", {"q": "heron", "before": "1"}).content.decode()
        assert "No older messages match." in last
    finally:
        views.SEARCH_PAGE_SIZE = size


@pytest.mark.django_db
def test_the_search_box_is_in_the_sidebar_of_every_page_with_one(alice, kyoto):
    client = _client(alice)
    for url in ["/", "/conversations/", f"/conversations/{kyoto.pk}/", "/search/?q=kyoto"]:
        page = client.get(url).content.decode()
        assert '<label for="conversation-search" class="visually-hidden">Search conversations' in (
            page
        ), url
    assert 'value="kyoto"' in client.get("/search/?q=kyoto").content.decode()


# --- opening a hit -------------------------------------------------------------------------------
@pytest.fixture
def branches(alice):
    """A question with two replies: the first ("Herons…") on a branch that is not shown."""
    conversation = chat(alice, "Birds", "Which bird fishes?")
    question = conversation.current_leaf_id
    heron = Message.objects.create(
        conversation=conversation, parent_id=question, role="assistant", content="Herons fish."
    )
    follow_up = Message.objects.create(
        conversation=conversation, parent_id=heron.pk, role="user", content="Tell me more"
    )
    kingfisher = Message.objects.create(
        conversation=conversation, parent_id=question, role="assistant", content="Kingfishers."
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=kingfisher)
    return conversation, heron, follow_up, kingfisher


def shown_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<article class="message [^"]*" data-id="(\d+)"', page)]


@pytest.mark.django_db
def test_opening_a_hit_on_another_branch_shows_that_branch_and_marks_the_message(alice, branches):
    conversation, heron, follow_up, kingfisher = branches
    client = _client(alice)
    results = client.get("/search/", {"q": "herons"}).content.decode()
    link = f"/conversations/{conversation.pk}/?message={heron.pk}"
    assert f'href="{link}"' in results

    page = client.get(link).content.decode()
    question = heron.parent_id
    # Its branch, down to that branch's newest end.
    assert shown_ids(page) == [question, heron.pk, follow_up.pk]
    assert re.search(rf'data-id="{heron.pk}"[^>]* data-found tabindex="-1"', page)
    assert page.count("data-found") == 1
    # The page asks its socket to make that branch the shown one; the GET stored nothing.
    assert f'data-show-branch="{heron.pk}"' in page
    assert Conversation.objects.get(pk=conversation.pk).current_leaf_id == kingfisher.pk


@pytest.mark.django_db
def test_opening_a_hit_on_the_shown_branch_switches_nothing(alice, branches):
    conversation, *_, kingfisher = branches
    page = _client(alice).get(f"/conversations/{conversation.pk}/?message={kingfisher.parent_id}")
    page = page.content.decode()
    assert shown_ids(page) == [kingfisher.parent_id, kingfisher.pk]
    assert "data-show-branch" not in page
    assert re.search(rf'data-id="{kingfisher.parent_id}"[^>]* data-found', page)
    for junk in ["abc", "-1", "²", "9" * 40, "0"]:
        page = _client(alice).get(f"/conversations/{conversation.pk}/?message={junk}")
        assert page.status_code == 200
        assert "data-found" not in page.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_the_switch_the_page_asks_for_shows_the_branch_in_every_tab(connect, alice, branches):
    """What the page's script sends on connecting (`branch.switch`) stores the hit's branch:
    the member's other tabs follow, and the next message goes on it."""
    conversation, heron, follow_up, _ = branches
    this_tab = await connect(alice, conversation.pk)
    other_tab = await connect(alice, conversation.pk)
    await this_tab.send({"type": "branch.switch", "id": heron.pk})
    changed = await other_tab.receive_until(lambda f: f["type"] == "path.changed")
    assert [m["id"] for m in changed["messages"]] == [heron.pk, follow_up.pk]
    assert (await Conversation.objects.aget(pk=conversation.pk)).current_leaf_id == follow_up.pk


# --- the index itself ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_triggers_are_the_ones_the_migration_made():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's FTS5 triggers")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        stored = dict(cursor.fetchall())
    assert {name: stored.get(name) for name in search.SQLITE_TRIGGERS} == search.SQLITE_TRIGGERS


@pytest.mark.django_db(transaction=True)
def test_a_sqlite_table_rebuild_loses_the_triggers_and_migrate_puts_them_back(alice, kyoto):
    """Django rebuilds a SQLite table for many schema changes (a new column with a default, an
    altered field), which drops the table's triggers: `ensure_index` (after every migrate) puts
    them back and rebuilds the index, which missed writes meanwhile."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite table rebuilds")
    with connection.schema_editor() as editor:
        editor._remake_table(Message)
    chat(alice, "Unindexed", "A quokka smiles")  # the message is written with no trigger
    assert messages_found(alice, "quokka") == []

    search.ensure_index()
    assert messages_found(alice, "quokka") == ["A quokka smiles"]
    assert messages_found(alice, "lovely") == ["Kyoto in spring is lovely."]
    Message.objects.filter(content="A quokka smiles").update(content="A wombat smiles")
    assert messages_found(alice, "quokka") == []
    assert messages_found(alice, "wombat") == ["A wombat smiles"]

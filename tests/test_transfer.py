"""Export and import through the database and the pages (`chat/transfer.py`, issue 13).

Alice exports and imports; Bob is another member whose conversations, messages and private
characters must never show up in Alice's exports or be touched by her imports.

The sample files are tests/fixtures/chats/: where each one came from is in the docstring of
tests/test_chat_formats.py (SillyTavern's own shipped chats, LibreChat's ChatGPT and Open WebUI
import fixtures, Open WebUI's documentation, and hand-made files where no public one exists).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from characters.models import Character, Visibility
from chat import actions, transfer, transfer_views
from chat.formats import read_chat_file, read_ours, read_sillytavern
from chat.models import Conversation, Message
from serika_web.rendering import render_message
from tests.conftest import store_chain

FIXTURES = Path(__file__).parent / "fixtures" / "chats"
SAMPLES = sorted(
    str(path.relative_to(FIXTURES))
    for folder in ("serika", "sillytavern", "chatgpt", "openwebui")
    for path in (FIXTURES / folder).iterdir()
)
HOSTILE = sorted(path.name for path in (FIXTURES / "hostile").iterdir())


@pytest.fixture
def pending_dir(settings, tmp_path):
    """Uploads waiting at the second step go under DATA_DIR: a fresh one per test."""
    settings.DATA_DIR = tmp_path / "data"
    return tmp_path / "data" / "pending-chat-imports"


@pytest.fixture
def alice_client(client, alice, pending_dir):
    client.force_login(alice)
    return client


def branching_conversation(owner, character) -> Conversation:
    """A chat with two greetings, an edited question (two alternatives), two replies to the
    shown question (the second shown), usage, an edit in place, and its own settings."""
    character.alternate_greetings = ["Welcome back to the lighthouse."]
    character.creator = "Ann"
    character.character_version = "1.2"
    character.save()
    conversation = actions.start_conversation(owner, character)
    Conversation.objects.filter(pk=conversation.pk).update(
        title="The lighthouse", title_source="member", temperature=0.7, max_tokens=300
    )
    conversation.refresh_from_db()
    greeting = conversation.current_leaf
    store_chain(
        conversation,
        {"role": "user", "content": "Who keeps it?"},
        {"role": "assistant", "content": "Nobody.", "status": "stopped"},
    )
    question = Message.objects.create(
        conversation=conversation, parent=greeting, role="user", content="Who keeps it now?"
    )
    Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="**My aunt** does.",
        model="model-a",
        prompt_tokens=120,
        completion_tokens=5,
        finish_reason="stop",
    )
    shown = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content="The keeper is my aunt.\n\n```python\nprint('hi')\n```",
        model="model-b",
        prompt_tokens=121,
        completion_tokens=30,
        finish_reason="length",
        status="truncated",
        edited_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=shown)
    return Conversation.objects.for_user(owner).get(pk=conversation.pk)


def upload(client, data: bytes, name: str = "chats.json"):
    return client.post("/conversations/import/", {"file": SimpleUploadedFile(name, data)})


def download(response) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def newest_conversation(user) -> Conversation:
    return Conversation.objects.for_user(user).order_by("-pk").first()


# --- Round trips -------------------------------------------------------------------------------


def test_exporting_ours_and_importing_it_gives_an_equal_tree(alice_client, alice, character):
    original = branching_conversation(alice, character)
    response = alice_client.get(f"/conversations/{original.pk}/export/?format=json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="the-lighthouse.json"'
    data = download(response)

    imported = upload(alice_client, data, "the-lighthouse.json")

    copy = newest_conversation(alice)
    assert copy.pk != original.pk
    assert imported["Location"] == f"/conversations/{copy.pk}/"
    assert copy.character == character  # matched by name
    assert (copy.title, copy.title_source) == ("The lighthouse", "member")
    assert transfer.conversation_chat(copy) == transfer.conversation_chat(original)
    # The whole tree, not just the shown branch: 2 greetings, 2 questions, 3 replies.
    assert copy.messages.count() == original.messages.count() == 7
    # Exported again, it is the same file but for the export's own time.
    again = download(alice_client.get(f"/conversations/{copy.pk}/export/?format=json"))
    assert read_ours(again) == read_ours(data)


def test_a_sillytavern_export_imports_back_with_its_swipes_as_alternatives(
    alice_client, alice, character
):
    original = branching_conversation(alice, character)
    response = alice_client.get(f"/conversations/{original.pk}/export/?format=jsonl")
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="the-lighthouse.jsonl"'
    data = download(response)
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert lines[0]["character_name"] == "Serika"
    assert [len(line["swipes"]) for line in lines[1:]] == [2, 2, 2]
    assert lines[3]["swipe_id"] == 1

    upload(alice_client, data, "Serika - chat.jsonl")

    copy = newest_conversation(alice)
    chat = transfer.conversation_chat(copy)
    shown = chat.shown_path()
    before = transfer.conversation_chat(original)
    assert [(m.role, m.content) for m in shown] == [
        (m.role, m.content) for m in before.shown_path()
    ]
    # Each line's swipes are the shown message's alternatives again, in their order.
    siblings = chat.children()
    assert [[s.content for s in siblings[m.parent]] for m in shown] == [
        ["Hello alice, I am Serika!", "Welcome back to the lighthouse."],
        ["Who keeps it?", "Who keeps it now?"],
        ["**My aunt** does.", "The keeper is my aunt.\n\n```python\nprint('hi')\n```"],
    ]
    assert copy.current_leaf.content.startswith("The keeper is my aunt.")


# --- Every sample through the page -------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_each_sample_file_imports_through_the_page(alice_client, alice, character, name):
    data = (FIXTURES / name).read_bytes()
    _, chats = read_chat_file(data)

    response = upload(alice_client, data, Path(name).name)
    if response.status_code == 200:  # a character name no character has: the second step
        page = response.content.decode()
        assert "Choose characters" in page
        token = response.context["form"]["token"].value()
        choices = {f"character_{i}": "" for i in range(len(response.context["groups"]))}
        response = alice_client.post(
            "/conversations/import/characters/", {"token": token, **choices}
        )
    assert response.status_code == 302

    imported = list(Conversation.objects.for_user(alice).order_by("pk"))
    assert len(imported) == len(chats)
    for conversation, chat in zip(imported, chats, strict=True):
        assert conversation.owner == alice
        assert conversation.messages.count() == len(chat.messages)
        stored = transfer.conversation_chat(conversation)
        assert [(m.role, m.content) for m in stored.shown_path()] == [
            (m.role, m.content) for m in chat.shown_path()
        ]
        # Every one shows in the list, and opens at its shown branch.
        assert f'href="/conversations/{conversation.pk}/"' in (
            alice_client.get("/conversations/").content.decode()
            + alice_client.get("/conversations/?archived=1").content.decode()
        )
        page = alice_client.get(f"/conversations/{conversation.pk}/")
        assert [m.pk for m, _, _ in page.context["transcript"]] == [
            m.pk
            for m in Message.objects.filter(conversation=conversation).order_by("pk")
            if m.pk in _path_ids(conversation)
        ]


def _path_ids(conversation: Conversation) -> set[int]:
    ids, current = set(), conversation.current_leaf
    while current is not None:
        ids.add(current.pk)
        current = current.parent
    return ids


def test_a_sillytavern_chat_keeps_its_names_times_and_the_readers_notes(
    alice_client, alice, character
):
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    response = upload(alice_client, data, "Iris.jsonl")
    token = response.context["form"]["token"].value()
    page = alice_client.post(
        "/conversations/import/characters/",
        {"token": token, "character_0": str(character.pk)},
        follow=True,
    )
    conversation = newest_conversation(alice)
    assert conversation.character == character  # the member's choice
    # No title in a SillyTavern file: the character's name, which a later title may replace.
    assert (conversation.title, conversation.title_source) == ("Serika", "")
    expected = read_sillytavern(data)[0]
    assert conversation.created_at == expected.created_at  # the header's create_date
    notes = [str(m) for m in page.context["messages"]]
    assert notes[0] == "Imported “Serika” from a SillyTavern file."
    assert notes[1:] == expected.warnings


def test_a_chat_imported_without_a_character_is_titled_by_the_name_in_the_file(alice_client, alice):
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    alice_client.post("/conversations/import/characters/", {"token": token, "character_0": ""})
    conversation = newest_conversation(alice)
    assert conversation.character is None
    assert (conversation.title, conversation.title_source) == ("Iris", "")


def test_the_second_step_can_create_a_character_of_the_members_own(
    alice_client, alice, bob, settings
):
    from characters.models import Character

    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    alice_client.post("/conversations/import/characters/", {"token": token, "character_0": "new"})
    conversation = newest_conversation(alice)
    iris = conversation.character
    assert (iris.name, iris.owner, iris.visibility) == ("Iris", alice, "owner")
    assert not iris.is_visible_to(bob)
    assert conversation.title == "Iris"

    # The next Iris chat finds her without asking.
    upload(alice_client, data, "Iris.jsonl")
    assert newest_conversation(alice).character == iris

    # Where members may not make characters, the choice is not offered, and refused if sent.
    iris.delete()
    settings.CHARACTERS_MEMBERS_MAY_IMPORT = False
    response = upload(alice_client, data, "Iris.jsonl")
    assert "new" not in dict(response.context["form"].fields["character_0"].choices)
    token = response.context["form"]["token"].value()
    refused = alice_client.post(
        "/conversations/import/characters/", {"token": token, "character_0": "new"}
    )
    assert refused.status_code == 400
    assert not Character.objects.filter(name="Iris").exists()


# --- What a file may not do --------------------------------------------------------------------


def test_ids_owners_and_html_in_a_file_are_ignored(alice_client, alice, bob, character):
    bobs = actions.start_conversation(bob, character)
    bobs_greeting = bobs.current_leaf
    message = {
        "role": "assistant",
        "content": "<script>alert(1)</script> **hi** <img src=x onerror=alert(2)>",
        # Keys named after our columns are no part of the format: nothing reads them.
        "content_html": "<script>alert(3)</script>",
        "id": bobs_greeting.pk,
        "conversation": bobs.pk,
        "owner": bob.pk,
    }
    file = {
        "format": "serika-web-chats",
        "version": 1,
        "chats": [
            {
                "id": bobs.pk,
                "owner": bob.pk,
                "owner_id": bob.pk,
                "title": "Mine now",
                "messages": [
                    {**message, "key": str(bobs_greeting.pk), "parent": None},
                    {
                        "key": "2",
                        "parent": str(bobs_greeting.pk),
                        "role": "user",
                        "content": "<b>bold?</b>\nline",
                    },
                ],
            }
        ],
    }
    upload(alice_client, json.dumps(file).encode())

    mine = newest_conversation(alice)
    assert mine.owner == alice and mine.pk != bobs.pk
    reply, question = mine.messages.order_by("pk")
    assert reply.pk != bobs_greeting.pk and question.parent == reply
    assert reply.content_html == render_message("assistant", message["content"])
    assert "<script" not in reply.content_html and "<img" not in reply.content_html
    assert question.content_html == "&lt;b&gt;bold?&lt;/b&gt;<br>line"
    # Bob's conversation is as it was.
    bobs.refresh_from_db()
    assert bobs.owner == bob and bobs.messages.count() == 1
    assert bobs.current_leaf == bobs_greeting
    assert Message.objects.get(pk=bobs_greeting.pk).conversation == bobs


def test_a_chat_is_matched_only_to_characters_alice_may_see(alice_client, alice, bob):
    Character.objects.create(name="Iris", owner=bob, visibility=Visibility.OWNER)
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()

    response = upload(alice_client, data, "Iris.jsonl")

    # Bob's private Iris is no match, and no choice either.
    assert response.status_code == 200
    assert [name for name, _, _ in response.context["groups"]] == ["Iris"]
    assert "Iris" not in dict(response.context["form"].fields["character_0"].choices).values()
    assert not Conversation.objects.filter(owner=alice).exists()


def test_choosing_a_character_alice_may_not_see_is_refused_and_imports_nothing(
    alice_client, alice, bob
):
    private = Character.objects.create(name="Secret", owner=bob, visibility=Visibility.OWNER)
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()

    response = alice_client.post(
        "/conversations/import/characters/", {"token": token, "character_0": str(private.pk)}
    )

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Conversation.objects.filter(owner=alice).exists()
    assert not private.conversations.exists()


def test_a_character_matches_by_name_and_the_card_reference_picks_among_namesakes(alice):
    other = Character.objects.create(name="Iris", creator="Someone")
    ours = Character.objects.create(name="Iris", creator="Ann", character_version="1.2")
    older = Character.objects.create(name="  iris ", creator="Ann")
    characters = transfer.visible_characters(alice)
    chats = read_ours((FIXTURES / "serika" / "example-v1.json").read_bytes())
    assert chats[0].character.creator == "Ann"

    assert transfer.match_character(chats[0], characters) == ours
    ours.delete()
    assert transfer.match_character(chats[0], transfer.visible_characters(alice)) == older
    chats[0].character = None
    assert transfer.match_character(chats[0], transfer.visible_characters(alice)) == other


def test_an_upload_of_another_session_cannot_be_imported(alice_client, alice, client, bob):
    from django.test import Client

    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    bobs_client = Client()
    bobs_client.force_login(bob)

    response = bobs_client.post(
        "/conversations/import/characters/", {"token": token, "character_0": ""}, follow=True
    )

    assert "That upload is no longer here" in response.content.decode()
    assert not Conversation.objects.exists()


def test_cancel_at_the_second_step_imports_nothing_and_drops_the_upload(
    alice_client, alice, pending_dir
):
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    assert [p.name for p in pending_dir.iterdir()] == [f"{token}.upload"]

    response = alice_client.post(
        "/conversations/import/characters/", {"token": token, "cancel": "1"}, follow=True
    )

    assert "Nothing was imported." in response.content.decode()
    assert list(pending_dir.iterdir()) == []
    assert not Conversation.objects.exists()
    # Importing it (say, from a second tab) after that finds nothing.
    again = alice_client.post("/conversations/import/characters/", {"token": token}, follow=True)
    assert "That upload is no longer here" in again.content.decode()


def test_after_the_second_step_the_upload_is_gone_and_cannot_be_imported_twice(
    alice_client, alice, pending_dir
):
    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    token = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    for _ in range(2):
        alice_client.post("/conversations/import/characters/", {"token": token})
    assert Conversation.objects.filter(owner=alice).count() == 1
    assert list(pending_dir.iterdir()) == []


# --- Refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE)
def test_a_broken_or_hostile_file_is_refused_with_its_problem_and_nothing_is_stored(
    alice_client, alice, name
):
    data = (FIXTURES / "hostile" / name).read_bytes()
    with pytest.raises(Exception) as refusal:
        read_chat_file(data)

    response = upload(alice_client, data, name)

    assert response.status_code == 400
    assert str(refusal.value) in response.context["form"].errors["file"]
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_a_file_whose_last_chat_is_broken_imports_none_of_its_chats(alice_client, alice):
    good = {
        "title": "Fine",
        "messages": [{"key": "1", "parent": None, "role": "user", "content": "Hi"}],
    }
    bad = {
        "title": "Broken",
        "messages": [{"key": "1", "parent": "1", "role": "user", "content": "Me again"}],
    }
    file = {"format": "serika-web-chats", "version": 1, "chats": [good, good, bad]}

    response = upload(alice_client, json.dumps(file).encode())

    assert response.status_code == 400
    assert response.context["form"].errors["file"] == ["Chat 3: The message '1' is its own parent."]
    assert not Conversation.objects.exists()


def test_a_file_that_is_not_a_chat_export_is_named_so(alice_client, alice):
    response = upload(alice_client, b'{"spec": "chara_card_v2", "data": {}}', "card.json")
    assert response.status_code == 400
    assert "not a chat export we know" in response.content.decode()


def test_an_upload_too_large_is_refused_before_it_is_read(alice_client, alice, settings):
    settings.HTTP_MAX_BODY_BYTES = 164 * 1024  # files up to 100 KiB
    data = b'{"format": "serika-web-chats", "version": 1, "chats": []}' + b" " * 150_000

    response = upload(alice_client, data)
    assert response.status_code == 400
    assert "The file is larger than 0.1 MiB, the limit." in response.content.decode()

    # A body announced larger than that is refused before it is parsed at all.
    response = upload(alice_client, data + b" " * 300_000)
    assert response.status_code == 413
    assert "The file is larger than 0.1 MiB, the limit." in response.content.decode()
    assert not Conversation.objects.exists()


def test_long_or_many_imported_replies_are_shown_as_plain_text_not_markdown(
    alice_client, alice, monkeypatch
):
    file = {
        "format": "serika-web-chats",
        "version": 1,
        "chats": [
            {
                "messages": [
                    {
                        "key": "1",
                        "parent": None,
                        "role": "assistant",
                        "content": "**a** [b](https://example.com)\n\nc",
                    }
                ]
            }
        ],
    }
    upload(alice_client, json.dumps(file).encode())
    assert "<strong>a</strong>" in Message.objects.get().content_html

    # Past the time budget for one file's markdown (or the length of one message), the text
    # is escaped paragraphs: still safe, still readable, and linear to make.
    monkeypatch.setattr(transfer, "IMPORT_MARKDOWN_SECONDS", 0)
    upload(alice_client, json.dumps(file).encode())
    html = Message.objects.order_by("-pk").first().content_html
    assert html == "<p>**a** [b](https://example.com)</p><p>c</p>"


# --- Export: access and streaming --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json", "jsonl", "md"])
def test_bob_cannot_export_alices_conversation(client, alice, bob, character, kind):
    conversation = actions.start_conversation(alice, character)
    client.force_login(bob)
    assert client.get(f"/conversations/{conversation.pk}/export/?format={kind}").status_code == 404


def test_export_needs_a_login_and_a_known_format(client, alice, character):
    conversation = actions.start_conversation(alice, character)
    url = f"/conversations/{conversation.pk}/export/"
    assert client.get(url).status_code == 302
    assert client.get("/conversations/export/").status_code == 302
    client.force_login(alice)
    assert client.get(f"{url}?format=pdf").status_code == 400
    assert client.get("/conversations/export/?format=jsonl").status_code == 400


def test_exporting_everything_holds_all_of_alices_conversations_and_none_of_bobs(
    client, alice, bob, character
):
    for title in ("Alice one", "Alice two", "Alice archived"):
        conversation = actions.start_conversation(alice, character)
        Conversation.objects.filter(pk=conversation.pk).update(title=title)
    Conversation.objects.filter(title="Alice archived").update(archived_at=datetime.now(UTC))
    bobs = actions.start_conversation(bob, character)
    store_chain(bobs, {"role": "user", "content": "Bob's secret"})
    client.force_login(alice)

    response = client.get("/conversations/export/?format=json")
    assert response["Content-Disposition"].startswith('attachment; filename="serika-web-chats-')
    chats = read_ours(download(response))
    assert [chat.title for chat in chats] == ["Alice one", "Alice two", "Alice archived"]

    markdown = download(client.get("/conversations/export/?format=md")).decode()
    assert markdown.count("# Alice") == 3
    assert "Bob" not in markdown and "bob" not in markdown


def test_a_streaming_reply_is_exported_as_interrupted_with_its_text_so_far(
    client, alice, character
):
    conversation = actions.start_conversation(alice, character)
    store_chain(
        conversation,
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a", "status": "streaming"},
    )
    client.force_login(alice)
    chat = read_ours(download(client.get(f"/conversations/{conversation.pk}/export/")))[0]
    assert (chat.messages[-1].status, chat.messages[-1].content) == ("interrupted", "Once upon a")
    markdown = download(client.get(f"/conversations/{conversation.pk}/export/?format=md"))
    assert b"interrupted" in markdown


def _queries_to_export_everything(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/conversations/export/?format=json")
        download(response)
    return len(queries)


def test_exporting_everything_streams_with_one_query_per_conversation(client, alice, character):
    def add_conversations(count: int, replies: int) -> None:
        for _ in range(count):
            conversation = actions.start_conversation(alice, character)
            for i in range(replies):
                store_chain(
                    conversation,
                    {"role": "user", "content": f"Question {i}"},
                    {"role": "assistant", "content": f"Answer {i}"},
                )

    client.force_login(alice)
    add_conversations(3, replies=1)
    few_messages = _queries_to_export_everything(client)
    Conversation.objects.all().delete()
    add_conversations(3, replies=25)
    many_messages = _queries_to_export_everything(client)
    add_conversations(3, replies=25)
    twice_as_many = _queries_to_export_everything(client)

    assert many_messages == few_messages  # not per message...
    assert twice_as_many == many_messages + 3  # ...one per conversation
    assert len(read_ours(download(client.get("/conversations/export/")))) == 6


def test_the_export_file_name_is_safe(client, alice, character):
    conversation = actions.start_conversation(alice, character)
    client.force_login(alice)
    for title, name in [
        ('../../etc/passwd"\r\nX-Evil: 1', "etcpasswd-x-evil-1.md"),
        ("灯台", f"conversation-{conversation.pk}.md"),
    ]:
        Conversation.objects.filter(pk=conversation.pk).update(title=title)
        response = client.get(f"/conversations/{conversation.pk}/export/?format=md")
        assert response["Content-Disposition"] == f'attachment; filename="{name}"'


def test_the_chat_page_and_the_list_offer_export_and_import(client, alice, character):
    conversation = actions.start_conversation(alice, character)
    client.force_login(alice)
    chat_page = client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert f'action="/conversations/{conversation.pk}/export/"' in chat_page
    assert '<option value="jsonl">SillyTavern JSONL</option>' in chat_page
    list_page = client.get("/conversations/").content.decode()
    assert 'action="/conversations/export/"' in list_page
    assert 'href="/conversations/import/"' in list_page
    import_page = client.get("/conversations/import/")
    assert import_page.status_code == 200
    assert 'accept=".json,.jsonl"' in import_page.content.decode()


def test_expired_uploads_at_the_second_step_are_removed(alice_client, alice, pending_dir):
    import os
    import time

    data = (FIXTURES / "sillytavern" / "handmade-swipes.jsonl").read_bytes()
    old = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()
    stale = time.time() - transfer_views.PENDING_SECONDS - 1
    os.utime(pending_dir / f"{old}.upload", (stale, stale))

    new = upload(alice_client, data, "Iris.jsonl").context["form"]["token"].value()

    assert [p.name for p in pending_dir.iterdir()] == [f"{new}.upload"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("error:StreamingHttpResponse must consume")
async def test_under_asgi_everything_streams_a_chat_at_a_time(alice, character):
    """Served by daphne, Django would read a plain iterator whole before sending a byte."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    @sync_to_async
    def make_conversations() -> None:
        for _ in range(3):
            store_chain(
                actions.start_conversation(alice, character), {"role": "user", "content": "Hi"}
            )

    await make_conversations()
    client = AsyncClient()
    await client.aforce_login(alice)

    response = await client.get("/conversations/export/?format=json")

    assert isinstance(response, StreamingHttpResponse) and response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) == 2 + 3  # the envelope's head, a chunk per chat, its end
    assert len(read_ours(b"".join(chunks))) == 3

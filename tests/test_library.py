"""The persona library, a character's page, and members' own characters (import, create, edit,
export, delete), including the CHARACTERS_MEMBERS_MAY_IMPORT setting.

alice imports and edits her own characters; bob is another member who must never see them.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cardspec.cards import card_from_dict, card_to_v3_dict
from characters.models import Character, Visibility
from chat.models import Conversation
from tests.card_corpus import card_png, to_json_bytes, v2_card


def png_upload(card=None, name="aiko.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, card_png(chara=card or v2_card()), content_type="image/png")


@pytest.fixture
def aiko(alice, client):
    """Aiko, imported by alice through the member import page."""
    client.force_login(alice)
    response = client.post("/characters/import/", {"files": [png_upload()]})
    assert response.status_code == 302
    return Character.objects.get(name="Aiko")


# --- The library -------------------------------------------------------------------------------


def test_the_library_shows_avatars_names_tags_and_a_short_plain_description(client, alice, aiko):
    Character.objects.create(name="Long", description="word " * 200 + "**bold**")

    page = client.get("/characters/").content.decode()

    # Lists show the small thumbnail; the character page shows the full picture.
    assert f'src="/characters/{aiko.pk}/avatar-thumbnail.webp"' in page
    assert f'href="/characters/{aiko.pk}/"' in page
    assert ">library</" in page and ">female</" in page
    assert "Aiko is a cheerful librarian." in page  # {{char}} filled in, as people read it
    assert "**bold**" not in page  # truncated
    assert "word word" in page


def test_the_library_searches_by_name_and_filters_by_tag(client, alice, aiko, character):
    Character.objects.create(name="Bookworm", tags=["Library", "cozy"])

    def shown(**params) -> set[str]:
        page = client.get("/characters/", params).content.decode()
        return {name for name in ("Aiko", "Bookworm", "Serika") if f">{name}</a>" in page}

    assert shown() == {"Aiko", "Bookworm", "Serika"}
    assert shown(q="aik") == {"Aiko"}
    assert shown(tag="library") == {"Aiko", "Bookworm"}
    assert shown(tag="cozy") == {"Bookworm"}
    assert shown(tag="cozy", q="aik") == set()
    assert shown(q="nobody") == set()


def test_the_library_runs_a_constant_number_of_queries(
    client, alice, aiko, django_assert_num_queries
):
    def load() -> str:
        return client.get("/characters/").content.decode()

    load()  # warm the session
    # session, user, characters, tags, persona
    with django_assert_num_queries(5):
        assert load().count('class="character-card"') == 1
    Character.objects.bulk_create(
        Character(name=f"Extra {i}", tags=[f"t{i}"], description="x" * 500) for i in range(30)
    )
    with django_assert_num_queries(5):
        assert load().count('class="character-card"') == 31


def test_the_library_and_pages_need_a_login(client, aiko):
    client.logout()
    for url in ("/characters/", f"/characters/{aiko.pk}/", "/characters/import/", "/persona/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_the_top_bar_and_home_link_to_the_library(client, alice):
    client.force_login(alice)
    home = client.get("/").content.decode()
    assert home.count('href="/characters/"') == 2


# --- A character's page ------------------------------------------------------------------------


def test_a_character_page_shows_notes_as_markdown_and_greetings_as_text(client, alice):
    character = Character.objects.create(
        name="Mira",
        creator_notes="**Tip:** go slow. [guide](https://example.com/guide)",
        description="{{char}} <b>likes</b> tea.",
        first_mes="Hello {{user}} & welcome.",
        alternate_greetings=["*waves*", "Back <i>again</i>?"],
        tags=["cozy"],
    )
    client.force_login(alice)

    page = client.get(f"/characters/{character.pk}/").content.decode()

    assert "<strong>Tip:</strong>" in page
    assert 'href="https://example.com/guide" rel="noopener noreferrer nofollow"' in page
    assert "Mira &lt;b&gt;likes&lt;/b&gt; tea." in page
    assert "Hello alice &amp; welcome." in page
    assert "*waves*" in page
    assert "Back &lt;i&gt;again&lt;/i&gt;?" in page
    assert '<form method="post" action="/conversations/new/"' in page
    assert f'name="character" value="{character.pk}"' in page
    assert "Export PNG" not in page  # not hers


def test_start_chat_from_a_character_page_opens_the_chat_with_its_greeting(client, alice, aiko):
    response = client.post("/conversations/new/", {"character": aiko.pk})

    conversation = Conversation.objects.get(owner=alice)
    assert response["Location"] == f"/conversations/{conversation.pk}/"
    assert "You startled me, alice." in client.get(response["Location"]).content.decode()


# --- Members' own characters -------------------------------------------------------------------


def test_a_member_import_is_private_to_the_member(client, alice, bob, aiko):
    assert aiko.owner == alice
    assert aiko.visibility == Visibility.OWNER
    assert aiko.avatar
    client.force_login(bob)
    assert client.get(f"/characters/{aiko.pk}/").status_code == 404


def test_a_member_imports_several_cards_and_sees_each_result(client, alice):
    client.force_login(alice)
    files = [
        SimpleUploadedFile("a.json", to_json_bytes(v2_card()), content_type="application/json"),
        SimpleUploadedFile("broken.json", b"{nope", content_type="application/json"),
    ]

    page = client.post("/characters/import/", {"files": files}).content.decode()

    assert "imported as" in page
    assert "broken.json" in page and "JSON" in page
    assert Character.objects.filter(owner=alice, visibility=Visibility.OWNER).count() == 1


def test_members_cannot_import_create_or_edit_when_the_setting_forbids_it(
    client, settings, alice, aiko
):
    settings.CHARACTERS_MEMBERS_MAY_IMPORT = False

    assert client.get("/characters/import/").status_code == 403
    assert client.post("/characters/import/", {"files": [png_upload()]}).status_code == 403
    assert client.post("/characters/new/", {"name": "Nope"}).status_code == 403
    assert client.post(f"/characters/{aiko.pk}/edit/", {"name": "Renamed"}).status_code == 403
    assert list(Character.objects.values_list("name", flat=True)) == ["Aiko"]
    library = client.get("/characters/").content.decode()
    assert "Import a card" not in library
    page = client.get(f"/characters/{aiko.pk}/").content.decode()
    assert "Edit</a>" not in page and "Export PNG" in page  # what she has she still keeps
    assert client.post(f"/characters/{aiko.pk}/delete/").status_code == 302


def test_a_member_creates_a_private_character(client, alice, bob):
    client.force_login(alice)

    response = client.post(
        "/characters/new/",
        {
            "name": "Pip",
            "tags": "cozy, tea",
            "first_mes": "Hi!",
            "alternate_greetings": ["A", "B"],  # one box each
        },
    )

    pip = Character.objects.get(name="Pip")
    assert response["Location"] == f"/characters/{pip.pk}/"
    assert (pip.owner, pip.visibility) == (alice, Visibility.OWNER)
    assert pip.tags == ["cozy", "tea"]
    assert pip.alternate_greetings == ["A", "B"]


def test_a_member_edits_her_import_and_the_card_keeps_everything_else(client, alice, aiko):
    page = client.get(f"/characters/{aiko.pk}/edit/").content.decode()
    assert "female, library" in page
    data = {
        "name": "Aiko",
        "tags": "female, library",
        "description": aiko.description,
        "personality": "kind, curious, brave",
        "scenario": aiko.scenario,
        "first_mes": aiko.first_mes,
        "alternate_greetings": ["Welcome back!", "Shh, this is a library."],
        "mes_example": aiko.mes_example,
        "system_prompt": aiko.system_prompt,
        "post_history_instructions": aiko.post_history_instructions,
        "creator_notes": aiko.creator_notes,
    }

    assert client.post(f"/characters/{aiko.pk}/edit/", data).status_code == 302

    exported = client.get(f"/characters/{aiko.pk}/export.json")
    expected = v2_card()
    expected["data"]["personality"] = "kind, curious, brave"
    assert json.loads(exported.content) == card_to_v3_dict(card_from_dict(expected))


def test_an_owner_exports_her_character_as_png_or_json(client, alice, aiko):
    png = client.get(f"/characters/{aiko.pk}/export.png")
    assert png["Content-Type"] == "image/png"
    assert png["Content-Disposition"] == 'attachment; filename="aiko.png"'
    assert png.content.startswith(b"\x89PNG")
    as_json = client.get(f"/characters/{aiko.pk}/export.json")
    assert as_json["Content-Type"] == "application/json"
    assert json.loads(as_json.content)["data"]["name"] == "Aiko"


def test_an_owner_deletes_her_character_and_keeps_her_chats(client, alice, aiko):
    client.post("/conversations/new/", {"character": aiko.pk})

    response = client.post(f"/characters/{aiko.pk}/delete/")

    assert response["Location"] == "/characters/"
    assert not Character.objects.filter(pk=aiko.pk).exists()
    assert Conversation.objects.get(owner=alice).character is None


def test_members_cannot_see_site_characters_edit_or_export_links(client, alice, character):
    client.force_login(alice)
    page = client.get(f"/characters/{character.pk}/").content.decode()
    assert "Export PNG" not in page
    assert client.get(f"/characters/{character.pk}/edit/").status_code == 404
    assert client.get(f"/characters/{character.pk}/export.json").status_code == 404

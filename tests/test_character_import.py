"""Cards <-> Character rows: import, export, the admin pages and the management commands."""

from __future__ import annotations

import base64
import copy
import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from cardspec.cards import (
    CardError,
    card_from_dict,
    card_to_v2_dict,
    card_to_v3_dict,
    read_card_file,
)
from characters.import_export import export_card, import_card_file
from characters.models import Character
from chat import actions
from chat.models import Message
from tests.card_corpus import (
    card_png,
    charx_card,
    split_chunks,
    to_json_bytes,
    v1_card,
    v2_card,
    v3_card,
    with_bad_crc,
)
from tests.conftest import admin_change_form


def reloaded(character: Character) -> Character:
    return Character.objects.get(pk=character.pk)


def png_text_chunks(png: bytes) -> dict[str, dict]:
    """The card chunks of a PNG, decoded: {"chara": {...}, "ccv3": {...}}."""
    found = {}
    for kind, body in split_chunks(png):
        if kind == b"tEXt":
            keyword, _, value = body.partition(b"\x00")
            found[keyword.decode()] = json.loads(base64.b64decode(value))
    return found


# --- Lossless import and export ----------------------------------------------------------------


def test_a_v2_card_with_a_lorebook_and_unknown_extensions_exports_back_equal(db):
    original = v2_card()

    character, warnings = import_card_file(to_json_bytes(original), "aiko.json", None)

    assert warnings == []
    stored = reloaded(character)
    assert stored.character_book["entries"][1]["some_future_key"] == [1, 2, 3]
    assert stored.extensions["chub"] == {"id": 12345, "full_path": "someone/aiko"}
    assert card_to_v2_dict(stored.to_card()) == original


def test_a_v3_card_exports_back_equal_as_json(db):
    original = v3_card()

    character, _ = import_card_file(to_json_bytes(original), "aiko.json", None)
    content, content_type, filename = export_card(reloaded(character), "json")

    assert content_type == "application/json"
    assert filename == "aiko.json"
    assert json.loads(content) == original


def test_a_card_survives_a_trip_through_the_model_unchanged(db):
    for source in (v1_card(), v2_card(), v3_card()):
        card = card_from_dict(copy.deepcopy(source))
        character = Character.from_card(card, owner=None)
        character.save()

        assert reloaded(character).to_card() == card


def test_an_empty_nickname_stays_distinct_from_an_absent_one(db):
    with_empty = v3_card()
    with_empty["data"]["nickname"] = ""
    without = v3_card()
    without["data"].pop("nickname", None)

    for source in (with_empty, without):
        character, _ = import_card_file(to_json_bytes(source), "card.json", None)
        assert card_to_v3_dict(reloaded(character).to_card()) == source


def test_a_png_card_imports_with_its_avatar_and_exports_both_chunks(db):
    character, _ = import_card_file(card_png(chara=v2_card()), "aiko.png", None)
    stored = reloaded(character)

    assert stored.avatar.name.startswith("avatars/avatar")
    assert stored.avatar.name.endswith(".png")
    content, content_type, filename = export_card(stored, "png")

    assert content_type == "image/png"
    assert filename == "aiko.png"
    chunks = png_text_chunks(content)
    assert set(chunks) == {"chara", "ccv3"}
    assert chunks["chara"] == v2_card()
    assert chunks["ccv3"] == card_to_v3_dict(card_from_dict(v2_card()))
    again = read_card_file(content, "aiko.png")
    assert again.avatar_png is not None
    assert card_to_v3_dict(again.card) == chunks["ccv3"]


def test_a_charx_card_imports(db):
    character, _ = import_card_file(charx_card(v3_card()), "aiko.charx", None)

    assert reloaded(character).name == "Aiko"


def test_an_import_always_creates_a_new_character_owned_by_the_importer(db, alice):
    first, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", alice)
    second, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", alice)

    assert first.pk != second.pk
    assert reloaded(first).owner == alice
    assert Character.objects.filter(name="Aiko").count() == 2


def test_the_client_file_name_never_becomes_the_avatar_path(db):
    character, _ = import_card_file(card_png(chara=v2_card()), "../../etc/evil.sh", None)

    assert reloaded(character).avatar.name.startswith("avatars/avatar")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"spec": "chara_card_v2", "data": []}', "'data' must be an object"),
        (b'{"spec": "nonsense", "data": {}}', "Unknown card format"),
        (b"{not json", "JSON"),
        (with_bad_crc(card_png(chara=v2_card()), b"tEXt"), "checksum does not match"),
    ],
)
def test_a_broken_card_is_rejected_with_its_message_and_saves_nothing(db, data, message):
    with pytest.raises(CardError) as caught:
        import_card_file(data, "broken.json", None)

    assert message.lower() in str(caught.value).lower()
    assert Character.objects.count() == 0


def test_the_prompt_character_carries_every_prompt_field(db):
    character, _ = import_card_file(to_json_bytes(v3_card()), "aiko.json", None)
    prompt = reloaded(character).as_prompt_character()

    assert prompt.nickname == character.nickname
    assert prompt.post_history_instructions == "Keep replies short."
    assert prompt.mes_example.startswith("<START>")
    assert prompt.character_book["entries"]


# --- Chatting with an imported character -------------------------------------------------------


def test_the_greeting_of_an_imported_card_opens_a_new_chat(db, alice):
    character, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", alice)

    conversation = actions.start_conversation(alice, reloaded(character))

    greeting = conversation.current_leaf
    assert greeting.role == Message.Role.ASSISTANT
    assert greeting.content == "Oh! You startled me, alice."
    # The card's alternate greetings wait beside it as alternatives.
    assert Message.objects.filter(conversation=conversation, parent=None).count() == 1 + len(
        v2_card()["data"]["alternate_greetings"]
    )


# --- Admin -------------------------------------------------------------------------------------


def upload(name: str, content: bytes, content_type: str = "application/octet-stream"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type=content_type)


def test_the_admin_import_page_imports_a_good_card_and_reports_a_bad_one(admin_client, admin_user):
    url = reverse("admin:characters_character_import")
    assert admin_client.get(url).status_code == 200

    response = admin_client.post(
        url,
        {
            "files": [
                upload("aiko.png", card_png(chara=v2_card()), "image/png"),
                upload("broken.json", b'{"spec": "chara_card_v2", "data": 5}'),
            ]
        },
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "imported as" in page
    assert "The card&#x27;s &#x27;data&#x27; must be an object" in page
    character = Character.objects.get()
    assert character.name == "Aiko"
    assert character.owner == admin_user
    assert character.avatar


def test_the_admin_change_list_links_to_the_import_page(admin_client):
    response = admin_client.get(reverse("admin:characters_character_changelist"))

    assert reverse("admin:characters_character_import") in response.content.decode()


def test_the_admin_import_page_is_for_staff_only(client, alice):
    client.force_login(alice)

    response = client.get(reverse("admin:characters_character_import"))

    assert response.status_code == 302
    assert "/login/" in response["Location"]


def run_action(admin_client, action: str, characters) -> object:
    return admin_client.post(
        reverse("admin:characters_character_changelist"),
        {"action": action, "_selected_action": [character.pk for character in characters]},
    )


def test_the_png_export_action_downloads_a_card_png(admin_client):
    character, _ = import_card_file(card_png(chara=v2_card()), "aiko.png", None)

    response = run_action(admin_client, "export_png", [character])

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert 'filename="aiko.png"' in response["Content-Disposition"]
    assert set(png_text_chunks(response.content)) == {"chara", "ccv3"}


def test_exporting_several_characters_downloads_a_zip(admin_client):
    first, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", None)
    second, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", None)

    response = run_action(admin_client, "export_json", [first, second])

    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["aiko-2.json", "aiko.json"]
        assert json.loads(archive.read("aiko.json"))["data"]["name"] == "Aiko"


def test_the_duplicate_action_copies_every_field(admin_client):
    character, _ = import_card_file(card_png(chara=v2_card()), "aiko.png", None)

    run_action(admin_client, "duplicate", [character])

    copy_ = Character.objects.exclude(pk=character.pk).get()
    assert copy_.name == "Aiko (copy)"
    assert copy_.avatar.name != reloaded(character).avatar.name
    original_card = card_to_v3_dict(reloaded(character).to_card())
    copied_card = card_to_v3_dict(copy_.to_card())
    copied_card["data"]["name"] = copied_card["name"] = "Aiko"
    assert copied_card == original_card


def test_the_admin_searches_by_tag(admin_client):
    import_card_file(to_json_bytes(v2_card()), "aiko.json", None)
    Character.objects.create(name="Plain")

    response = admin_client.get(reverse("admin:characters_character_changelist"), {"q": "library"})

    page = response.content.decode()
    assert "Aiko" in page
    assert "Plain" not in page


def test_the_admin_change_form_saves_an_edit_without_losing_card_data(admin_client):
    character, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", None)
    assert admin_client.get(reverse("admin:characters_character_add")).status_code == 200
    url, data = admin_change_form(admin_client, character)
    data["personality"] = "kind, curious, brave"

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    expected = v2_card()
    expected["data"]["personality"] = "kind, curious, brave"
    expected["personality"] = "kind, curious, brave"
    assert card_to_v2_dict(reloaded(character).to_card()) == expected


def test_the_admin_change_form_refuses_malformed_card_json(admin_client):
    character, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", None)
    url, data = admin_change_form(admin_client, character)
    data["extensions"] = '["not", "an object"]'

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "extensions must be an object" in response.content.decode()
    assert reloaded(character).extensions == character.extensions


def too_big_lorebook() -> dict:
    """One entry more than a lorebook may have."""
    return {"entries": [{"keys": [f"k{i}"], "content": "x"} for i in range(1001)]}


def test_a_card_with_a_lorebook_over_the_limit_is_refused_and_saves_nothing(db, alice):
    card = v2_card()
    card["data"]["character_book"] = too_big_lorebook()

    with pytest.raises(CardError, match="The lorebook has 1,001 entries; at most 1,000"):
        import_card_file(to_json_bytes(card), "huge.json", alice)

    assert not Character.objects.exists()


def test_the_admin_change_form_refuses_a_lorebook_over_the_limit(admin_client, settings):
    # Room for the post itself (serika_web/settings.py must allow the editor's 14 fields per
    # entry; tests/test_character_editors.py checks it does).
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = None
    character, _ = import_card_file(to_json_bytes(v2_card()), "aiko.json", None)
    url, data = admin_change_form(admin_client, character)
    for index in range(2, 1001):
        data[f"character_book-{index}-original"] = ""
        data[f"character_book-{index}-keys"] = f"k{index}"

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "at most 1,000 are allowed" in response.content.decode()
    assert reloaded(character).character_book == character.character_book


# --- Management commands -----------------------------------------------------------------------


def test_the_import_and_export_commands_round_trip_a_card(db, tmp_path):
    source = tmp_path / "aiko.png"
    source.write_bytes(card_png(chara=v2_card()))
    out = io.StringIO()

    call_command("import_character", str(source), stdout=out)

    assert "imported 'Aiko'" in out.getvalue()
    target = tmp_path / "out.json"
    call_command("export_character", "Aiko", "--format", "json", "--out", str(target), stdout=out)
    assert json.loads(target.read_bytes()) == card_to_v3_dict(card_from_dict(v2_card()))
    call_command("export_character", "Aiko", "--format", "png", "--out", str(tmp_path), stdout=out)
    assert set(png_text_chunks((tmp_path / "aiko.png").read_bytes())) == {"chara", "ccv3"}


def test_the_import_command_reports_a_bad_file_and_imports_the_good_ones(db, tmp_path):
    good = tmp_path / "good.json"
    good.write_bytes(to_json_bytes(v2_card()))
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"spec": "nonsense"}')
    err = io.StringIO()

    with pytest.raises(CommandError, match="1 of 2"):
        call_command("import_character", str(bad), str(good), stdout=io.StringIO(), stderr=err)

    assert "Unknown card format" in err.getvalue()
    assert Character.objects.get().name == "Aiko"


def test_the_export_command_refuses_an_unknown_name(db, tmp_path):
    with pytest.raises(CommandError, match="No character named"):
        call_command("export_character", "Nobody", "--out", str(tmp_path))


@pytest.mark.parametrize(
    ("creation_date", "modification_date"),
    [(1719942734577, 1719942734), ("2023-5-12 @21h 32m 29s 228ms", "1683900749")],
)
def test_a_stored_cards_dates_and_empty_v3_fields_survive_the_png_export_exactly(
    db, creation_date, modification_date
):
    v3 = v3_card()
    del v3["data"]["nickname"]
    v3["data"]["group_only_greetings"] = []
    v3["data"]["creation_date"], v3["data"]["modification_date"] = creation_date, modification_date
    v2 = v2_card()
    v2["data"]["creation_date"], v2["data"]["modification_date"] = creation_date, modification_date

    from_v3, _ = import_card_file(to_json_bytes(v3), "v3.json", None)
    from_v2, _ = import_card_file(to_json_bytes(v2), "v2.json", None)
    v3_chunks = png_text_chunks(export_card(reloaded(from_v3), "png")[0])
    v2_chunks = png_text_chunks(export_card(reloaded(from_v2), "png")[0])

    assert json.loads(export_card(reloaded(from_v3), "json")[0]) == v3
    assert v3_chunks["ccv3"] == v3
    assert v3_chunks["chara"]["data"]["group_only_greetings"] == []
    assert "nickname" not in v3_chunks["chara"]["data"]
    assert v2_chunks["chara"] == v2
    for chunks in (v3_chunks, v2_chunks):
        for name in ("chara", "ccv3"):
            data = chunks[name]["data"]
            assert (data["creation_date"], data["modification_date"]) == (
                creation_date,
                modification_date,
            )

"""Cards survive our own files exactly (issue 14 items 3 and 5).

- PNG: export, import that file, export again: the same bytes, in both the `chara` and the `ccv3`
  chunk (and in the whole file), for every card built from what real cards showed, whether it
  first arrived as JSON, as a PNG with one or both chunks, or as a TavernAI WebP.
- JSON: the export keeps every value and type the card gave (dates, nulls, numbers as numbers,
  a numeric `character_version`, `secondary_keys` as one string).
- A PNG whose two chunks hold the same character gets no "two different versions" warning, also
  when RisuAI filled its V2 copy its own way; a real difference still gets one.

Everything goes through the real import and export (`import_card_file`, `export_card`) and the
database.
"""

from __future__ import annotations

import base64
import copy
import json
from io import BytesIO

import pytest
from PIL import Image

from cardspec.cards import card_from_dict, card_to_v2_dict, read_card_file
from cardspec.json_card import V1_FIELDS
from characters.import_export import export_card, import_card_file
from characters.models import Character
from tests.card_corpus import (
    card_png,
    issue_14_cards,
    photo_png,
    plain_png,
    risu_card,
    risu_v2_copy,
    split_chunks,
    tavernai_webp,
    to_json_bytes,
    v1_card,
    v2_card,
)

CARDS = issue_14_cards()
DIFFERENT = "two different versions"


def card_chunks(png: bytes) -> dict[str, bytes]:
    """The raw `tEXt` bodies of a PNG's card chunks, by keyword."""
    found = {}
    for kind, body in split_chunks(png):
        if kind == b"tEXt":
            keyword, _, value = body.partition(b"\0")
            found[keyword.decode("latin-1")] = value
    return found


def _decoded(png: bytes, keyword: str) -> bytes:
    return base64.b64decode(card_chunks(png)[keyword])


def canonical(value) -> str:
    """JSON text that tells 1 from 1.0 and true from 1, whatever the key order."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def imported(data: bytes, name: str) -> tuple[Character, list[str]]:
    character, warnings = import_card_file(data, name, None)
    return Character.objects.get(pk=character.pk), warnings


def source_file(name: str, arrives_as: str) -> tuple[bytes, str]:
    """The card as it arrives: its JSON; a PNG with the chunk its spec uses; a PNG with both
    chunks, the V2 one as a V3 app backfills it (decorators stripped; RisuAI's own way for the
    RisuAI card); or a WebP with the card in its EXIF, as TavernAI wrote them."""
    card = CARDS[name]
    if arrives_as == "json":
        return to_json_bytes(card), "card.json"
    if arrives_as == "tavernai webp":
        return tavernai_webp(card), "card.webp"
    if arrives_as == "png with both chunks":
        backfill = (
            risu_v2_copy(card) if name == "risu v3" else card_to_v2_dict(card_from_dict(card))
        )
        return card_png(chara=backfill, ccv3=card), "card.png"
    if card.get("spec") == "chara_card_v3":
        return card_png(ccv3=card), "card.png"
    return card_png(chara=card), "card.png"


# --- PNG: export, import, export ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(CARDS))
@pytest.mark.parametrize("arrives_as", ["json", "png", "png with both chunks", "tavernai webp"])
def test_a_png_export_imported_and_exported_again_is_byte_identical(db, name, arrives_as):
    first, _ = imported(*source_file(name, arrives_as))
    first_png = export_card(first, "png")[0]

    second, warnings = imported(first_png, "export.png")
    second_png = export_card(second, "png")[0]

    assert set(card_chunks(first_png)) == {"chara", "ccv3"}
    assert card_chunks(second_png) == card_chunks(first_png)
    assert second_png == first_png
    assert not any(DIFFERENT in warning for warning in warnings)
    assert export_card(second, "json")[0] == export_card(first, "json")[0]


@pytest.mark.parametrize("size", [(1400, 1400), (768, 1152)])
def test_a_big_picture_card_round_trips_to_the_same_file(db, size):
    risu = risu_card()
    source = card_png(chara=risu_v2_copy(risu), ccv3=risu, image=photo_png(size))
    first_png = export_card(imported(source, "risu.png")[0], "png")[0]

    second_png = export_card(imported(first_png, "export.png")[0], "png")[0]

    assert second_png == first_png


def test_a_big_tavernai_webp_card_becomes_a_png_card_that_round_trips_to_the_same_file(db):
    """TavernAI saved 400 x 600 WebP pictures; this one is bigger and photo-like (lossy)."""
    picture = Image.open(BytesIO(photo_png((768, 1152))))
    webp = tavernai_webp(v1_card(), picture=picture)
    first, _ = imported(webp, "aiko.webp")
    first_png = export_card(first, "png")[0]

    second_png = export_card(imported(first_png, "export.png")[0], "png")[0]

    assert Image.open(BytesIO(first_png)).size == (768, 1152)
    assert second_png == first_png


def test_a_v2_lorebook_card_keeps_use_regex_out_of_chara_through_every_round_trip(db):
    """The issue's case: `ccv3` needs `use_regex`, the V2 card had none, and must not gain it."""
    png = card_png(chara=v2_card())
    for _ in range(3):
        character, _ = imported(png, "aiko.png")
        png = export_card(character, "png")[0]
        chara = json.loads(_decoded(png, "chara"))
        ccv3 = json.loads(_decoded(png, "ccv3"))

        assert chara == v2_card()
        assert all(e["use_regex"] is False for e in ccv3["data"]["character_book"]["entries"])
        assert all("use_regex" not in e for e in chara["data"]["character_book"]["entries"])


def test_a_risu_png_exports_what_it_was_given_and_then_stays_stable(db):
    risu = risu_card()
    character, warnings = imported(card_png(chara=risu_v2_copy(risu), ccv3=risu), "risu.png")
    png = export_card(character, "png")[0]

    assert warnings == []
    assert canonical(json.loads(_decoded(png, "ccv3"))) == canonical(risu)
    chara = json.loads(_decoded(png, "chara"))
    assert "group_only_greetings" not in chara["data"]  # as Risu's own V2 copy
    assert chara["data"]["creation_date"] == 1719942734577
    again = export_card(imported(png, "again.png")[0], "png")[0]
    assert again == png


# --- JSON: every value and type as given -------------------------------------------------------


def _without_v3_additions(exported: dict, original: dict) -> dict:
    """The exported V3 data minus what V3 requires and the card lacked: `group_only_greetings`
    and each lorebook entry's `use_regex` (false)."""
    data = copy.deepcopy(exported["data"])
    if "group_only_greetings" not in original["data"]:
        assert data.pop("group_only_greetings") == []
    book = original["data"].get("character_book")
    for index, entry in enumerate((book or {}).get("entries", [])):
        if entry.get("use_regex") is None:
            added = data["character_book"]["entries"][index].pop("use_regex")
            assert added is False
            if "use_regex" in entry:
                data["character_book"]["entries"][index]["use_regex"] = None
    return data


@pytest.mark.parametrize("name", [name for name in CARDS if name != "v1"])
def test_a_json_export_keeps_every_value_and_type_the_card_gave(db, name):
    original = CARDS[name]
    character, _ = imported(to_json_bytes(original), "card.json")

    exported = json.loads(export_card(character, "json")[0])

    assert canonical(_without_v3_additions(exported, original)) == canonical(original["data"])
    outside = {key: value for key, value in exported.items() if key != "data"}
    expected = {key: value for key, value in original.items() if key != "data"}
    if original["spec"] != "chara_card_v3":  # a V2 card exports as V3 3.0
        expected.update(spec="chara_card_v3", spec_version="3.0")
    for key in V1_FIELDS:
        if isinstance(expected.get(key), str):  # SillyTavern's copies beside `data` follow it
            expected[key] = original["data"][key]
    assert canonical(outside) == canonical(expected)


@pytest.mark.parametrize("name", list(CARDS))
def test_a_json_export_imported_and_exported_again_is_the_same_card(db, name):
    first = export_card(imported(to_json_bytes(CARDS[name]), "card.json")[0], "json")[0]

    second = export_card(imported(first, "export.json")[0], "json")[0]

    # Equal in every value and type; not always in key order, which PostgreSQL's jsonb
    # columns do not keep (the PNG round trip above is byte-identical on both databases).
    assert canonical(json.loads(second)) == canonical(json.loads(first))


# --- The "two different versions" warning ------------------------------------------------------


def test_a_risu_png_gets_no_warning_for_how_risu_fills_its_v2_copy():
    risu = risu_card()

    result = read_card_file(card_png(chara=risu_v2_copy(risu), ccv3=risu))
    card = result.card

    assert result.warnings == []
    # The card is the V3 one: the source list kept, the entry text as Risu wrote it.
    assert card.extensions["risuai"]["source"] == risu["data"]["extensions"]["risuai"]["source"]
    assert card.character_book["entries"][0]["content"].endswith(" \n\n")


def _risu_png_with(change) -> bytes:
    risu = risu_card()
    copy_ = risu_v2_copy(risu)
    change(copy_["data"])
    return card_png(chara=copy_, ccv3=risu, image=plain_png())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda data: data.update(name="Someone else"), id="another name"),
        pytest.param(
            lambda data: data["character_book"]["entries"][1].update(content="Other lore."),
            id="other entry text",
        ),
        pytest.param(
            lambda data: data["character_book"]["entries"][2].update(
                content=" Lore number 2: different. "
            ),
            id="other entry text with blanks",
        ),
        pytest.param(
            lambda data: data["extensions"]["risuai"].update(source=["https://elsewhere"]),
            id="another risu source",
        ),
        pytest.param(
            lambda data: data["extensions"]["risuai"].pop("customScripts"),
            id="a risu setting missing",
        ),
        pytest.param(lambda data: data["character_book"]["entries"].pop(), id="an entry fewer"),
    ],
)
def test_a_real_difference_between_the_chunks_still_gets_the_warning(change):
    warnings = read_card_file(_risu_png_with(change)).warnings

    assert any(DIFFERENT in warning for warning in warnings)


def test_copies_that_differ_only_in_risus_ways_get_no_warning():
    def risu_ways(data):
        data["extensions"]["risuai"].pop("source", None)
        for entry in data["character_book"]["entries"]:
            entry["content"] = entry["content"].strip()

    assert not any(DIFFERENT in w for w in read_card_file(_risu_png_with(risu_ways)).warnings)

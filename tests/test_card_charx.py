"""CHARX cards: card.json and the icon from a zip, zip bombs, encrypted or broken archives."""

from __future__ import annotations

import json
import os
import zipfile
from io import BytesIO

import pytest
from PIL import Image

from cardspec.cards import (
    MAX_CARD_JSON_BYTES,
    MAX_CHARX_UNCOMPRESSED_BYTES,
    SPEC_V3,
    Card,
    CardError,
    card_from_dict,
    card_to_v3_dict,
    read_card_charx,
    write_card_charx,
)
from cardspec.charx import ICON_MEMBER
from tests.card_corpus import (
    PNG_SIGNATURE,
    card_png,
    charx,
    charx_card,
    encrypted_zip,
    plain_png,
    png_with_size,
    to_json_bytes,
    v2_card,
    v3_card,
    zip_bomb_member,
    zip_with_lying_size,
)


def test_a_charx_card_is_read_with_its_icon():
    warnings: list[str] = []

    card, icon = read_card_charx(charx_card(icon=plain_png((6, 6), (0, 0, 255))), warnings)

    assert card.spec == SPEC_V3
    assert card_to_v3_dict(card) == v3_card()
    assert icon.png.startswith(PNG_SIGNATURE)
    with Image.open(BytesIO(icon.png)) as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)
    assert warnings == []


def test_the_icon_is_re_encoded_without_its_text_chunks():
    _, icon = read_card_charx(charx_card(icon=card_png(chara=v2_card())))

    assert b"tEXt" not in icon.png


def test_a_charx_without_an_icon_file_gives_no_avatar_and_a_warning():
    warnings: list[str] = []

    card, icon = read_card_charx(charx_card(), warnings)

    assert card.name == "Aiko"
    assert icon is None
    assert any("not in the CHARX file" in warning for warning in warnings)


def test_a_card_without_assets_uses_an_icon_in_the_usual_place():
    card = v3_card()
    del card["data"]["assets"]

    _, icon = read_card_charx(charx_card(card, icon=plain_png()))

    assert icon is not None


def test_a_ccdefault_icon_gives_no_avatar_without_a_warning():
    card = v3_card()
    card["data"]["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    warnings: list[str] = []

    _, icon = read_card_charx(charx_card(card), warnings)

    assert icon is None
    assert warnings == []


def test_a_web_address_icon_is_not_downloaded():
    card = v3_card()
    card["data"]["assets"] = [
        {"type": "icon", "uri": "https://example.com/x.png", "name": "main", "ext": "png"}
    ]
    warnings: list[str] = []

    _, icon = read_card_charx(charx_card(card), warnings)

    assert icon is None
    assert any("web address" in warning for warning in warnings)


def test_a_broken_icon_is_skipped_with_a_warning():
    warnings: list[str] = []

    card, icon = read_card_charx(charx_card(icon=b"not an image"), warnings)

    assert card.name == "Aiko"
    assert icon is None
    assert any("icon could not be used" in warning for warning in warnings)


def test_other_assets_are_reported_as_not_imported():
    extra = {
        "assets/background/images/main.png": plain_png(),
        "assets/emotion/images/happy.png": plain_png(),
    }
    warnings: list[str] = []

    read_card_charx(charx_card(icon=plain_png(), extra=extra), warnings)

    assert any("2 other asset file(s)" in warning for warning in warnings)


def test_member_names_are_only_lookups_and_nothing_is_extracted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    card = v3_card()
    card["data"]["assets"] = [
        {"type": "icon", "uri": "embeded://../../evil.png", "name": "main", "ext": "png"}
    ]
    archive = charx({"card.json": to_json_bytes(card), "../../evil.png": plain_png()})

    _, icon = read_card_charx(archive)

    assert icon is not None
    assert os.listdir(tmp_path) == []
    assert not (tmp_path.parent / "evil.png").exists()


def test_a_v2_card_json_inside_a_charx_is_read():
    card, _ = read_card_charx(charx({"card.json": to_json_bytes(v2_card())}))

    assert card.name == "Aiko"


# --- Broken and hostile archives ---------------------------------------------------------------------


def test_a_zip_without_card_json_is_refused():
    with pytest.raises(CardError, match=r"no card\.json at its root"):
        read_card_charx(charx({"nested/card.json": b"{}", "readme.txt": b"hi"}))


def test_data_that_is_not_a_zip_is_refused():
    with pytest.raises(CardError, match="not a valid zip archive"):
        read_card_charx(b"PK\x03\x04" + b"\0" * 100)


def test_a_truncated_zip_is_refused():
    archive = charx_card(icon=plain_png())

    with pytest.raises(CardError):
        read_card_charx(archive[: len(archive) // 2])


def test_invalid_card_json_in_a_charx_is_refused():
    with pytest.raises(CardError, match="not valid JSON"):
        read_card_charx(charx({"card.json": b"{nope"}))


def test_a_zip_bomb_card_json_is_refused_before_unpacking():
    bomb = zip_bomb_member(size=MAX_CARD_JSON_BYTES + 3 * 1024 * 1024)
    assert len(bomb) < 100_000

    with pytest.raises(CardError, match=r"card\.json in the CHARX file is larger than 5 MiB"):
        read_card_charx(bomb)


def test_a_member_lying_about_a_small_size_is_cut_off_and_refused():
    with pytest.raises(CardError, match="damaged"):
        read_card_charx(zip_with_lying_size(to_json_bytes(v3_card()), 10))


def test_an_archive_declaring_a_huge_unpacked_size_is_refused():
    bomb = zip_with_lying_size(b"{}", MAX_CHARX_UNCOMPRESSED_BYTES + 1)

    with pytest.raises(CardError, match="would unpack to more than 100 MiB"):
        read_card_charx(bomb)


def test_an_encrypted_card_json_is_refused():
    with pytest.raises(CardError, match="encrypted"):
        read_card_charx(encrypted_zip(to_json_bytes(v3_card())))


def test_an_archive_with_too_many_members_is_refused(monkeypatch):
    monkeypatch.setattr("cardspec.charx.MAX_CHARX_MEMBERS", 3)

    with pytest.raises(CardError, match="more than 3 files"):
        read_card_charx(charx({f"assets/other/{i}.txt": b"x" for i in range(4)}))


def test_a_huge_icon_image_is_skipped_with_a_warning():
    warnings: list[str] = []

    _, icon = read_card_charx(charx_card(icon=png_with_size(60_000, 60_000)), warnings)

    assert icon is None
    assert any("too large" in warning for warning in warnings)


# --- Writing -----------------------------------------------------------------------------------------


def test_a_written_charx_reads_back_to_the_same_card_and_icon():
    card = card_from_dict(v3_card())

    archive = write_card_charx(card, plain_png((5, 5), (9, 9, 9)))
    read_back, icon = read_card_charx(archive)

    expected = card_to_v3_dict(card)
    expected["data"]["assets"][0]["uri"] = f"embeded://{ICON_MEMBER}"
    assert card_to_v3_dict(read_back) == expected
    with Image.open(BytesIO(icon.png)) as image:
        assert image.getpixel((0, 0)) == (9, 9, 9)


def test_a_written_charx_has_card_json_at_its_root_and_the_icon_under_assets():
    archive = write_card_charx(Card(name="Zip"))

    with zipfile.ZipFile(BytesIO(archive)) as opened:
        assert sorted(opened.namelist()) == ["assets/icon/images/main.png", "card.json"]
        card_json = json.loads(opened.read("card.json"))
    assert card_json["spec"] == "chara_card_v3"
    assert card_json["data"]["assets"] == [
        {
            "type": "icon",
            "uri": "embeded://assets/icon/images/main.png",
            "name": "main",
            "ext": "png",
        }
    ]


def test_writing_the_same_card_twice_gives_the_same_bytes():
    card = card_from_dict(v3_card())

    assert write_card_charx(card, plain_png()) == write_card_charx(card, plain_png())

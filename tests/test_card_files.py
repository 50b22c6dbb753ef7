"""`read_card_file`: one entry point that recognises PNG, JSON, CHARX and WebP by content."""

from __future__ import annotations

import pytest

from cardspec.cards import (
    MAX_CARD_FILE_BYTES,
    SPEC_V2,
    SPEC_V3,
    CardError,
    ImportedCard,
    read_card_file,
)
from tests.card_corpus import (
    card_png,
    charx_card,
    jpeg_image,
    plain_png,
    tavernai_webp,
    to_json_bytes,
    v1_card,
    v2_card,
    v3_card,
    webp_image,
)


def test_a_png_card_file_is_read_with_its_avatar():
    imported = read_card_file(card_png(chara=v2_card()), "aiko.png")

    assert isinstance(imported, ImportedCard)
    assert imported.source_format == "png"
    assert imported.card.spec == SPEC_V2
    assert imported.avatar_png is not None
    assert imported.warnings == []


def test_a_json_card_file_is_read_without_an_avatar():
    imported = read_card_file(to_json_bytes(v3_card()), "aiko.json")

    assert imported.source_format == "json"
    assert imported.card.spec == SPEC_V3
    assert imported.avatar_png is None


def test_a_v1_json_file_with_leading_whitespace_is_read():
    imported = read_card_file(b"\xef\xbb\xbf\r\n  " + to_json_bytes(v1_card()), "old.json")

    assert imported.card.name == "Aiko"


def test_a_charx_card_file_is_read_with_its_icon():
    imported = read_card_file(charx_card(icon=plain_png()), "aiko.charx")

    assert imported.source_format == "charx"
    assert imported.avatar_png is not None


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (card_png(chara=v2_card()), "aiko.json", "png"),
        (to_json_bytes(v2_card()), "aiko.png", "json"),
        (charx_card(), "aiko.png", "charx"),
        (charx_card(), "", "charx"),
        (to_json_bytes(v2_card()), "../../etc/passwd", "json"),
        (tavernai_webp(), "aiko.png", "webp"),
    ],
)
def test_the_format_is_recognised_by_content_not_by_name(data, filename, expected):
    assert read_card_file(data, filename).source_format == expected


def test_warnings_from_the_reader_reach_the_caller():
    other = v2_card()
    other["data"]["name"] = "Someone else"

    imported = read_card_file(card_png(chara=other, ccv3=v3_card()), "x.png")

    assert imported.card.name == "Aiko"
    assert len(imported.warnings) == 1


def test_an_empty_file_is_refused():
    with pytest.raises(CardError, match="The file is empty"):
        read_card_file(b"", "empty.png")


def test_an_oversized_file_is_refused_before_parsing():
    with pytest.raises(CardError, match="larger than 20 MiB"):
        read_card_file(b"{" + b" " * MAX_CARD_FILE_BYTES, "big.json")


def test_a_jpeg_is_refused_with_a_helpful_message():
    with pytest.raises(
        CardError, match="JPEG image; character cards must be PNG, JSON, CHARX or WebP files"
    ):
        read_card_file(jpeg_image(), "card.jpg")


def test_a_webp_card_file_is_read_with_its_avatar():
    imported = read_card_file(tavernai_webp(v1_card()), "aiko.webp")

    assert imported.source_format == "webp"
    assert imported.card.name == "Aiko"
    assert imported.avatar_png is not None


def test_a_webp_picture_without_a_card_is_refused_with_advice():
    with pytest.raises(
        CardError, match=r"WebP image holds no character data.*Export the card as PNG or JSON"
    ):
        read_card_file(webp_image(), "photo.webp")


def test_a_broken_webp_is_refused_as_a_damaged_webp():
    with pytest.raises(CardError, match="WebP file is damaged"):
        read_card_file(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 20, "card.webp")


def test_unknown_content_is_refused():
    with pytest.raises(CardError, match="not a character card"):
        read_card_file(b"hello, world", "notes.txt")


def test_a_json_named_file_without_json_is_refused_plainly():
    with pytest.raises(CardError, match=r"named \.json but does not contain a JSON object"):
        read_card_file(b"name: Aiko", "aiko.json")


def test_a_json_array_is_refused_as_not_an_object():
    with pytest.raises(CardError, match="must be a JSON object, not a list"):
        read_card_file(b"[1, 2]", "list.json")


def test_a_png_without_card_data_is_refused():
    with pytest.raises(CardError, match="no character data"):
        read_card_file(plain_png(), "photo.png")


def test_every_refusal_is_a_value_error():
    with pytest.raises(ValueError):
        read_card_file(b"\x00\x01", "x")

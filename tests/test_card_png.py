"""PNG cards: `chara`/`ccv3` text chunks, damaged and hostile PNGs, writing and avatar cleaning."""

from __future__ import annotations

import base64
import json
import zlib
from io import BytesIO

import pytest
from PIL import Image

from cardspec.cards import (
    MAX_CARD_FILE_BYTES,
    MAX_CARD_TEXT_CHUNK_CHARS,
    MAX_IMAGE_PIXELS,
    SPEC_V2,
    SPEC_V3,
    Card,
    CardError,
    card_from_dict,
    card_to_v2_dict,
    card_to_v3_dict,
    clean_avatar_image,
    default_avatar_png,
    read_card_png,
    write_card_png,
)
from cardspec.png import MAX_ANIMATION_PIXELS
from tests.card_corpus import (
    PNG_SIGNATURE,
    card_png,
    join_chunks,
    jpeg_image,
    plain_png,
    png_via_pillow_text,
    png_with_size,
    png_with_texts,
    split_chunks,
    to_base64,
    to_json_bytes,
    v1_card,
    v2_card,
    v3_card,
    with_bad_crc,
)


def _texts(png: bytes) -> list[bytes]:
    return [
        body.split(b"\0", 1)[0]
        for kind, body in split_chunks(png)
        if kind in (b"tEXt", b"zTXt", b"iTXt")
    ]


def _chunk_json(png: bytes, keyword: bytes) -> bytes:
    for kind, body in split_chunks(png):
        if kind == b"tEXt" and body.split(b"\0", 1)[0] == keyword:
            return base64.b64decode(body.split(b"\0", 1)[1])
    raise AssertionError(f"no {keyword!r} chunk")


# --- Reading -----------------------------------------------------------------------------------------


def test_a_png_with_only_a_chara_chunk_is_read_as_v2():
    warnings: list[str] = []
    card, avatar = read_card_png(card_png(chara=v2_card()), warnings)

    assert card.spec == SPEC_V2
    assert card_to_v2_dict(card) == v2_card()
    assert avatar.png.startswith(PNG_SIGNATURE)
    assert warnings == []


def test_a_png_with_only_a_ccv3_chunk_is_read_as_v3():
    card, _ = read_card_png(card_png(ccv3=v3_card()))

    assert card.spec == SPEC_V3
    assert card_to_v3_dict(card) == v3_card()


def test_ccv3_wins_when_both_chunks_hold_the_same_character_without_a_warning():
    warnings: list[str] = []
    # The V2 copy is what a V3 app backfills: same character, decorators stripped.
    backfilled = card_to_v2_dict(card_from_dict(v3_card()))

    card, _ = read_card_png(card_png(chara=backfilled, ccv3=v3_card()), warnings)

    assert card.spec == SPEC_V3
    assert card.character_book["entries"][0]["content"].startswith("@@depth 3")
    assert warnings == []


@pytest.mark.parametrize(("v2_version", "warned"), [("1.2", False), ("1.3", True)])
def test_a_version_given_as_a_number_in_one_copy_and_as_text_in_the_other_is_the_same(
    v2_version, warned
):
    v3 = v3_card()
    v3["data"]["character_version"] = 1.2
    v2 = card_to_v2_dict(card_from_dict(v3))
    v2["data"]["character_version"] = v2_version
    warnings: list[str] = []

    card, _ = read_card_png(card_png(chara=v2, ccv3=v3), warnings)

    assert card_to_v3_dict(card)["data"]["character_version"] == 1.2  # kept as given
    assert any("two different versions" in warning for warning in warnings) == warned


def test_ccv3_wins_when_the_chunks_differ_and_the_user_is_told():
    other = v2_card()
    other["data"]["name"] = "Somebody else"
    warnings: list[str] = []

    card, _ = read_card_png(card_png(chara=other, ccv3=v3_card()), warnings)

    assert card.name == "Aiko"
    assert card.spec == SPEC_V3
    assert any("two different versions" in warning for warning in warnings)


def test_ccv3_wins_whatever_the_chunk_order():
    other = v2_card()
    other["data"]["name"] = "Old"
    png = png_with_texts([("ccv3", to_base64(v3_card())), ("chara", to_base64(other))])

    assert read_card_png(png)[0].name == "Aiko"


@pytest.mark.parametrize("keyword", ["Chara", "CHARA", "cHaRa"])
def test_chara_keywords_match_case_insensitively(keyword):
    png = png_with_texts([(keyword, to_base64(v2_card()))])

    assert read_card_png(png)[0].name == "Aiko"


def test_ccv3_keywords_match_case_insensitively():
    png = png_with_texts([("chara", to_base64(v1_card())), ("CCV3", to_base64(v3_card()))])

    assert read_card_png(png)[0].spec == SPEC_V3


def test_a_card_chunk_before_the_image_data_is_read_too():
    png = card_png(chara=v2_card(), before_idat=True)

    assert read_card_png(png)[0].name == "Aiko"
    assert read_card_png(png_via_pillow_text("chara", to_base64(v1_card())))[0].name == "Aiko"


def test_a_v1_card_inside_a_chara_chunk_is_read():
    card, _ = read_card_png(card_png(chara=v1_card()))

    assert card.name == "Aiko"
    assert card.spec == "chara_card_v1"


def test_a_chunk_holding_raw_json_instead_of_base64_is_read():
    raw = to_json_bytes(v2_card()).decode("latin-1")

    assert read_card_png(png_with_texts([("chara", raw)]))[0].name == "Aiko"


def test_base64_with_line_breaks_or_without_padding_is_read():
    encoded = to_base64(v1_card()).rstrip("=")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))

    assert read_card_png(png_with_texts([("chara", wrapped)]))[0].name == "Aiko"


def test_a_broken_ccv3_chunk_falls_back_to_chara_with_a_warning():
    warnings: list[str] = []

    card, _ = read_card_png(card_png(chara=v2_card(), ccv3="!!not base64!!"), warnings)

    assert card.spec == SPEC_V2
    assert any(
        "'ccv3'" in warning and "V2 ('chara') data was used" in warning for warning in warnings
    )


def test_the_avatar_has_no_card_or_metadata_chunks():
    png = png_with_texts(
        [("Comment", "hello"), ("chara", to_base64(v2_card())), ("ccv3", to_base64(v3_card()))]
    )

    _, avatar = read_card_png(png)

    assert _texts(avatar.png) == []
    with Image.open(BytesIO(avatar.png)) as image:
        assert image.size == (8, 8)
        assert image.getpixel((0, 0))[:3] == (200, 30, 30)


def test_a_warning_mentions_embedded_asset_chunks_that_are_not_imported():
    png = png_with_texts([("ccv3", to_base64(v3_card())), ("chara-ext-asset_:0", "AAAA")])
    warnings: list[str] = []

    read_card_png(png, warnings)

    assert any("asset" in warning for warning in warnings)


def test_a_newer_spec_version_warning_reaches_the_caller():
    card = v3_card()
    card["spec_version"] = "3.2"
    warnings: list[str] = []

    read_card_png(card_png(ccv3=card), warnings)

    assert any("newer version" in warning for warning in warnings)


# --- Broken and hostile PNGs -----------------------------------------------------------------------


def test_a_png_without_a_card_chunk_is_refused():
    with pytest.raises(CardError, match=r"no character data \(no 'chara' or 'ccv3' text chunk\)"):
        read_card_png(png_with_texts([("Comment", "just a picture")]))


def test_bad_base64_is_refused():
    with pytest.raises(CardError, match="'chara' character data is not valid base64"):
        read_card_png(card_png(chara="@@@ not base64 @@@"))


def test_a_chunk_with_invalid_json_is_refused():
    bad = base64.b64encode(b'{"spec": "chara_card_v2", "data": {').decode()

    with pytest.raises(CardError, match="not valid JSON"):
        read_card_png(card_png(chara=bad))


def test_a_chunk_with_json_that_is_not_an_object_is_refused():
    with pytest.raises(CardError, match="must be a JSON object, not a list"):
        read_card_png(card_png(chara=[1, 2]))


def test_a_chunk_with_wrong_field_types_is_refused():
    card = v2_card()
    card["data"]["name"] = 5

    with pytest.raises(CardError, match="'name' must be text, not a number"):
        read_card_png(card_png(chara=card))


def test_a_bad_crc_in_the_card_chunk_after_the_image_data_is_refused():
    png = with_bad_crc(card_png(chara=v2_card()), b"tEXt")

    with pytest.raises(CardError, match="damaged"):
        read_card_png(png)


def test_a_bad_crc_in_a_chunk_before_the_image_data_is_refused():
    png = with_bad_crc(card_png(chara=v2_card(), before_idat=True), b"tEXt")

    with pytest.raises(CardError, match="damaged"):
        read_card_png(png)


def test_a_bad_crc_in_the_image_data_is_refused():
    with pytest.raises(CardError, match="damaged"):
        read_card_png(with_bad_crc(card_png(chara=v2_card()), b"IDAT"))


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_a_truncated_png_is_refused(keep):
    png = card_png(chara=v2_card(), image=plain_png((64, 64)))

    with pytest.raises(CardError, match=r"truncated|damaged"):
        read_card_png(png[: int(len(png) * keep)])


def test_a_png_cut_right_after_its_signature_is_refused():
    with pytest.raises(CardError):
        read_card_png(PNG_SIGNATURE + b"\0\0")


def test_data_that_is_not_a_png_is_refused():
    with pytest.raises(CardError, match="not a PNG"):
        read_card_png(jpeg_image())


def test_a_png_with_garbage_after_the_signature_is_refused():
    with pytest.raises(CardError, match=r"damaged|truncated"):
        read_card_png(PNG_SIGNATURE + b"garbage" * 100)


def test_an_image_over_our_pixel_limit_is_refused_before_decoding():
    side = int(MAX_IMAGE_PIXELS**0.5) + 1

    with pytest.raises(CardError, match="too large"):
        read_card_png(png_with_size(side, side))


def test_a_decompression_bomb_is_refused():
    with pytest.raises(CardError, match="too large"):
        read_card_png(png_with_size(100_000, 100_000))


def test_an_animated_png_with_too_many_frames_is_refused():
    frames = MAX_ANIMATION_PIXELS // (64 * 64) + 1
    buffer = BytesIO()
    first = Image.new("RGB", (64, 64), (0, 0, 0))
    others = [Image.new("RGB", (64, 64), (i % 256, 0, 0)) for i in range(1, 3)]
    first.save(buffer, format="PNG", save_all=True, append_images=others)
    png = buffer.getvalue()
    # Declare many more frames in acTL than there are: the declared count is what we budget.
    index = png.index(b"acTL")
    patched = bytearray(png)
    patched[index + 4 : index + 8] = frames.to_bytes(4, "big")
    chunks = split_chunks(bytes(patched))
    with pytest.raises(CardError, match="animation frames"):
        read_card_png(join_chunks(chunks))


def test_a_small_animated_card_png_is_read_from_its_first_frame():
    buffer = BytesIO()
    first = Image.new("RGB", (8, 8), (255, 0, 0))
    second = Image.new("RGB", (8, 8), (0, 255, 0))
    first.save(buffer, format="PNG", save_all=True, append_images=[second])
    png = png_with_texts([("chara", to_base64(v2_card()))], image=buffer.getvalue())

    card, avatar = read_card_png(png)

    assert card.name == "Aiko"
    with Image.open(BytesIO(avatar.png)) as image:
        assert image.getpixel((0, 0)) == (255, 0, 0)


def test_an_oversized_card_text_chunk_is_refused_before_decoding():
    huge = "A" * (MAX_CARD_TEXT_CHUNK_CHARS + 4)

    with pytest.raises(CardError, match="too large"):
        read_card_png(png_with_texts([("chara", huge)]))


@pytest.mark.parametrize("before_idat", [True, False])
def test_a_compressed_text_chunk_bomb_is_refused(before_idat):
    body = b"chara\0\0" + zlib.compress(b"A" * (8 * 1024 * 1024))
    chunks = split_chunks(plain_png())
    anchor = next(
        i for i, (kind, _) in enumerate(chunks) if kind == (b"IDAT" if before_idat else b"IEND")
    )
    png = join_chunks([*chunks[:anchor], (b"zTXt", body), *chunks[anchor:]])

    with pytest.raises(CardError, match="text chunks that are too large"):
        read_card_png(png)


def test_an_oversized_file_is_refused_before_parsing():
    with pytest.raises(CardError, match="larger than 20 MiB"):
        read_card_png(PNG_SIGNATURE + b"\0" * MAX_CARD_FILE_BYTES)


# --- Writing -----------------------------------------------------------------------------------------


def test_writing_puts_chara_then_ccv3_just_before_iend():
    png = write_card_png(card_from_dict(v3_card()), plain_png())

    kinds = [kind for kind, _ in split_chunks(png)]
    assert kinds[-3:] == [b"tEXt", b"tEXt", b"IEND"]
    assert kinds.index(b"IDAT") < len(kinds) - 3
    assert _texts(png) == [b"chara", b"ccv3"]


def test_written_chunks_hold_the_v2_and_v3_exports():
    card = card_from_dict(v3_card())
    png = write_card_png(card)

    assert json.loads(_chunk_json(png, b"chara")) == card_to_v2_dict(card)
    assert json.loads(_chunk_json(png, b"ccv3")) == card_to_v3_dict(card)


def test_a_written_card_reads_back_to_the_same_card():
    card = card_from_dict(v3_card())

    read_back, _ = read_card_png(write_card_png(card, plain_png()))

    assert card_to_v3_dict(read_back) == card_to_v3_dict(card)


def test_a_v2_card_written_and_read_back_stays_the_v2_card_it_was():
    card = card_from_dict(v2_card())

    read_back, _ = read_card_png(write_card_png(card))

    # The V2 copy shows that the V3 chunk's empty group-only greetings and `use_regex: false`
    # were added by the export, so the card read back is the V2 card itself.
    assert read_back == card
    assert card_to_v3_dict(read_back) == card_to_v3_dict(card)


def test_writing_over_an_existing_card_png_drops_its_old_card_chunks():
    old = card_png(chara=v1_card(), ccv3=v3_card())
    new_card = Card(name="Replacement")

    png = write_card_png(new_card, old)

    assert _texts(png) == [b"chara", b"ccv3"]
    assert read_card_png(png)[0].name == "Replacement"


def test_writing_without_an_image_uses_the_default_avatar():
    png = write_card_png(Card(name="No picture"))

    with Image.open(BytesIO(png)) as image:
        assert image.size == (400, 600)
    assert read_card_png(png)[0].name == "No picture"


def test_writing_from_a_jpeg_gives_a_png_without_its_exif():
    png = write_card_png(Card(name="x"), jpeg_image())

    with Image.open(BytesIO(png)) as image:
        assert image.format == "PNG"
        assert "exif" not in image.info
    assert b"secret description" not in png


def test_writing_with_an_image_that_is_not_an_image_is_refused():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'

    with pytest.raises(CardError, match="not an image we can read"):
        write_card_png(Card(name="x"), svg)


def test_cjk_and_emoji_survive_the_png_round_trip():
    card = Card(name="美咲 🌸", description="한국어\r\n日本語")

    read_back, _ = read_card_png(write_card_png(card))

    assert (read_back.name, read_back.description) == ("美咲 🌸", "한국어\r\n日本語")


# --- Avatar cleaning ---------------------------------------------------------------------------------


def test_clean_avatar_image_keeps_transparency_and_drops_text():
    png = png_with_texts([("Comment", "x")], image=plain_png((4, 4), (1, 2, 3, 0)))

    cleaned = clean_avatar_image(png)

    assert _texts(cleaned) == []
    with Image.open(BytesIO(cleaned)) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0)) == (1, 2, 3, 0)


def test_clean_avatar_image_refuses_pixel_bombs():
    with pytest.raises(CardError, match="too large"):
        clean_avatar_image(png_with_size(50_000, 50_000))


def test_the_default_avatar_is_a_plain_png():
    png = default_avatar_png()

    assert png.startswith(PNG_SIGNATURE)
    assert _texts(png) == []

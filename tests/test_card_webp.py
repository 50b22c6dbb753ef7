"""WebP cards as TavernAI wrote them: the card JSON in the EXIF UserComment, usually as a list of
byte values ("123,34,..."); their picture becomes the avatar like a PNG card's. Damaged, hostile
and card-less WebP files are refused with a message that says what to do."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image

from cardspec.cards import (
    MAX_CARD_FILE_BYTES,
    MAX_CARD_JSON_BYTES,
    SPEC_V1,
    SPEC_V2,
    SPEC_V3,
    CardError,
    read_card_file,
    read_card_webp,
)
from cardspec.images import is_clean_png
from characters.import_export import export_card, import_card_file
from characters.models import Character
from tests.card_corpus import (
    ASCII_CODE,
    byte_list,
    card_png,
    join_webp_chunks,
    tavernai_webp,
    tiff_with_user_comment,
    to_json_bytes,
    v1_card,
    v2_card,
    v3_card,
    webp_chunks,
    webp_image,
)

NO_CARD = "no character data"
EXPORT_ADVICE = "Export the card as PNG or JSON"


def decoded(png: bytes) -> Image.Image:
    image = Image.open(BytesIO(png))
    image.load()
    return image


def tavernai_card() -> dict:
    """What TavernAI's `charaFormatData` wrote: the V1 fields plus its own keys, non-ASCII text
    included (which is why it lists bytes: libvips keeps only ASCII in this tag)."""
    return {
        **v1_card(),
        "name": "美咲 🌸",
        "chat": "1684000000000",
        "create_date_local": 1684000000000,
        "add_date_local": 1684000000000,
        "edit_date_local": 1684000100000,
    }


# --- What real writers produced ----------------------------------------------------------------


def test_a_tavernai_webp_card_is_read_with_its_picture():
    card = tavernai_card()

    imported = read_card_file(tavernai_webp(card, size=(400, 600)), "Misaki.webp")

    assert imported.source_format == "webp"
    assert imported.card.spec == SPEC_V1
    assert imported.card.name == "美咲 🌸"
    assert imported.card.first_mes == card["first_mes"]
    assert imported.card.unknown_top_level["create_date_local"] == 1684000000000
    assert imported.warnings == []
    avatar = decoded(imported.avatar_png)
    assert (avatar.format, avatar.size) == ("PNG", (400, 600))
    assert is_clean_png(imported.avatar_png)  # no EXIF, no card text
    assert Image.open(BytesIO(imported.avatar.thumbnail)).format == "WEBP"


@pytest.mark.parametrize("in_exif_ifd", [False, True], ids=["ifd0", "exif ifd"])
@pytest.mark.parametrize("exif_header", [True, False], ids=["Exif header", "bare TIFF"])
def test_the_user_comment_is_found_in_ifd0_or_the_exif_ifd_with_or_without_the_exif_header(
    in_exif_ifd, exif_header
):
    webp = tavernai_webp(v1_card(), in_exif_ifd=in_exif_ifd, exif_header=exif_header)

    assert read_card_file(webp).card.name == "Aiko"


@pytest.mark.parametrize(
    "comment",
    [
        pytest.param(ASCII_CODE + to_json_bytes(v2_card()), id="json after the character code"),
        pytest.param(to_json_bytes(v2_card()), id="json without a character code"),
        pytest.param(b"\0" * 8 + to_json_bytes(v2_card()), id="json after an undefined code"),
        pytest.param(ASCII_CODE + byte_list(v2_card()) + b"\0", id="byte list ending in a NUL"),
        pytest.param(ASCII_CODE + b"239,187,191," + byte_list(v2_card()), id="byte list with BOM"),
    ],
)
def test_the_card_text_is_read_as_json_or_as_a_byte_list(comment):
    card = read_card_file(tavernai_webp(comment=comment)).card

    assert (card.spec, card.name) == (SPEC_V2, "Aiko")
    assert card.character_book["entries"][0]["keys"] == ["library", "books"]


@pytest.mark.parametrize(
    ("kind", "value"),
    [(2, to_json_bytes(v1_card()) + b"\0"), (1, to_json_bytes(v1_card()))],
    ids=["ascii tag", "byte tag"],
)
def test_a_user_comment_typed_as_text_or_bytes_is_read_too(kind, value):
    webp = webp_image(exif=tiff_with_user_comment(value, kind=kind))

    assert read_card_file(webp).card.name == "Aiko"


def test_a_v3_card_in_a_webp_is_read_as_v3():
    card = read_card_file(tavernai_webp(v3_card())).card

    assert (card.spec, card.nickname) == (SPEC_V3, "Ai")


def test_a_webp_card_is_recognised_by_content_not_by_name():
    assert read_card_file(tavernai_webp(), "aiko.png").source_format == "webp"
    assert read_card_file(tavernai_webp(), "").source_format == "webp"


def test_an_animated_webp_card_keeps_its_first_frame():
    frames = [Image.new("RGB", (6, 4), color) for color in ((250, 0, 0), (0, 0, 250))]
    buffer = BytesIO()
    exif = tiff_with_user_comment(ASCII_CODE + byte_list(v1_card()))
    frames[0].save(
        buffer, format="WEBP", save_all=True, append_images=frames[1:], exif=exif, lossless=True
    )

    avatar = decoded(read_card_file(buffer.getvalue()).avatar_png)

    assert avatar.size == (6, 4)
    assert avatar.convert("RGB").getpixel((0, 0)) == (250, 0, 0)


def test_a_webp_card_imports_as_a_character_and_exports_as_a_png_card(db):
    character, warnings = import_card_file(tavernai_webp(tavernai_card()), "Misaki.webp", None)

    character = Character.objects.get(pk=character.pk)
    assert (character.name, warnings) == ("美咲 🌸", [])
    assert decoded(character.avatar.read()).size == (8, 8)
    png = export_card(character, "png")[0]
    again, _ = import_card_file(png, "export.png", None)
    assert export_card(Character.objects.get(pk=again.pk), "png")[0] == png


# --- WebP images that are no card ---------------------------------------------------------------


@pytest.mark.parametrize(
    "webp",
    [
        pytest.param(webp_image(), id="no exif"),
        pytest.param(tavernai_webp(comment=ASCII_CODE + b"Shot on a phone"), id="a photo comment"),
        pytest.param(tavernai_webp(comment=ASCII_CODE + b"2023"), id="a number"),
        pytest.param(tavernai_webp(comment=ASCII_CODE), id="an empty comment"),
        pytest.param(
            webp_image(xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><chara>e30=</chara></x:xmpmeta>'),
            id="xmp only",
        ),
    ],
)
def test_a_webp_without_a_card_is_refused_with_advice(webp):
    with pytest.raises(CardError, match=NO_CARD) as refused:
        read_card_file(webp, "photo.webp")

    assert EXPORT_ADVICE in str(refused.value)
    assert "WebP" in str(refused.value)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "exif",
    [
        pytest.param(b"MM\0*\0\0\0\x08\xff\xff" + b"\x01" * 50, id="an IFD longer than the data"),
        pytest.param(b"II*\0\xff\xff\xff\x7f", id="IFD0 beyond the data"),
        pytest.param(
            b"MM\0*\0\0\0\x08\0\x01\x87\x69\0\x04\0\0\0\x01\x7f\xff\xff\xff\0\0\0\0",
            id="an Exif IFD beyond the data",
        ),
        pytest.param(b"not exif at all", id="no TIFF header"),
    ],
)
def test_damaged_exif_is_refused_as_a_card_error(exif):
    with pytest.raises(CardError):
        read_card_file(webp_image(exif=exif))


# --- Damaged and hostile WebP cards --------------------------------------------------------------


@pytest.mark.parametrize("listed", [b"123,34,999", b"123,,34", b"123,34,"])
def test_a_byte_list_with_a_gap_or_a_value_over_255_is_refused(listed):
    with pytest.raises(CardError, match="damaged"):
        read_card_file(tavernai_webp(comment=ASCII_CODE + listed))


def test_card_text_that_is_not_json_is_refused_like_any_card_json():
    with pytest.raises(CardError, match="not valid JSON"):
        read_card_file(tavernai_webp(comment=ASCII_CODE + b"{nope"))


def test_a_byte_list_longer_than_the_card_json_limit_is_refused_while_decoding():
    listed = b"123," + b",".join([b"32"] * (MAX_CARD_JSON_BYTES + 1)) + b",125"
    webp = tavernai_webp(comment=ASCII_CODE + listed)
    assert len(webp) <= MAX_CARD_FILE_BYTES  # the file itself is allowed

    with pytest.raises(CardError, match="larger than 5 MiB"):
        read_card_file(webp)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_webp_is_refused(keep):
    webp = tavernai_webp()

    with pytest.raises(CardError, match="WebP file is damaged"):
        read_card_file(webp[: int(len(webp) * keep)])


def test_a_webp_over_our_pixel_limit_is_refused_before_decoding():
    buffer = BytesIO()
    exif = tiff_with_user_comment(ASCII_CODE + byte_list(v1_card()))
    Image.new("RGB", (4100, 4100), (1, 2, 3)).save(buffer, format="WEBP", lossless=True, exif=exif)

    with pytest.raises(CardError, match="4100 x 4100 pixels, over the limit"):
        read_card_file(buffer.getvalue())


def test_a_webp_declaring_a_huge_canvas_is_refused():
    chunks = webp_chunks(tavernai_webp())
    assert chunks[0][0] == b"VP8X"
    header = bytearray(chunks[0][1])
    header[4:10] = (20_000 - 1).to_bytes(3, "little") * 2  # canvas width and height - 1

    with pytest.raises(CardError, match="too many pixels"):
        read_card_file(join_webp_chunks([(b"VP8X", bytes(header)), *chunks[1:]]))


def test_an_oversized_webp_is_refused_before_parsing():
    with pytest.raises(CardError, match="larger than 20 MiB"):
        read_card_webp(b"RIFF\0\0\0\0WEBP" + b"\0" * MAX_CARD_FILE_BYTES)


def test_data_that_is_not_a_webp_is_refused_by_the_webp_reader():
    with pytest.raises(CardError, match="not a WebP image"):
        read_card_webp(card_png(chara=v2_card()))

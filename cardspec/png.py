"""PNG character cards: reading the `chara`/`ccv3` text chunks and writing them.

Pillow parses the chunks and checks CRCs (at open for chunks before IDAT, and in `verify()` for
IDAT up to IEND, which `load()` alone does not check). The picture is decoded once, while the
text chunks after IDAT are read, and `cardspec.images` makes the clean avatar PNG and its
thumbnail from that one decoded frame.

Writing appends `chara` (V2) and `ccv3` (V3) just before IEND, as character card tools do, to a
PNG that holds nothing but the image: the stored avatar as it is (it is such a PNG already), or
any other picture after re-encoding it.

A PNG holding both chunks is read from `ccv3`; the `chara` copy is only compared with it (to
warn when the two describe different characters) and consulted for what our own V3 export adds
to a card that is not V3, so that export, import and export again give the same chunks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

from PIL import Image, PngImagePlugin

from cardspec.images import (
    AVATAR_FORMATS,
    MAX_ANIMATION_PIXELS,
    PNG_SIGNATURE,
    CleanAvatar,
    clean_avatar,
    clean_png,
    encode_png,
    image_errors,
    is_clean_png,
    open_image,
    png_with_text_chunks,
)
from cardspec.json_card import (
    V2_FIELDS,
    card_from_dict,
    card_to_v2_dict,
    card_to_v3_dict,
    dump_card_json,
    parse_card_json,
)
from cardspec.model import (
    DEFAULT_SPEC_VERSION,
    MAX_CARD_FILE_BYTES,
    MAX_CARD_TEXT_CHUNK_CHARS,
    SPEC_V2,
    SPEC_V3,
    Card,
    CardError,
    check_file_size,
    format_bytes,
)

__all__ = [
    "AVATAR_FORMATS",
    "CARD_KEYWORDS",
    "MAX_ANIMATION_PIXELS",
    "PNG_SIGNATURE",
    "clean_avatar_image",
    "default_avatar_png",
    "read_card_png",
    "write_card_png",
]

CARD_KEYWORDS = ("ccv3", "chara")
"""Text chunk keywords holding a card, in order of preference (V3 first)."""
DEFAULT_AVATAR_SIZE = (400, 600)
_DEFAULT_AVATAR_COLOR = (138, 143, 152)


def clean_avatar_image(data: bytes) -> bytes:
    """Validate an image (PNG, JPEG, WebP or GIF) with Pillow and return it as a clean PNG.

    The image is decoded under our pixel cap and re-encoded at its own size and mode, which drops
    all metadata and text chunks. Animated images keep their first frame. Raises `CardError`.
    """
    check_file_size(data, MAX_CARD_FILE_BYTES, "The image")
    return clean_png(data)


def default_avatar_png() -> bytes:
    """A plain avatar for cards without an image (the usual 400x600 card shape)."""
    return encode_png(Image.new("RGB", DEFAULT_AVATAR_SIZE, _DEFAULT_AVATAR_COLOR))


def _chunk_json(keyword: str, value: str) -> bytes:
    """Decode a card text chunk: base64 of UTF-8 JSON (raw JSON is accepted too)."""
    if len(value) > MAX_CARD_TEXT_CHUNK_CHARS:
        raise CardError(
            f"The PNG's '{keyword}' character data is too large (over "
            f"{format_bytes(MAX_CARD_TEXT_CHUNK_CHARS)})."
        )
    stripped = value.strip()
    if stripped.startswith("{"):
        # A few old tools stored the JSON itself. Pillow decodes tEXt as Latin-1 and iTXt as
        # UTF-8, so encode back the same way to recover the original bytes.
        encoding = "utf-8" if isinstance(value, PngImagePlugin.iTXt) else "latin-1"
        return stripped.encode(encoding, "replace")
    compact = "".join(stripped.split())
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"The PNG's '{keyword}' character data is not valid base64.") from None


def _comparable(card: Card) -> dict[str, Any]:
    """The V2 view of a card, for telling whether the `chara` and `ccv3` copies differ.

    V2 export strips decorators, so copies that differ only in those (common in V3 exports) or in
    `use_regex` compare equal, as do a `character_version` given as a number in one copy and as
    the same text in the other (`1.2` and `"1.2"`).
    """
    data = card_to_v2_dict(card)["data"]
    view = {name: data.get(name) for name in V2_FIELDS}
    view["character_version"] = card.character_version
    book = view.get("character_book")
    if book:
        for entry in book.get("entries", []):
            entry.pop("use_regex", None)
    return view


def _entries(book: Any) -> list[Any]:
    entries = book.get("entries") if isinstance(book, dict) else None
    return entries if isinstance(entries, list) else []


def _same_character(v2_card: Card, v3_card: Card) -> bool:
    """Whether the `chara` copy holds the same character as `ccv3`, as V2 readers see it.

    Besides what V3 export itself changes (decorators, `use_regex`), exactly the two ways RisuAI
    fills its V2 copy are forgiven: `extensions.risuai.source` left out, and lorebook entry text
    trimmed of the blanks around it. Any other difference counts, including a `source` that both
    copies hold with different values.
    """
    v2, v3 = _comparable(v2_card), _comparable(v3_card)
    v2_risu, v3_risu = v2["extensions"].get("risuai"), v3["extensions"].get("risuai")
    if isinstance(v2_risu, dict) and isinstance(v3_risu, dict) and "source" not in v2_risu:
        v3_risu.pop("source", None)
    v2_entries, v3_entries = _entries(v2["character_book"]), _entries(v3["character_book"])
    if len(v2_entries) == len(v3_entries):
        for v2_entry, v3_entry in zip(v2_entries, v3_entries, strict=True):
            if not (isinstance(v2_entry, dict) and isinstance(v3_entry, dict)):
                continue
            v2_text, v3_text = v2_entry.get("content"), v3_entry.get("content")
            if isinstance(v2_text, str) and isinstance(v3_text, str) and v2_text == v3_text.strip():
                v3_entry["content"] = v2_text
    return v2 == v3


def _follow_v2_copy(card: Card, v2_object: dict[str, Any], v2_card: Card) -> None:
    """Take off the V3 card what the V2 copy shows our V3 export added to a card lacking it.

    V3 export must write `use_regex` on every lorebook entry and `group_only_greetings`, and
    gives a card that was V1 or V2 the spec version 3.0. Read back from `ccv3` alone, such a card
    would export a different `chara` the second time (issue 14 item 3). So, when the V2 copy
    lacks them:

    - an entry whose `use_regex` is false in `ccv3` and absent (or null) in the same entry of
      `chara` gets it back absent (or null): V3 export writes false again, and all three mean
      the same;
    - a `ccv3` with spec version 3.0 and no group-only greetings, beside a V2 copy without the
      field, is kept as a V2 card (the spec only steers export: the V3 chunk still says 3.0,
      and the V2 chunk leaves the empty list out, as it did).

    Other apps' dual PNGs (RisuAI's V2 copy has neither field) read the same way; nothing a
    prompt or an export shows changes.
    """
    data = v2_object.get("data")
    if not isinstance(data, dict) or v2_card.spec != SPEC_V2:
        return
    v2_entries = _entries(data.get("character_book"))
    v3_entries = _entries(card.character_book)
    if len(v2_entries) == len(v3_entries):
        for v2_entry, v3_entry in zip(v2_entries, v3_entries, strict=True):
            if (
                isinstance(v2_entry, dict)
                and v2_entry.get("use_regex") is None
                and v3_entry.get("use_regex") is False
            ):
                if "use_regex" in v2_entry:
                    v3_entry["use_regex"] = None  # null, as the card gave it
                else:
                    del v3_entry["use_regex"]
    if (
        card.spec == SPEC_V3
        and card.spec_version == DEFAULT_SPEC_VERSION[SPEC_V3]
        and not card.group_only_greetings
        and "group_only_greetings" not in data
    ):
        card.spec, card.spec_version = SPEC_V2, v2_card.spec_version


def _card_from_texts(texts: dict[str, Any], warnings: list[str]) -> Card:
    found: dict[str, Any] = {}
    for key, value in texts.items():
        keyword = key.lower()
        if keyword in CARD_KEYWORDS and keyword not in found:
            found[keyword] = value
    if any(key.lower().startswith("chara-ext-asset_") for key in texts):
        warnings.append("The PNG embeds extra asset files; they were not imported.")
    if not found:
        raise CardError("The PNG has no character data (no 'chara' or 'ccv3' text chunk).")
    if "ccv3" not in found:
        return card_from_dict(parse_card_json(_chunk_json("chara", found["chara"])), warnings)
    v3_warnings: list[str] = []
    try:
        card = card_from_dict(parse_card_json(_chunk_json("ccv3", found["ccv3"])), v3_warnings)
    except CardError as error:
        if "chara" not in found:
            raise
        card = card_from_dict(parse_card_json(_chunk_json("chara", found["chara"])), warnings)
        warnings.append(
            f"The V3 ('ccv3') character data could not be read ({error}); the V2 ('chara') "
            "data was used instead."
        )
        return card
    warnings.extend(v3_warnings)
    if "chara" in found:
        # The V2 copy only matters for telling the user that the two differ, and for undoing
        # what our V3 export adds; a V2 copy we cannot read changes nothing.
        with contextlib.suppress(CardError):
            v2_object = parse_card_json(_chunk_json("chara", found["chara"]))
            v2_card = card_from_dict(v2_object)
            if not _same_character(v2_card, card):
                warnings.append(
                    "The PNG holds two different versions of this character ('ccv3' and "
                    "'chara'); the V3 ('ccv3') version was used."
                )
            _follow_v2_copy(card, v2_object, v2_card)
    return card


def read_card_png(data: bytes, warnings: list[str] | None = None) -> tuple[Card, CleanAvatar]:
    """Read a PNG character card.

    Returns the card (from `ccv3` when present, else `chara`; keywords match case-insensitively)
    and its picture, decoded once: re-encoded as a PNG without any card or metadata chunks, at
    its own size and mode, plus a list thumbnail. Raises `CardError` for damaged PNGs (bad CRC,
    truncated), pixel bombs, oversized chunks and PNGs without a card.
    """
    if warnings is None:
        warnings = []
    check_file_size(data)
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("The file is not a PNG image.")
    with image_errors("The PNG file", data):
        image = open_image(data, "The PNG image", ("PNG",))
        with image:
            texts = dict(image.text)  # decodes the image, so chunks after IDAT are read too
            avatar = clean_avatar(image)
    card = _card_from_texts(texts, warnings)
    return card, avatar


def write_card_png(
    card: Card, image: bytes | None = None, *, image_is_clean: bool = False
) -> bytes:
    """Write a card PNG: the picture, then `chara` (V2) and `ccv3` (V3) just before IEND.

    `image` may be PNG, JPEG, WebP or GIF (an existing card PNG is fine: its old card chunks are
    dropped by re-encoding); None gives the default avatar. With `image_is_clean` (a stored
    avatar, which import and the avatar forms wrote through `images.encode_png`), a PNG that
    indeed holds only image chunks gets the card chunks appended without being decoded, so the
    export carries exactly the stored picture; anything else is re-encoded.
    """
    chara = base64.b64encode(dump_card_json(card_to_v2_dict(card)))
    ccv3 = base64.b64encode(dump_card_json(card_to_v3_dict(card)))
    chunks = (("chara", chara), ("ccv3", ccv3))
    if image is None:
        return png_with_text_chunks(default_avatar_png(), chunks)
    if image_is_clean and is_clean_png(image):
        return png_with_text_chunks(image, chunks)
    return png_with_text_chunks(clean_avatar_image(image), chunks)

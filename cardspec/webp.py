"""WebP character cards, as TavernAI wrote them: the card JSON in the EXIF `UserComment` tag.

TavernAI (TavernAI/TavernAI, whose `characterFormat` setting defaulted to "webp") saved every
character as a WebP picture (`server.js`, `charaWrite`: sharp's
``withMetadata({exif: {IFD0: {UserComment: ...}}})``), so many older cards are WebP files. What it
stores, and what we read:

- the tag sits in IFD0 (libvips puts it where sharp names it), not in the Exif IFD where EXIF
  defines it; tools built on Pillow and the like write it there, and TavernAI's own reader learnt
  to read both (TavernAI-v1 pull request 110). We look in IFD0, then in the Exif IFD;
- the value starts with EXIF's 8-byte character code (libvips writes ``ASCII\\0\\0\\0``);
- after it comes the card JSON, not base64: either the JSON itself, or, as TavernAI writes it,
  its UTF-8 bytes as decimal numbers joined by commas (``123,34,110,...``: a JavaScript
  `Uint8Array` turned into a string, because libvips keeps only ASCII in this tag). SillyTavern's
  reader (``src/character-card-parser.js`` until WebP support was dropped) and TavernAI's try the
  JSON first, then the byte list; so do we.

No card tool writes a card into XMP or a RIFF chunk of its own, and the V1 spec leaves WebP out
("not covered by the spec due to technical ambiguities"), so nothing else is read. We never
write WebP cards: export is PNG or JSON, which every app reads.

The picture gets the same care as a PNG card's: opened under the same caps (file size, pixel count
before anything is decoded), decoded once, and re-encoded as a clean PNG plus its list thumbnail
(`cardspec.images`). The EXIF text is bounded by the file-size cap, and the byte list is decoded
in slices, stopping as soon as it passes the card JSON limit.
"""

from __future__ import annotations

import struct
from typing import Any

from PIL import ExifTags, Image

from cardspec.images import CleanAvatar, clean_avatar, image_errors, open_image
from cardspec.json_card import card_from_dict, parse_card_json
from cardspec.model import MAX_CARD_JSON_BYTES, Card, CardError, check_file_size, format_bytes

__all__ = ["NO_WEBP_CARD", "is_webp", "read_card_webp"]

NO_WEBP_CARD = (
    "This WebP image holds no character data (WebP cards keep it in the EXIF UserComment, as "
    "TavernAI wrote them). Export the card as PNG or JSON and import that file."
)
# EXIF's character codes at the start of a UserComment value ("undefined" is eight NULs).
_CHARACTER_CODES = (b"ASCII\0\0\0", b"UNICODE\0", b"JIS\0\0\0\0\0", b"\0" * 8)
_UTF8_BOM = b"\xef\xbb\xbf"
_BYTE_LIST_CHARS = b"0123456789,"
# A listed JSON object starts with "{" (123), maybe after a BOM; a comment like "2023" is no card.
_LISTED_BRACE = (b"123,", b"239,187,191,123,")
# The byte list is decoded this many characters at a time (a few MB of small objects at most).
_SLICE_CHARS = 1 << 20


def is_webp(data: bytes) -> bool:
    """Whether `data` starts like a WebP file (a RIFF container of type WEBP)."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _user_comments(image: Image.Image) -> list[Any]:
    """The UserComment values of the image's EXIF: IFD0's first (TavernAI), then the Exif IFD's."""
    try:
        exif = image.getexif()
        return [
            value
            for value in (
                exif.get(ExifTags.Base.UserComment),
                exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment),
            )
            if value is not None
        ]
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, EOFError, struct.error):
        raise CardError(
            "The WebP image's EXIF data is damaged, so its character data cannot be read."
        ) from None


def _comment_bytes(value: Any) -> bytes | None:
    """A UserComment value as Pillow gives it (bytes for an undefined- or byte-typed tag, text
    for an ASCII-typed one) back as the bytes in the file, without the character code."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = value.encode("latin-1", "replace")  # Pillow decoded them as Latin-1
    else:
        return None
    for code in _CHARACTER_CODES:
        if raw.startswith(code):
            return raw[len(code) :]
    return raw


def _from_byte_list(listed: bytes) -> bytes:
    """TavernAI's "123,34,110,..." back into the bytes it lists."""
    decoded = bytearray()
    start = 0
    while start < len(listed):
        end = listed.find(b",", start + _SLICE_CHARS)
        end = len(listed) if end == -1 else end
        try:
            decoded += bytes(map(int, listed[start:end].split(b",")))
        except ValueError:  # an empty item or a number over 255
            raise CardError(
                "The WebP's character data is damaged (a list of byte values with a gap or a "
                "value over 255)."
            ) from None
        if len(decoded) > MAX_CARD_JSON_BYTES:
            raise CardError(
                f"The character data is larger than {format_bytes(MAX_CARD_JSON_BYTES)}, the limit."
            )
        start = end + 1
    return bytes(decoded)


def _card_json(value: Any) -> bytes | None:
    """The card JSON a UserComment value holds, or None when it holds no card."""
    raw = _comment_bytes(value)
    if raw is None:
        return None
    raw = raw.strip(b"\0 \t\r\n")
    if raw.removeprefix(_UTF8_BOM).startswith(b"{"):
        return raw
    if raw.startswith(_LISTED_BRACE) and not raw.translate(None, _BYTE_LIST_CHARS):
        return _from_byte_list(raw)
    return None


def read_card_webp(data: bytes, warnings: list[str] | None = None) -> tuple[Card, CleanAvatar]:
    """Read a WebP character card (see the module docstring for the format).

    Returns the card and its picture, decoded once: a clean PNG at its own size and mode, without
    the EXIF, and its list thumbnail. Raises `CardError` for damaged files, pixel bombs, oversized
    data and WebP images without a card (`NO_WEBP_CARD`).
    """
    if warnings is None:
        warnings = []
    check_file_size(data)
    if not is_webp(data):
        raise CardError("The file is not a WebP image.")
    with image_errors("The WebP file", data):
        image = open_image(data, "The WebP image", ("WEBP",))
        with image:
            # The card is looked for before the picture is decoded: a WebP without one is
            # refused at the cost of reading its headers.
            found = (_card_json(value) for value in _user_comments(image))
            card_json = next((found_json for found_json in found if found_json is not None), None)
            if card_json is None:
                raise CardError(NO_WEBP_CARD)
            avatar = clean_avatar(image)
    return card_from_dict(parse_card_json(card_json), warnings), avatar

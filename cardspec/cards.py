"""Character cards: the one place the rest of the app imports from.

`read_card_file()` reads an uploaded PNG, JSON, CHARX or (TavernAI's) WebP card (recognised by
content, not by name); `card_to_v2_dict()`, `card_to_v3_dict()`, `write_card_png()` and
`write_card_charx()` export. The work is done in small Django-free modules:

- `model`: the `Card` dataclass, `CardError`, spec names and size limits;
- `values`: type checks for JSON values, with end-user messages;
- `lorebook`: lorebook normalisation and `strip_decorators()`;
- `json_card`: V1/V2/V3 objects <-> `Card`;
- `png`: PNG text chunks;
- `charx`: CHARX zips;
- `webp`: WebP cards as TavernAI wrote them (read only);
- `images`: avatar pictures, decoded once and re-encoded, and their list thumbnails (Pillow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cardspec.charx import read_card_charx, write_card_charx
from cardspec.images import CleanAvatar
from cardspec.json_card import (
    V2_FIELDS,
    card_from_dict,
    card_from_json,
    card_to_v2_dict,
    card_to_v3_dict,
    dump_card_json,
)
from cardspec.lorebook import normalize_character_book, strip_decorators
from cardspec.model import (
    EXTENSION_NAMESPACE,
    MAX_CARD_FILE_BYTES,
    MAX_CARD_JSON_BYTES,
    MAX_CARD_TEXT_CHUNK_CHARS,
    MAX_CHARX_MEMBERS,
    MAX_CHARX_UNCOMPRESSED_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_JSON_NESTING,
    SPEC_V1,
    SPEC_V2,
    SPEC_V3,
    Card,
    CardError,
    check_file_size,
    extension_key,
)
from cardspec.png import (
    PNG_SIGNATURE,
    clean_avatar_image,
    default_avatar_png,
    read_card_png,
    write_card_png,
)
from cardspec.webp import is_webp, read_card_webp

__all__ = [
    "EXTENSION_NAMESPACE",
    "MAX_CARD_FILE_BYTES",
    "MAX_CARD_JSON_BYTES",
    "MAX_CARD_TEXT_CHUNK_CHARS",
    "MAX_CHARX_MEMBERS",
    "MAX_CHARX_UNCOMPRESSED_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_JSON_NESTING",
    "SPEC_V1",
    "SPEC_V2",
    "SPEC_V3",
    "V2_FIELDS",
    "Card",
    "CardError",
    "CleanAvatar",
    "ImportedCard",
    "card_from_dict",
    "card_from_json",
    "card_to_v2_dict",
    "card_to_v3_dict",
    "clean_avatar_image",
    "default_avatar_png",
    "dump_card_json",
    "extension_key",
    "normalize_character_book",
    "read_card_charx",
    "read_card_file",
    "read_card_png",
    "read_card_webp",
    "strip_decorators",
    "write_card_charx",
    "write_card_png",
]

CardFormat = Literal["png", "json", "charx", "webp"]
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_OTHER_IMAGES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
)


@dataclass
class ImportedCard:
    """The result of reading an uploaded card file."""

    card: Card
    avatar: CleanAvatar | None
    """The card's picture, decoded once: a clean PNG at its own size and mode, and its list
    thumbnail (a WebP card's picture too). None for JSON cards and CHARX files without an
    icon."""
    warnings: list[str] = field(default_factory=list)
    """Notes for the user: newer spec version, differing PNG copies, assets not imported, ..."""
    source_format: CardFormat = "json"

    @property
    def avatar_png(self) -> bytes | None:
        """The clean avatar PNG, or None."""
        return self.avatar.png if self.avatar is not None else None


def _looks_like_json(data: bytes) -> bool:
    start = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    return start[:1] in (b"{", b"[")


def _unknown_format(data: bytes, filename: str) -> CardError:
    kind = next((name for magic, name in _OTHER_IMAGES if data.startswith(magic)), None)
    if kind is not None:
        return CardError(
            f"This file is {kind}; character cards must be PNG, JSON, CHARX or WebP files."
        )
    if filename.lower().endswith(".json"):
        return CardError("The file is named .json but does not contain a JSON object.")
    return CardError(
        "This file is not a character card (expected a PNG, JSON, CHARX or WebP file)."
    )


def read_card_file(data: bytes, filename: str = "") -> ImportedCard:
    """Read an uploaded card file of any supported kind.

    The format is recognised from the content (PNG signature, zip signature, RIFF/WEBP header,
    JSON object), so a misnamed file still works; `filename` only improves the error message and
    never becomes a path. Raises `CardError` (a ValueError) with an end-user message for anything
    unreadable.
    """
    if not data:
        raise CardError("The file is empty.")
    check_file_size(data)
    warnings: list[str] = []
    if data.startswith(PNG_SIGNATURE):
        card, avatar = read_card_png(data, warnings)
        return ImportedCard(card, avatar, warnings, "png")
    if data.startswith(_ZIP_SIGNATURES):
        card, icon = read_card_charx(data, warnings)
        return ImportedCard(card, icon, warnings, "charx")
    if is_webp(data):
        card, avatar = read_card_webp(data, warnings)
        return ImportedCard(card, avatar, warnings, "webp")
    if _looks_like_json(data):
        card = card_from_json(data, warnings)
        return ImportedCard(card, None, warnings, "json")
    raise _unknown_format(data, filename)

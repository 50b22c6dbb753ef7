"""PNG character cards: reading the `chara`/`ccv3` text chunks, writing them, cleaning avatars.

Pillow does the PNG work: it parses chunks, checks CRCs (at open for chunks before IDAT, and in
`verify()` for IDAT up to IEND, which `load()` alone does not check), decompresses the image
under its bomb limits and re-encodes it. Re-encoding drops every chunk we did not write (old card
chunks, EXIF, ICC profiles, comments), which is how avatars are sanitised.

The one thing Pillow cannot do is *write* a `tEXt` chunk after IDAT: `PngInfo.add(...,
after_idat=True)` is honoured for private chunks only, and `tEXt` is always written before IDAT.
Character card tools write the card just before IEND, so we append the two chunks to Pillow's
output ourselves, built with Pillow's own `putchunk` (which computes the CRC).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import struct
import zlib
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from PIL import Image, PngImagePlugin

from characters.card_json import (
    V2_FIELDS,
    card_from_json,
    card_to_v2_dict,
    card_to_v3_dict,
    dump_card_json,
)
from characters.card_model import (
    MAX_CARD_FILE_BYTES,
    MAX_CARD_TEXT_CHUNK_CHARS,
    MAX_IMAGE_PIXELS,
    Card,
    CardError,
    check_file_size,
    format_bytes,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow always ends its output with this exact, empty IEND chunk.
_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
CARD_KEYWORDS = ("ccv3", "chara")
"""Text chunk keywords holding a card, in order of preference (V3 first)."""
AVATAR_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""Image formats accepted as avatars; everything is re-encoded to PNG."""
DEFAULT_AVATAR_SIZE = (400, 600)
_DEFAULT_AVATAR_COLOR = (138, 143, 152)
MAX_ANIMATION_PIXELS = 4 * MAX_IMAGE_PIXELS
"""Pixel budget over all frames of an animated PNG."""
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@contextlib.contextmanager
def _pillow_errors(what: str, data: bytes) -> Iterator[None]:
    """Turn the many exceptions Pillow raises for broken input into one plain `CardError`."""
    try:
        yield
    except CardError:
        raise
    except Image.DecompressionBombError:
        raise CardError(f"{what} is too large (too many pixels) to be opened safely.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
        detail = str(error).lower()
        if "checksum" in detail or "crc" in detail:
            message = f"{what} is damaged (a checksum does not match)."
        elif "truncated" in detail:
            message = f"{what} is truncated (it ends too early)."
        elif "text chunk" in detail or "too large" in detail:
            message = f"{what} holds text chunks that are too large."
        elif "cannot identify" in detail and data.startswith(PNG_SIGNATURE):
            # Pillow hides why a PNG failed to open (often a bad CRC before the image data).
            message = f"{what} is damaged or not a valid PNG."
        elif "cannot identify" in detail:
            message = f"{what} is not an image we can read (PNG, JPEG, WebP or GIF)."
        else:
            message = f"{what} is damaged or not a valid image."
        raise CardError(message) from None


def _check_pixels(image: Image.Image, what: str) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise CardError(
            f"{what} is too large ({width} x {height} pixels; the limit is "
            f"{MAX_IMAGE_PIXELS:,} pixels)."
        )


def _open_checked(data: bytes, formats: tuple[str, ...], what: str) -> Image.Image:
    """Open an image after checking its pixel count and (for PNG) every chunk's CRC.

    Only headers are parsed before the checks. `verify()` consumes the file object, so the image
    is opened a second time for decoding. (CRC checks rely on Pillow's default
    `ImageFile.LOAD_TRUNCATED_IMAGES = False`, which this module never changes.)
    """
    with Image.open(BytesIO(data), formats=list(formats)) as probe:
        _check_pixels(probe, what)
        if probe.format == "PNG":
            # Reading the text chunks of an animated PNG decodes every frame (Pillow seeks to
            # the last one), so the frame count declared in acTL counts towards a pixel budget.
            width, height = probe.size
            if getattr(probe, "n_frames", 1) * width * height > MAX_ANIMATION_PIXELS:
                raise CardError(f"{what} has too many animation frames to be opened safely.")
        probe.verify()
    return Image.open(BytesIO(data), formats=list(formats))


def _encode_png(image: Image.Image, text_chunks: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """Re-encode the current frame as a plain PNG, then append `text_chunks` just before IEND."""
    image.load()
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    clean = image.convert("RGBA" if has_alpha else "RGB")
    clean.info = {}  # Pillow's writer would otherwise copy the ICC profile and friends
    buffer = BytesIO()
    clean.save(buffer, format="PNG")
    png = buffer.getvalue()
    if not text_chunks:
        return png
    if not png.endswith(_IEND_CHUNK):  # pragma: no cover - Pillow always ends with IEND
        raise RuntimeError("Pillow's PNG output does not end with IEND")
    out = BytesIO()
    out.write(png[: -len(_IEND_CHUNK)])
    for keyword, value in text_chunks:
        PngImagePlugin.putchunk(out, b"tEXt", keyword.encode("latin-1"), b"\0", value)
    out.write(_IEND_CHUNK)
    return out.getvalue()


def clean_avatar_image(data: bytes) -> bytes:
    """Validate an image (PNG, JPEG, WebP or GIF) with Pillow and return it as a clean PNG.

    The image is decoded under our pixel cap and re-encoded, which drops all metadata and text
    chunks. Animated images keep their first frame. Raises `CardError` for anything else.
    """
    check_file_size(data, MAX_CARD_FILE_BYTES, "The image")
    with _pillow_errors("The image", data):
        image = _open_checked(data, AVATAR_FORMATS, "The image")
        with image:
            return _encode_png(image)


def default_avatar_png() -> bytes:
    """A plain avatar for cards without an image (the usual 400x600 card shape)."""
    image = Image.new("RGB", DEFAULT_AVATAR_SIZE, _DEFAULT_AVATAR_COLOR)
    return _encode_png(image)


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
    `use_regex` compare equal.
    """
    data = card_to_v2_dict(card)["data"]
    view = {name: data.get(name) for name in V2_FIELDS}
    book = view.get("character_book")
    if book:
        for entry in book.get("entries", []):
            entry.pop("use_regex", None)
    return view


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
        return card_from_json(_chunk_json("chara", found["chara"]), warnings)
    v3_warnings: list[str] = []
    try:
        card = card_from_json(_chunk_json("ccv3", found["ccv3"]), v3_warnings)
    except CardError as error:
        if "chara" not in found:
            raise
        card = card_from_json(_chunk_json("chara", found["chara"]), warnings)
        warnings.append(
            f"The V3 ('ccv3') character data could not be read ({error}); the V2 ('chara') "
            "data was used instead."
        )
        return card
    warnings.extend(v3_warnings)
    if "chara" in found:
        # The V2 copy only matters for telling the user that the two differ.
        with contextlib.suppress(CardError):
            v2_card = card_from_json(_chunk_json("chara", found["chara"]))
            if _comparable(v2_card) != _comparable(card):
                warnings.append(
                    "The PNG holds two different versions of this character ('ccv3' and "
                    "'chara'); the V3 ('ccv3') version was used."
                )
    return card


def read_card_png(data: bytes, warnings: list[str] | None = None) -> tuple[Card, bytes]:
    """Read a PNG character card.

    Returns the card (from `ccv3` when present, else `chara`; keywords match case-insensitively)
    and the avatar re-encoded as a PNG without any card or metadata chunks. Raises `CardError` for
    damaged PNGs (bad CRC, truncated), pixel bombs, oversized chunks and PNGs without a card.
    """
    if warnings is None:
        warnings = []
    check_file_size(data)
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("The file is not a PNG image.")
    with _pillow_errors("The PNG file", data):
        image = _open_checked(data, ("PNG",), "The PNG image")
        with image:
            texts = dict(image.text)  # loads the image, so chunks after IDAT are read too
            if getattr(image, "is_animated", False):
                image.seek(0)
            avatar = _encode_png(image)
    card = _card_from_texts(texts, warnings)
    return card, avatar


def write_card_png(card: Card, image: bytes | None = None) -> bytes:
    """Write a card PNG: the image re-encoded, then `chara` (V2) and `ccv3` (V3) before IEND.

    `image` may be PNG, JPEG, WebP or GIF (an existing card PNG is fine: its old card chunks are
    dropped by re-encoding); None gives the default avatar.
    """
    chara = base64.b64encode(dump_card_json(card_to_v2_dict(card)))
    ccv3 = base64.b64encode(dump_card_json(card_to_v3_dict(card)))
    chunks = (("chara", chara), ("ccv3", ccv3))
    if image is None:
        return _encode_png(Image.new("RGB", DEFAULT_AVATAR_SIZE, _DEFAULT_AVATAR_COLOR), chunks)
    check_file_size(image, MAX_CARD_FILE_BYTES, "The image")
    with _pillow_errors("The image", image):
        opened = _open_checked(image, AVATAR_FORMATS, "The image")
        with opened:
            return _encode_png(opened, chunks)

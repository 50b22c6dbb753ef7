"""Avatar images: the one place that opens, checks, decodes and re-encodes them (Pillow).

Every avatar comes through here: a card PNG's picture, a CHARX icon, an upload in the admin or the
member's form. It is opened under our caps (file size; pixel count, before anything is decoded;
animation frames; every PNG chunk's CRC), decoded once, and from that one decoded frame we make

- the **avatar**: a PNG at the image's own size and, where PNG can hold it, in its own mode
  (lossless; JPEG's CMYK and the like become RGB). Re-encoding keeps nothing but the pixels: card
  and other text chunks, EXIF, ICC profiles, later animation frames and bytes hidden after the
  image are all gone. Card export appends its two chunks to this PNG as it is (`cardspec.png`);
- the **thumbnail** for lists (library, home, chat header): a small WebP made from the same
  decoded frame, so an import decodes its picture once.

Like the `card_*` modules, this imports nothing from Django.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, PngImagePlugin

from cardspec.model import MAX_IMAGE_PIXELS, CardError, format_bytes

MAX_AVATAR_BYTES = 10 * 1024 * 1024
"""Largest avatar upload in the admin and member forms (card files have their own, larger cap)."""
AVATAR_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""Image formats accepted as avatars; everything is re-encoded to PNG."""
MAX_ANIMATION_PIXELS = 4 * MAX_IMAGE_PIXELS
"""Pixel budget over all frames of an animated PNG (Pillow decodes them to read late chunks)."""
THUMBNAIL_SIDE = 128
"""A thumbnail's shorter side: twice the largest list avatar (64 CSS px), for 2x screens."""
THUMBNAIL_MAX_SIDE = 4 * THUMBNAIL_SIDE
"""A thumbnail's longer side, so a very long, thin picture still gives a small file."""
THUMBNAIL_QUALITY = 80
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
"""The empty IEND chunk that ends every PNG Pillow writes."""

# Modes a PNG holds as they are; anything else (CMYK and YCbCr JPEGs, say) becomes RGB(A).
_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "P", "RGB", "RGBA"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# The chunks of a PNG we wrote ourselves; export appends the card chunks to such a file as is.
_IMAGE_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


class AvatarError(CardError):
    """An image we do not accept as an avatar; the message says why, for the end user."""


@dataclass(frozen=True)
class CleanAvatar:
    """One decoded picture, re-encoded twice: the full avatar and its list thumbnail."""

    png: bytes
    """The picture at its own size and mode, as a PNG holding nothing but the image."""
    thumbnail: bytes
    """A small WebP of the same picture (`THUMBNAIL_SIDE` px on its shorter side at most)."""


@contextlib.contextmanager
def image_errors(what: str, data: bytes) -> Iterator[None]:
    """Turn the many exceptions Pillow raises for broken input into one plain `AvatarError`."""
    try:
        yield
    except CardError:
        raise
    except Image.DecompressionBombError:
        raise AvatarError(f"{what} is too large (too many pixels) to be opened safely.") from None
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
        raise AvatarError(message) from None


def check_pixels(width: int, height: int, what: str = "The image") -> None:
    """Refuse a picture over the pixel cap, saying why there is one."""
    if width * height > MAX_IMAGE_PIXELS:
        side = int(MAX_IMAGE_PIXELS**0.5)
        raise AvatarError(
            f"{what} is too large: {width} x {height} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels ({side} x {side}). The limit keeps the memory one "
            f"picture needs while it is read within {format_bytes(4 * MAX_IMAGE_PIXELS)}; "
            "scale the picture down and try again."
        )


def open_image(
    data: bytes, what: str = "The image", formats: tuple[str, ...] = AVATAR_FORMATS
) -> Image.Image:
    """Open an image after checking its pixel count and (for PNG) every chunk's CRC.

    Only headers are parsed before the checks; nothing is decoded yet. `verify()` consumes the
    file object, so the image is opened a second time for decoding. (CRC checks rely on Pillow's
    default `ImageFile.LOAD_TRUNCATED_IMAGES = False`, which this module never changes.) Call it
    inside `image_errors`.
    """
    with Image.open(BytesIO(data), formats=list(formats)) as probe:
        check_pixels(*probe.size, what)
        if probe.format == "PNG":
            # Reading the text chunks of an animated PNG decodes every frame (Pillow seeks to
            # the last one), so the frame count declared in acTL counts towards a pixel budget.
            width, height = probe.size
            if getattr(probe, "n_frames", 1) * width * height > MAX_ANIMATION_PIXELS:
                raise AvatarError(f"{what} has too many animation frames to be opened safely.")
        probe.verify()
    return Image.open(BytesIO(data), formats=list(formats))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def encode_png(image: Image.Image) -> bytes:
    """The current frame as a PNG at its own size, in its own mode where PNG can hold it.

    Only pixels (and the palette and transparency that belong to them) are written.
    """
    image.load()
    transparency = image.info.get("transparency")
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        transparency = None
    # Pillow's writer copies the ICC profile and friends from `info`; give it nothing else.
    image.info = {} if transparency is None else {"transparency": transparency}
    buffer = BytesIO()
    # Run-length matching only: on photos and detailed illustrations it compresses as well as
    # the default (level 6) at a third to a quarter of the time (0.2 s against 0.8 s for a
    # 1536 x 1536 picture), and its time does not depend on the content; zlib's default search
    # took seconds on big noisy cards. Flat artwork comes out larger, but is small anyway.
    image.save(buffer, format="PNG", compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def thumbnail_webp(image: Image.Image) -> bytes:
    """A small WebP of the current frame for lists: its shorter side at most `THUMBNAIL_SIDE`
    px (never enlarged), its longer side at most `THUMBNAIL_MAX_SIDE`."""
    image.load()
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit grey: scale to 8 bits (a plain conversion would clip everything to white).
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    width, height = image.size
    scale = min(1.0, THUMBNAIL_SIDE / min(width, height), THUMBNAIL_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    image.info = {}
    buffer = BytesIO()
    image.save(buffer, format="WEBP", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


def clean_avatar(image: Image.Image) -> CleanAvatar:
    """The avatar PNG and its thumbnail from one decoded frame (the first of an animation)."""
    if getattr(image, "is_animated", False):
        image.seek(0)
    image.load()
    return CleanAvatar(png=encode_png(image), thumbnail=thumbnail_webp(image))


def read_avatar(data: bytes, what: str = "The image") -> CleanAvatar:
    """Check, decode (once) and re-encode an image file: its clean PNG and its thumbnail."""
    with image_errors(what, data):
        image = open_image(data, what)
        with image:
            return clean_avatar(image)


def clean_png(data: bytes, what: str = "The image") -> bytes:
    """Check, decode and re-encode an image file as a clean PNG (no thumbnail)."""
    with image_errors(what, data):
        image = open_image(data, what)
        with image:
            if getattr(image, "is_animated", False):
                image.seek(0)
            return encode_png(image)


def normalize_avatar(data: bytes) -> bytes:
    """An uploaded avatar (admin or member form) as a clean PNG at its own size and mode.

    The form stores only this file; the list thumbnail is made the first time a list shows it.
    """
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarError(f"The image is larger than {format_bytes(MAX_AVATAR_BYTES)}, the limit.")
    return clean_png(data)


def thumbnail_of_png(png: bytes) -> bytes:
    """The list thumbnail of a stored avatar (a PNG we wrote, or an older stored avatar)."""
    with image_errors("The avatar", png):
        image = open_image(png, "The avatar", ("PNG",))
        with image:
            if getattr(image, "is_animated", False):
                image.seek(0)
            return thumbnail_webp(image)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (type, data) chunks of a well-formed PNG, or None if it is not one."""
    if not png.startswith(PNG_SIGNATURE):
        return None
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        end = offset + 8 + length
        if end + 4 > len(png):
            return None
        body = png[offset + 8 : end]
        (crc,) = struct.unpack(">I", png[end : end + 4])
        if zlib.crc32(kind + body) != crc:
            return None
        chunks.append((kind, body))
        offset = end + 4
        if kind == b"IEND":
            return chunks if offset == len(png) else None
    return None


def is_clean_png(png: bytes) -> bool:
    """Whether `png` holds nothing but image data, as `encode_png` writes it: the chunks that
    make up the picture, with correct CRCs, ending at IEND."""
    chunks = png_chunks(png)
    return (
        chunks is not None
        and chunks[0][0] == b"IHDR"
        and any(kind == b"IDAT" for kind, _ in chunks)
        and all(kind in _IMAGE_CHUNKS for kind, _ in chunks)
        and png.endswith(IEND_CHUNK)
    )


def png_with_text_chunks(png: bytes, text_chunks: tuple[tuple[str, bytes], ...]) -> bytes:
    """`png` with `tEXt` chunks inserted just before its IEND (where card tools put cards).

    Pillow cannot write `tEXt` after IDAT (`PngInfo.add(..., after_idat=True)` is honoured for
    private chunks only), so the chunks are appended here, built with Pillow's own `putchunk`.
    """
    if not png.endswith(IEND_CHUNK):  # pragma: no cover - Pillow and is_clean_png make sure
        raise ValueError("the PNG does not end with an empty IEND chunk")
    out = BytesIO()
    out.write(png[: -len(IEND_CHUNK)])
    for keyword, value in text_chunks:
        PngImagePlugin.putchunk(out, b"tEXt", keyword.encode("latin-1"), b"\0", value)
    out.write(IEND_CHUNK)
    return out.getvalue()

"""The one image validator for every avatar upload path: decode with Pillow, re-encode as PNG."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

MAX_AVATAR_BYTES = 10 * 1024 * 1024
# Far below Pillow's own bomb threshold: an avatar needs no more.
MAX_AVATAR_PIXELS = 40_000_000
AVATAR_MAX_SIDE = 1024
_ALLOWED_FORMATS = {"PNG", "JPEG", "GIF", "WEBP"}


class AvatarError(ValueError):
    """The upload is not an image we accept; the message says why."""


def normalize_avatar(data: bytes) -> bytes:
    """Decode `data` as an image and return a fresh PNG of at most 1024 px a side.

    Re-encoding drops anything but pixels (scripts in SVG/HTML polyglots, metadata chunks).
    """
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarError(f"The image is larger than {MAX_AVATAR_BYTES // (1024 * 1024)} MiB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in _ALLOWED_FORMATS:
                raise AvatarError("Avatars must be PNG, JPEG, GIF or WebP images.")
            if image.width * image.height > MAX_AVATAR_PIXELS:
                raise AvatarError("The image has too many pixels.")
            image.load()
    except AvatarError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AvatarError("The file is not a readable image.") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AvatarError("The image has too many pixels.") from exc
    image = image.convert("RGBA")
    image.thumbnail((AVATAR_MAX_SIDE, AVATAR_MAX_SIDE))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()

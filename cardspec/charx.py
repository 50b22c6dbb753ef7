"""CHARX character cards: a zip with `card.json` at its root and assets under `assets/...`.

Member names come from the uploader, so they are only ever used as keys to look members up in
the archive; nothing is extracted to disk. Sizes are checked on what the archive declares and
again while reading (a member can lie about its size), so zip bombs stop early.
"""

from __future__ import annotations

import zipfile
import zlib
from io import BytesIO
from typing import Any

from cardspec.images import CleanAvatar, read_avatar
from cardspec.json_card import card_from_json, card_to_v3_dict, dump_card_json
from cardspec.model import (
    MAX_CARD_FILE_BYTES,
    MAX_CARD_JSON_BYTES,
    MAX_CHARX_MEMBERS,
    MAX_CHARX_UNCOMPRESSED_BYTES,
    Card,
    CardError,
    check_file_size,
    format_bytes,
)
from cardspec.png import clean_avatar_image, default_avatar_png

CARD_MEMBER = "card.json"
ICON_MEMBER = "assets/icon/images/main.png"
"""Where our CHARX export stores the avatar (the spec's `assets/{type}/images/` layout)."""
_EMBEDDED_SCHEMES = ("embeded://", "embedded://")  # the spec's spelling, and the usual one
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so the same card gives the same bytes


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str) -> bytes:
    """Read one member, refusing encryption and anything over `limit` (declared or actual)."""
    if info.flag_bits & 0x1:
        raise CardError(
            f"The CHARX file is encrypted ({label}); encrypted files are not supported."
        )
    if info.file_size > limit:
        raise CardError(f"{label} in the CHARX file is larger than {format_bytes(limit)}.")
    try:
        with archive.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError):
        # RuntimeError: encrypted; NotImplementedError: an unsupported compression method.
        raise CardError(f"{label} in the CHARX file is damaged or cannot be unpacked.") from None
    if len(data) > limit:
        raise CardError(f"{label} in the CHARX file is larger than {format_bytes(limit)}.")
    return data


def _icon_path(card: Card, members: dict[str, zipfile.ZipInfo], warnings: list[str]) -> str | None:
    """Find the archive member holding the main icon, following the card's `assets` list."""
    if card.assets is None:
        # No assets list means "the default icon"; a CHARX may still ship one in the usual place.
        return next((name for name in members if name.startswith("assets/icon/")), None)
    icons = [asset for asset in card.assets if asset.get("type") == "icon"]
    if not icons:
        return None
    main = next((asset for asset in icons if asset.get("name") == "main"), icons[0])
    uri = main.get("uri") or ""
    for scheme in _EMBEDDED_SCHEMES:
        if uri.startswith(scheme):
            path = uri[len(scheme) :]
            if path not in members:
                warnings.append("The card names an icon image that is not in the CHARX file.")
                return None
            return path
    if uri.startswith(("http://", "https://")):
        warnings.append("The card's icon is a web address; it was not downloaded.")
    elif uri and uri != "ccdefault:":
        warnings.append("The card's icon is stored in a way we do not read; it was not imported.")
    return None


def read_card_charx(
    data: bytes, warnings: list[str] | None = None
) -> tuple[Card, CleanAvatar | None]:
    """Read a CHARX file: the card from `card.json` and the main icon (or None), decoded once
    into a clean PNG and its list thumbnail.

    Other assets are not imported (a warning says how many). Raises `CardError` for files that are
    not zips, have no `card.json`, are encrypted, or would unpack to too much data.
    """
    if warnings is None:
        warnings = []
    check_file_size(data)
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise CardError("The CHARX file is not a valid zip archive.") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_CHARX_MEMBERS:
            raise CardError(f"The CHARX file holds more than {MAX_CHARX_MEMBERS:,} files.")
        if sum(info.file_size for info in infos) > MAX_CHARX_UNCOMPRESSED_BYTES:
            raise CardError(
                "The CHARX file would unpack to more than "
                f"{format_bytes(MAX_CHARX_UNCOMPRESSED_BYTES)}, so it was refused."
            )
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.is_dir():
                members.setdefault(info.filename, info)
        card_info = members.get(CARD_MEMBER)
        if card_info is None:
            raise CardError("The CHARX file has no card.json at its root.")
        card = card_from_json(
            _read_member(archive, card_info, MAX_CARD_JSON_BYTES, "card.json"), warnings
        )
        avatar = None
        icon_path = _icon_path(card, members, warnings)
        if icon_path is not None:
            try:
                icon = _read_member(archive, members[icon_path], MAX_CARD_FILE_BYTES, "The icon")
                avatar = read_avatar(icon, "The image")
            except CardError as error:
                warnings.append(f"The character's icon could not be used: {error}")
        others = [name for name in members if name.startswith("assets/") and name != icon_path]
        if others:
            warnings.append(
                f"The CHARX file holds {len(others)} other asset file(s) (such as backgrounds or "
                "expressions); they were not imported."
            )
    return card, avatar


def write_card_charx(card: Card, image: bytes | None = None) -> bytes:
    """Write a CHARX file: V3 `card.json` plus the avatar as the main icon asset.

    The card's main icon entry is pointed at the stored image; other asset entries are kept as
    they are (we do not store their files, so embedded ones will be missing in the archive).
    """
    icon = clean_avatar_image(image) if image is not None else default_avatar_png()
    card_object = card_to_v3_dict(card)
    data: dict[str, Any] = card_object["data"]
    assets = [
        asset
        for asset in data.get("assets") or []
        if not (asset.get("type") == "icon" and asset.get("name") == "main")
    ]
    assets.insert(
        0, {"type": "icon", "uri": f"embeded://{ICON_MEMBER}", "name": "main", "ext": "png"}
    )
    data["assets"] = assets
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        card_entry = zipfile.ZipInfo(CARD_MEMBER, date_time=_ZIP_TIMESTAMP)
        card_entry.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(card_entry, dump_card_json(card_object, indent=2))
        # PNG data is already compressed; storing it avoids wasted work.
        archive.writestr(zipfile.ZipInfo(ICON_MEMBER, date_time=_ZIP_TIMESTAMP), icon)
    return buffer.getvalue()

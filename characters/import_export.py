"""Character <-> card file: the Django side of `cardspec.cards`.

Every `Card` field has a home on `Character`: most have their own column, and the rest (spec and
spec_version, the V3 extras without a column, unknown keys) live in `Character.card_extra`, so
`Card -> Character -> Card` gives back exactly the card that came in.
"""

from __future__ import annotations

import copy
import io
import zipfile
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils.text import slugify

from cardspec.cards import (
    MAX_CARD_FILE_BYTES,
    V2_FIELDS,
    Card,
    CardError,
    card_from_dict,
    card_to_v3_dict,
    dump_card_json,
    read_card_file,
    write_card_png,
)
from cardspec.images import CleanAvatar
from characters.models import Character

# Card fields stored in a Character column of the same name (nickname is handled apart: the
# column cannot tell "absent" (None) from "empty").
COLUMN_FIELDS = (*V2_FIELDS, "group_only_greetings")
# Card fields kept in `card_extra` under their own name.
EXTRA_FIELDS = tuple(
    name for name in Card.field_names() if name not in COLUMN_FIELDS and name != "nickname"
)
_EMPTY_NICKNAME = "nickname_empty"
"""card_extra flag: the card had `nickname: ""` (not absent)."""

ExportFormat = Literal["png", "json"]
CONTENT_TYPES = {"png": "image/png", "json": "application/json"}


def character_from_card(card: Card, owner=None) -> Character:
    """A new, unsaved Character holding every field of `card`, owned by `owner`."""
    fields = card.to_fields()  # a deep copy
    character = Character(owner=owner)
    for name in COLUMN_FIELDS:
        setattr(character, name, fields[name])
    character.nickname = fields["nickname"] or ""
    extra: dict[str, Any] = {name: fields[name] for name in EXTRA_FIELDS}
    if fields["nickname"] == "":
        extra[_EMPTY_NICKNAME] = True
    character.card_extra = extra
    return character


def character_to_card(character: Character) -> Card:
    """The card for `character`: its columns plus what `card_extra` kept."""
    extra = character.card_extra if isinstance(character.card_extra, dict) else {}
    fields: dict[str, Any] = {name: getattr(character, name) for name in COLUMN_FIELDS}
    for name in EXTRA_FIELDS:
        if name in extra:
            fields[name] = extra[name]
    if character.nickname:
        fields["nickname"] = character.nickname
    else:
        fields["nickname"] = "" if extra.get(_EMPTY_NICKNAME) else None
    # Columns never hold None for the text/list/dict fields; be lenient with unsaved objects.
    for name in ("alternate_greetings", "tags", "group_only_greetings"):
        fields[name] = fields[name] or []
    fields["extensions"] = fields["extensions"] or {}
    return Card.from_fields(**fields)


def check_character_card(character: Character) -> None:
    """Raise CardError if `character` would not export as a readable card (admin validation)."""
    try:
        card = character_to_card(character)
        card_from_dict(card_to_v3_dict(card))
    except CardError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        raise CardError(f"The character data is not a valid card: {exc}") from exc


def _check_lengths(character: Character) -> None:
    """Refuse text too long for its column (PostgreSQL would fail the insert; SQLite would not)."""
    for name in ("name", "nickname", "creator", "character_version"):
        limit = Character._meta.get_field(name).max_length
        if len(getattr(character, name)) > limit:
            raise CardError(f"The card's {name} is longer than {limit} characters.")


def import_card_file(
    data: bytes, filename: str, owner=None, *, visibility: str | None = None
) -> tuple[Character, list[str]]:
    """Read an uploaded card file and save it as a new Character owned by `owner`.

    Raises CardError (nothing saved) for anything unreadable. Ids and owners inside the card are
    never used: every import creates a new object. `visibility` (default: the model's) is set
    before the first save, so a private import is never visible to anyone else, even briefly.
    Returns the character and notes for the user.
    """
    imported = read_card_file(data, filename)
    character = character_from_card(imported.card, owner)
    if visibility is not None:
        character.visibility = visibility
    _check_lengths(character)
    with transaction.atomic():
        if imported.avatar is not None:
            store_avatar(character, imported.avatar)
        character.save()
    return character, list(imported.warnings)


def store_avatar(character: Character, avatar: CleanAvatar) -> None:
    """Give `character` (saved by the caller) the avatar files: the picture as it was cleaned
    (its own size and mode), and its list thumbnail made from the same decoded picture."""
    # Client file names never become paths.
    character.avatar.save("avatar.png", ContentFile(avatar.png), save=False)
    character.avatar_thumbnail.save("avatar.webp", ContentFile(avatar.thumbnail), save=False)
    character.avatar_thumbnail_of = character.avatar.name


@dataclass
class UploadResult:
    """What became of one uploaded card file, for the import pages."""

    filename: str
    character: Character | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "success" if self.character else "error"


def import_upload(upload, owner, *, visibility: str | None = None) -> UploadResult:
    """Import one uploaded file (a Django UploadedFile); errors are reported, never raised."""
    result = UploadResult(filename=upload.name)
    if upload.size > MAX_CARD_FILE_BYTES:
        result.error = "The file is too large for a character card."
        return result
    try:
        result.character, result.warnings = import_card_file(
            upload.read(), upload.name, owner, visibility=visibility
        )
    except CardError as exc:
        result.error = str(exc)
    return result


def export_filename(character: Character, fmt: str) -> str:
    """A safe download name such as "aiko.png"."""
    return f"{slugify(character.name) or 'character'}.{fmt}"


def _avatar_bytes(character: Character) -> bytes | None:
    if not character.avatar:
        return None
    try:
        with character.avatar.open("rb") as handle:
            return handle.read()
    except OSError:
        return None  # a missing file exports with the default image


def export_card(character: Character, fmt: ExportFormat) -> tuple[bytes, str, str]:
    """Export as a card PNG (chara V2 + ccv3 V3 chunks) or V3 JSON.

    Returns (content, content type, download filename).
    """
    card = character_to_card(character)
    if fmt == "png":
        # A stored avatar holds nothing but its picture already: the card chunks are appended
        # to it as it is, so the export carries exactly that picture, and quickly.
        content = write_card_png(card, _avatar_bytes(character), image_is_clean=True)
    elif fmt == "json":
        content = dump_card_json(card_to_v3_dict(card), indent=2)
    else:
        raise ValueError(f"Unknown export format {fmt!r} (expected 'png' or 'json').")
    return content, CONTENT_TYPES[fmt], export_filename(character, fmt)


def export_zip(characters, fmt: ExportFormat) -> bytes:
    """Several exported cards in one zip, with unique member names."""
    out = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for character in characters:
            content, _, name = export_card(character, fmt)
            stem, ext = name.rsplit(".", 1)
            number = 2
            while name in used:
                name = f"{stem}-{number}.{ext}"
                number += 1
            used.add(name)
            archive.writestr(name, content)
    return out.getvalue()


def duplicate_character(character: Character) -> Character:
    """Save and return a copy of `character` (with its own copy of the avatar file)."""
    copy_ = Character.objects.get(pk=character.pk)
    copy_.pk = None
    copy_.id = None
    copy_._state.adding = True
    copy_.name = f"{character.name} (copy)"[: Character._meta.get_field("name").max_length]
    for name in ("alternate_greetings", "group_only_greetings", "tags", "extensions"):
        setattr(copy_, name, copy.deepcopy(getattr(copy_, name)))
    copy_.character_book = copy.deepcopy(copy_.character_book)
    copy_.card_extra = copy.deepcopy(copy_.card_extra)
    avatar = _avatar_bytes(character)
    copy_.avatar = ""
    # The copy's avatar file gets a name of its own; its thumbnail is made when first shown.
    copy_.avatar_thumbnail = ""
    copy_.avatar_thumbnail_of = ""
    with transaction.atomic():
        if avatar is not None:
            copy_.avatar.save("avatar.png", ContentFile(avatar), save=False)
        copy_.save()
        copy_.groups.set(character.groups.all())
    return copy_

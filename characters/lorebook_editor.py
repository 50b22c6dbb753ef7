"""The lorebook editor's rows: a `character_book` entry shown as form fields, and posted form
fields merged back onto the entry they were made from.

The editor never rebuilds an entry from its fields. Each row posts the entry it showed (JSON, in
a hidden field) and only the fields the member changed are written over it, so what the form does
not show (`extensions`, `id`, `priority`, `selective`, V3 fields, anything a card carried) and what
it shows only approximately (a key with a comma in it, `\\r\\n` line endings, an order of 100.0)
come back exactly as they were. The book's own fields work the same way.

Django-free: the widget (`characters/editors.py`) renders and parses; the form then runs the
import's checks (`normalize_character_book`, `check_character_card`) on the result.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cardspec.lorebook import (
    AFTER_CHAR,
    AT_DEPTH,
    AUTHORS_NOTE_BOTTOM,
    AUTHORS_NOTE_TOP,
    BEFORE_CHAR,
    DEFAULT_DEPTH,
    EXAMPLES_BOTTOM,
    EXAMPLES_TOP,
    OUTLET,
    ST_POSITIONS,
    entry_placement,
    read_depth,
    read_flag,
    read_keys,
    read_number,
    split_keys,
)
from cardspec.macros import normalize_newlines

# The one compiler prompt assembly uses, so the editor refuses exactly the keys that would never
# match.
from cardspec.prompt import compile_regex_key
from cardspec.values import short_quote

# What the Position select offers (SillyTavern's positions; `entry_placement` reads them).
# Outlet is offered only to an entry already there: we have no {{outlet}} macro to feed it.
POSITIONS = {
    BEFORE_CHAR: "Before the character",
    AFTER_CHAR: "After the character",
    AUTHORS_NOTE_TOP: "Before the Author's Note",
    AUTHORS_NOTE_BOTTOM: "After the Author's Note",
    AT_DEPTH: "At depth",
    EXAMPLES_TOP: "Before the example dialogue",
    EXAMPLES_BOTTOM: "After the example dialogue",
    OUTLET: "Outlet (not sent)",
}
OFFERED_POSITIONS = [name for name in POSITIONS if name != OUTLET]

# An entry added in the editor: SillyTavern's defaults for a new entry (order 100, before the
# character), with every field a V2 reader expects.
NEW_ENTRY: dict[str, Any] = {
    "keys": [],
    "content": "",
    "extensions": {},
    "enabled": True,
    "insertion_order": 100,
    "case_sensitive": False,
    "selective": False,
    "constant": False,
    "position": BEFORE_CHAR,
    "use_regex": False,
}

TEXT_FIELDS = ("keys", "secondary_keys", "content", "position", "depth", "order", "name", "comment")
FLAG_FIELDS = ("enabled", "constant", "use_regex", "case_sensitive")
# The fields that make a new row worth saving: a blank row (the one offered for adding without
# JavaScript) is ignored, whatever its checkboxes say.
_SUBSTANCE = ("keys", "secondary_keys", "content", "name", "comment")

# Bounds for numbers typed into the editor (an unchanged number keeps whatever the card said):
# far past real cards, and small enough for every app that reads the card as JavaScript.
MAX_DEPTH = 10_000
MAX_AMOUNT = 1_000_000_000

_CHECKED_OFF = {"", "0", "false", "off"}


class RowError(ValueError):
    """A value the editor cannot store, in words for the member."""


@dataclass
class BookEdit:
    """What a post of the lorebook editor holds: the book it gives (None: no book) or the errors
    that stop it, and the rows and book fields as posted, to show again with those errors."""

    book: dict[str, Any] | None
    original: str  # the hidden copy of the book the page showed, without its entries
    settings: dict[str, Any]  # scan_depth, token_budget, recursive_scanning as posted
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    row_errors: dict[int, str] = field(default_factory=dict)  # by row, shown in the row too


# --- Showing -----------------------------------------------------------------------------------


def _key_line(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(item for item in value if isinstance(item, str))
    return ""


def _number_text(value: Any) -> str:
    number = read_number(value)
    if number is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _extensions(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    extensions = entry.get("extensions")
    return extensions if isinstance(extensions, Mapping) else {}


def entry_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The editor's fields for `entry`, as the form shows them (text, and booleans for boxes).

    Position is where the entry goes without its content's `@@` decorators (which the member
    sees, and edits, in the content itself).
    """
    placement = entry_placement(entry, {})
    depth = (
        placement.depth
        if placement.where == AT_DEPTH
        else read_depth(_extensions(entry).get("depth"), DEFAULT_DEPTH)
    )
    name, comment, content = entry.get("name"), entry.get("comment"), entry.get("content")
    return {
        "keys": _key_line(entry.get("keys")),
        "secondary_keys": _key_line(entry.get("secondary_keys")),
        "content": content if isinstance(content, str) else "",
        "position": placement.where if placement.where in POSITIONS else AFTER_CHAR,
        "depth": str(depth),
        "order": _number_text(entry.get("insertion_order")),
        "name": name if isinstance(name, str) else "",
        "comment": comment if isinstance(comment, str) else "",
        "enabled": read_flag(entry.get("enabled"), True),
        "constant": read_flag(entry.get("constant"), False),
        "use_regex": read_flag(entry.get("use_regex"), False),
        "case_sensitive": read_flag(entry.get("case_sensitive"), False),
    }


def book_settings(book: Mapping[str, Any] | None) -> dict[str, Any]:
    """The book-level fields as the form shows them."""
    book = book or {}
    return {
        "scan_depth": _number_text(book.get("scan_depth")),
        "token_budget": _number_text(book.get("token_budget")),
        "recursive_scanning": read_flag(book.get("recursive_scanning"), False),
    }


def book_without_entries(book: Mapping[str, Any] | None) -> str:
    """The hidden copy of the book's own fields ("" for no book); `entries` keeps its place in
    the key order, emptied, as the rows carry the entries."""
    if book is None:
        return ""
    return json.dumps({**book, "entries": []} if "entries" in book else dict(book))


def entry_json(entry: Mapping[str, Any] | None) -> str:
    """The hidden copy of one entry ("" for a new one)."""
    return "" if entry is None else json.dumps(entry)


# --- Reading a post ------------------------------------------------------------------------------


def split_regex_keys(line: str) -> list[str]:
    """Regex keys from one comma-separated line. A comma inside brackets, braces or parentheses,
    inside a ``/pattern/``, or escaped (``\\,``) belongs to its key, so ``/a{1,3}/i, [x,y]z`` is
    two keys; blanks are dropped."""
    keys: list[str] = []
    current: list[str] = []
    depth, in_slashes, escaped = 0, False, False
    for char in line:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "/" and not in_slashes and not "".join(current).strip():
            in_slashes = True
        elif char == "/" and in_slashes:
            in_slashes = False
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0 and not in_slashes:
            keys.append("".join(current))
            current = []
            continue
        current.append(char)
    keys.append("".join(current))
    return [key.strip() for key in keys if key.strip()]


def _number(text: str, label: str, *, whole: bool, minimum: int, maximum: int) -> int | float:
    try:
        value = float(text.strip())
    except ValueError:
        raise RowError(f"{label} must be a number, not {short_quote(text)}.") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise RowError(f"{label} must be between {minimum:,} and {maximum:,}.")
    if whole and not value.is_integer():
        raise RowError(f"{label} must be a whole number.")
    return int(value) if value.is_integer() else value


def _changed(name: str, posted: Any, shown: Any) -> bool:
    if name == "content":
        return normalize_newlines(posted) != normalize_newlines(shown)
    return posted != shown


def _place(entry: dict[str, Any], where: str, depth: int | None) -> None:
    """Put `entry` at `where` the way SillyTavern writes it: the V2 `position` for before/after
    the character (and its number in `extensions.position` when the entry has one, since that
    wins), else the number (and `extensions.depth`), the V2 `position` then saying "after"."""
    extensions = entry.get("extensions")
    extensions = dict(extensions) if isinstance(extensions, Mapping) else {}
    if where in (BEFORE_CHAR, AFTER_CHAR):
        entry["position"] = where
        if read_number(extensions.get("position")) is not None:
            extensions["position"] = ST_POSITIONS.index(where)
    else:
        extensions["position"] = ST_POSITIONS.index(where)
        entry["position"] = AFTER_CHAR
        if where == AT_DEPTH and depth is not None:
            extensions["depth"] = depth
    entry["extensions"] = extensions


def _check_regex_keys(entry: Mapping[str, Any]) -> None:
    case_sensitive = read_flag(entry.get("case_sensitive"), False)
    # read_keys: secondary_keys may be one comma-separated string, kept as the card gave it.
    for key in [*read_keys(entry.get("keys")), *read_keys(entry.get("secondary_keys"))]:
        if compile_regex_key(key, case_sensitive) is None:
            raise RowError(f"the key {short_quote(key)} is not a valid regular expression.")


def merge_row(original: Mapping[str, Any], posted: Mapping[str, Any]) -> dict[str, Any]:
    """`original` with the fields the member changed in `posted` (the row's fields, as
    `entry_row` shapes them) written over it. Raises RowError for a value it cannot take."""
    entry = copy.deepcopy(dict(original))
    shown = entry_row(original)
    changed = {
        name for name in (*TEXT_FIELDS, *FLAG_FIELDS) if _changed(name, posted[name], shown[name])
    }
    for name in FLAG_FIELDS:
        if name in changed:
            entry[name] = posted[name]
    if "keys" in changed:
        splitter = split_regex_keys if posted["use_regex"] else split_keys
        entry["keys"] = splitter(posted["keys"])
    if "secondary_keys" in changed:
        splitter = split_regex_keys if posted["use_regex"] else split_keys
        entry["secondary_keys"] = splitter(posted["secondary_keys"])
        # Secondary keys count only in a selective entry: typing some means using them.
        entry["selective"] = bool(entry["secondary_keys"])
    if "content" in changed:
        entry["content"] = normalize_newlines(posted["content"])
    for name in ("name", "comment"):
        if name in changed:
            entry[name] = posted[name].strip()
    if "order" in changed:
        entry["insertion_order"] = _number(
            posted["order"], "Order", whole=False, minimum=-MAX_AMOUNT, maximum=MAX_AMOUNT
        )
    where = posted["position"]
    if "position" in changed or (where == AT_DEPTH and "depth" in changed):
        if where not in POSITIONS or (where == OUTLET and shown["position"] != OUTLET):
            raise RowError(f"{short_quote(where)} is not a position.")
        depth = None
        if where == AT_DEPTH:
            depth = int(_number(posted["depth"], "Depth", whole=True, minimum=0, maximum=MAX_DEPTH))
        _place(entry, where, depth)
    regex = read_flag(entry.get("use_regex"), False)
    if regex and changed & {"keys", "secondary_keys", "use_regex", "case_sensitive"}:
        _check_regex_keys(entry)
    return entry


def _getlist(data: Any, name: str) -> list[Any]:
    if hasattr(data, "getlist"):
        return data.getlist(name)
    value = data.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _text(data: Any, name: str) -> str:
    values = _getlist(data, name)
    return str(values[-1]) if values else ""


def _checked(data: Any, name: str) -> bool:
    values = _getlist(data, name)
    return bool(values) and str(values[-1]).strip().lower() not in _CHECKED_OFF


def _load(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RowError(f"{what} could not be read: reload the page and try again.") from None


def _book_settings(
    book: dict[str, Any], shown: Mapping[str, Any], posted: Mapping[str, Any]
) -> bool:
    """Write the changed book-level fields onto `book`; whether any changed."""
    changed = False
    for name, label in (("scan_depth", "Scan depth"), ("token_budget", "Token budget")):
        text = posted[name].strip()
        if text == shown[name]:
            continue
        changed = True
        if not text:
            book.pop(name, None)  # empty: the site's default / no limit
        else:
            maximum = MAX_DEPTH if name == "scan_depth" else MAX_AMOUNT
            book[name] = _number(text, label, whole=True, minimum=0, maximum=maximum)
    if posted["recursive_scanning"] != shown["recursive_scanning"]:
        changed = True
        book["recursive_scanning"] = posted["recursive_scanning"]
    return changed


def _row(data: Any, name: str, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One posted row: the entry it was made from and its fields. A text field left out of the
    post (a script's) counts as unchanged; a box left out, as unchecked."""
    hidden = _text(data, f"{name}-original")
    entry = _load(hidden, where) if hidden.strip() else NEW_ENTRY
    if not isinstance(entry, dict):
        raise RowError(f"{where} could not be read: reload the page and try again.")
    shown = entry_row(entry)
    posted: dict[str, Any] = {"original": hidden}
    for text_field in TEXT_FIELDS:
        key = f"{name}-{text_field}"
        posted[text_field] = _text(data, key) if key in data else shown[text_field]
    for flag in FLAG_FIELDS:
        posted[flag] = _checked(data, f"{name}-{flag}")
    return entry, posted


def read_post(data: Any, prefix: str) -> BookEdit:
    """The book an editor post gives (`prefix` is the field's name: rows are posted as
    ``<prefix>-<i>-keys`` and so on, with ``<prefix>-<i>-original`` first).

    Entries come in the order their rows were posted (a moved row need not be renumbered). A row
    with its Remove box checked, and a new row left blank, are left out. No book before and no
    entries nor book fields now gives None: an editor left empty adds no empty book.
    """
    original = _text(data, f"{prefix}-book")
    edit = BookEdit(book=None, original=original, settings={})
    book: Any = None
    try:
        book = _load(original, "The lorebook") if original.strip() else None
        if book is not None and not isinstance(book, dict):
            raise RowError("The lorebook could not be read: reload the page and try again.")
    except RowError as exc:
        edit.errors.append(str(exc))
        book = None
    shown = book_settings(book)
    edit.settings = {
        name: _text(data, f"{prefix}-{name}") if f"{prefix}-{name}" in data else shown[name]
        for name in ("scan_depth", "token_budget")
    }
    edit.settings["recursive_scanning"] = _checked(data, f"{prefix}-recursive_scanning")

    row_key = re.compile(rf"{re.escape(prefix)}-(\d+)-original")
    entries: list[dict[str, Any]] = []
    for key in data:
        if (match := row_key.fullmatch(key)) is None:
            continue
        name = f"{prefix}-{match.group(1)}"
        where = f"Lorebook entry {len(edit.rows) + 1}"
        if _checked(data, f"{name}-DELETE"):
            continue
        try:
            entry, posted = _row(data, name, where)
        except RowError as exc:
            edit.errors.append(str(exc))
            continue
        if entry is NEW_ENTRY and not any(posted[text].strip() for text in _SUBSTANCE):
            continue  # the blank row offered for adding one
        edit.rows.append(posted)
        try:
            entries.append(merge_row(entry, posted))
        except RowError as exc:
            edit.errors.append(f"{where}: {exc}")
            edit.row_errors[len(edit.rows) - 1] = str(exc)

    result = copy.deepcopy(book) if book is not None else {}
    try:
        settings_changed = _book_settings(result, shown, edit.settings)
    except RowError as exc:
        edit.errors.append(str(exc))
        return edit
    if book is None and not entries and not settings_changed:
        return edit  # no book before, none now
    result["entries"] = entries
    edit.book = result
    return edit

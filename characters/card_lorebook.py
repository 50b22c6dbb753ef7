"""The lorebook (`character_book`): normalising it on import, shaping it for V2/V3 export, and
splitting V3 `@@decorator` lines off entry content.

The lorebook stays a plain dict so that unknown keys of the book and of every entry (`probability`,
`depth`, app-specific fields...) survive a round trip without a schema of their own. Normalising
only fills in required fields, converts `secondary_keys` given as one comma-separated string into
a list, checks the types of the fields prompt assembly relies on, and refuses books beyond the
size limits below (the import and the admin editor both come through here).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from characters.card_model import CardError
from characters.card_values import (
    boolean,
    json_kind,
    json_object,
    number,
    short_quote,
    text,
    text_list,
)

# Optional entry fields whose type we check when present and not null. Anything else is kept as is
# (for instance `position: ""` and `probability: null`, both seen in real cards).
_ENTRY_FLAGS = ("case_sensitive", "constant", "selective", "use_regex")
_ENTRY_TEXTS = ("name", "comment", "position")
_BOOK_NUMBERS = ("scan_depth", "token_budget")
_BOOK_TEXTS = ("name", "description")

# Size limits, far above real community cards (1 to 60+ entries of a few keys and a paragraph
# each): every send scans the whole book, so a book is capped where its size alone would make
# sends slow. (The time all key searches of one send may take is bounded apart, in the prompt.)
MAX_LOREBOOK_ENTRIES = 1000
MAX_KEYS_PER_ENTRY = 100  # keys and secondary_keys together
MAX_KEY_CHARS = 1000  # one plain key
MAX_REGEX_KEY_CHARS = 500  # one key of a `use_regex` entry
MAX_LOREBOOK_CHARS = 1_000_000  # every entry's keys and content together

# A decorator line: `@@name` or a `@@@name` fallback, then optionally a space and a value.
_DECORATOR_LINE = re.compile(r"@@@?[A-Za-z_][A-Za-z0-9_]*(?:[ \t].*)?", re.ASCII)


def _keys(value: Any, subject: str) -> list[str]:
    """A key list. One comma-separated string is accepted too (V3 says "separated by a comma")."""
    if isinstance(value, str):
        return [key.strip() for key in value.split(",") if key.strip()]
    return text_list(value, subject)


def _normalize_entry(value: Any, position: int) -> dict[str, Any]:
    where = f"Lorebook entry {position}"
    if not isinstance(value, dict):
        raise CardError(f"{where} must be an object, not {json_kind(value)}.")
    entry = dict(value)  # a shallow copy keeps unknown keys and their order

    def subject(name: str) -> str:
        return f"{where}: the field '{name}'"

    entry["keys"] = _keys(entry.get("keys"), subject("keys"))
    entry["content"] = text(entry.get("content"), subject("content"))
    entry["extensions"] = json_object(entry.get("extensions"), subject("extensions"))
    enabled = entry.get("enabled")
    entry["enabled"] = True if enabled is None else boolean(enabled, subject("enabled"))
    order = entry.get("insertion_order")
    entry["insertion_order"] = 0 if order is None else number(order, subject("insertion_order"))
    if entry.get("secondary_keys") is not None:
        entry["secondary_keys"] = _keys(entry["secondary_keys"], subject("secondary_keys"))
    for name in _ENTRY_FLAGS:
        if entry.get(name) is not None:
            boolean(entry[name], subject(name))
    for name in _ENTRY_TEXTS:
        if entry.get(name) is not None:
            text(entry[name], subject(name))
    if entry.get("priority") is not None:
        number(entry["priority"], subject("priority"))
    _check_entry_size(entry, where)
    entry_id = entry.get("id")
    if entry_id is not None and (isinstance(entry_id, bool) or not isinstance(entry_id, str | int)):
        # V3 says text, SillyTavern writes numbers; both are fine as identifiers.
        raise CardError(f"{subject('id')} must be text or a number, not {json_kind(entry_id)}.")
    return entry


def _check_entry_size(entry: dict[str, Any], where: str) -> None:
    keys = [*entry["keys"], *(entry.get("secondary_keys") or [])]
    if len(keys) > MAX_KEYS_PER_ENTRY:
        raise CardError(
            f"{where} has {len(keys):,} keys; a lorebook entry may have at most "
            f"{MAX_KEYS_PER_ENTRY:,} (keys and secondary keys together)."
        )
    regex = entry.get("use_regex") is True
    limit = MAX_REGEX_KEY_CHARS if regex else MAX_KEY_CHARS
    for key in keys:
        if len(key) > limit:
            kind = "regex key" if regex else "key"
            raise CardError(
                f"{where} has a {kind} of {len(key):,} characters ({short_quote(key)}); "
                f"a {kind} may have at most {limit:,}."
            )


def _entry_chars(entry: dict[str, Any]) -> int:
    keys = [*entry["keys"], *(entry.get("secondary_keys") or [])]
    return len(entry["content"]) + sum(len(key) for key in keys)


def normalize_character_book(value: Any) -> dict[str, Any] | None:
    """Check and normalise a `character_book` value; null/absent gives None.

    Returns a new dict (the input is not modified) that keeps every unknown key.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CardError(
            f"The lorebook ('character_book') must be an object, not {json_kind(value)}."
        )
    book = dict(value)
    book["extensions"] = json_object(book.get("extensions"), "The lorebook's 'extensions'")
    entries = book.get("entries")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise CardError(f"The lorebook's 'entries' must be a list, not {json_kind(entries)}.")
    if len(entries) > MAX_LOREBOOK_ENTRIES:
        raise CardError(
            f"The lorebook has {len(entries):,} entries; at most {MAX_LOREBOOK_ENTRIES:,} are "
            "allowed."
        )
    book["entries"] = [
        _normalize_entry(entry, position) for position, entry in enumerate(entries, 1)
    ]
    total = sum(_entry_chars(entry) for entry in book["entries"])
    if total > MAX_LOREBOOK_CHARS:
        raise CardError(
            f"The lorebook's keys and content hold {total:,} characters; at most "
            f"{MAX_LOREBOOK_CHARS:,} are allowed."
        )
    for name in _BOOK_NUMBERS:
        if book.get(name) is not None:
            number(book[name], f"The lorebook's '{name}'")
    for name in _BOOK_TEXTS:
        if book.get(name) is not None:
            text(book[name], f"The lorebook's '{name}'")
    if book.get("recursive_scanning") is not None:
        boolean(book["recursive_scanning"], "The lorebook's 'recursive_scanning'")
    return book


def character_book_for_v3(book: dict[str, Any] | None) -> dict[str, Any] | None:
    """A deep copy shaped for V3 export: every entry gets the required `use_regex` (False)."""
    if book is None:
        return None
    exported = copy.deepcopy(book)
    for entry in exported.get("entries", []):
        if entry.get("use_regex") is None:
            entry["use_regex"] = False
    return exported


def character_book_for_v2(book: dict[str, Any] | None) -> dict[str, Any] | None:
    """A deep copy shaped for V2 export: V3 decorators are stripped from entry content.

    V2 apps do not understand decorators and would put `@@depth 3` into the prompt; the V3 spec
    asks to remove them when backfilling V2.
    """
    if book is None:
        return None
    exported = copy.deepcopy(book)
    for entry in exported.get("entries", []):
        content = entry.get("content")
        if isinstance(content, str):
            entry["content"] = strip_decorators(content)[1]
    return exported


def strip_decorators(content: str) -> tuple[list[str], str]:
    """Split the leading V3 decorator lines off lorebook entry content.

    Returns (decorator lines as written, e.g. ["@@depth 3", "@@@instruct_depth 5"], the rest).
    Only a block of `@@name` / `@@@name` lines at the start counts (blank lines before it are
    allowed); blank lines right after the block are trimmed, as the spec asks. Content that does
    not start with a decorator comes back unchanged.
    """
    lines = content.split("\n")
    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1
    decorators: list[str] = []
    while index < len(lines) and _DECORATOR_LINE.fullmatch(lines[index].strip()):
        decorators.append(lines[index].strip())
        index += 1
    if not decorators:
        return [], content
    while index < len(lines) and not lines[index].strip():
        index += 1
    return decorators, "\n".join(lines[index:])

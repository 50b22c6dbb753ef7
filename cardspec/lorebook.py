"""The lorebook (`character_book`): the one Django-free home of its rules.

- Normalising it on import (strict: a wrong type is refused with a message naming the field),
  and shaping it for V2/V3 export.
- V3 `@@decorator` lines (kwaroran/character-card-spec-v3 ``SPEC_V3.md``): splitting them off
  entry content (`strip_decorators`, for the V2 export) and reading the ones we act on
  (`parse_decorators`, for prompts). One grammar for both, so an export never keeps a line the
  prompt treats as a decorator or the other way round.
- Reading a stored book for prompt assembly (`read_book`, `read_entry`): lenient, never raises,
  falls back to SillyTavern's defaults, and resolves where each entry goes (`Placement`) from
  SillyTavern's `extensions.position`/`depth`/`role`, the V2 `position` and the V3 decorators.

The lorebook stays a plain dict so that unknown keys of the book and of every entry (`probability`,
`depth`, app-specific fields...) survive a round trip without a schema of their own. Normalising
only fills in required fields, converts `keys` given as one comma-separated string into the list
V2 and V3 require, checks the types of the fields prompt assembly relies on, and refuses books
beyond the size limits below (the import and the admin editor both come through here).
`secondary_keys` given as one comma-separated string (as V3's text describes it, and some writers
do) is kept as that string, so that the card exports as it came; the prompt splits it.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cardspec.model import CardError
from cardspec.values import (
    boolean,
    is_number,
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

# A decorator line (stripped): `@@name` or a `@@@name` fallback, then optionally blanks and a
# value. Names are latin letters, digits and underscores (the spec asks for snake_case), so
# `@@ x`, `@@3d` and `@@@@x` are content, not decorators.
_DECORATOR_LINE = re.compile(r"(@@@?)([A-Za-z_][A-Za-z0-9_]*)(?:[ \t]+(.*))?", re.ASCII)
# One line and its ending; \r\n, \r and \n all end a line (cards arrive with all three).
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n|$)")


def split_keys(value: str) -> list[str]:
    """Keys from one comma-separated string (V3 says "separated by a comma"); blanks dropped."""
    return [key.strip() for key in value.split(",") if key.strip()]


def _keys(value: Any, subject: str) -> list[str]:
    """`keys`: a list of text; one comma-separated string is accepted and becomes that list."""
    if isinstance(value, str):
        return split_keys(value)
    return text_list(value, subject)


def _secondary_keys(value: Any, subject: str) -> str | list[str]:
    """`secondary_keys`: a list of text, or one comma-separated string, kept as it is."""
    return value if isinstance(value, str) else text_list(value, subject)


def _entry_keys(entry: dict[str, Any]) -> list[str]:
    """The keys and secondary keys of a normalised entry, split as the prompt reads them."""
    secondary = entry.get("secondary_keys")
    if isinstance(secondary, str):
        secondary = split_keys(secondary)
    return [*entry["keys"], *(secondary or [])]


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
        entry["secondary_keys"] = _secondary_keys(
            entry["secondary_keys"], subject("secondary_keys")
        )
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
    keys = _entry_keys(entry)
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
    return len(entry["content"]) + sum(len(key) for key in _entry_keys(entry))


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


# --- V3 decorators -------------------------------------------------------------------------------


def _decorator_block(content: str) -> tuple[list[re.Match[str]], str]:
    """The decorator lines at the top of `content` (blank lines around them skipped) and the
    rest, byte for byte; no decorator lines gives ``([], content)``."""
    if not content.lstrip().startswith("@@"):
        # Nearly every entry: every send reads the whole book, so no line-by-line scan.
        return [], content
    decorators: list[re.Match[str]] = []
    for line in _LINE.finditer(content):
        if line.start() == len(content):
            break  # the pattern's empty match at the very end
        stripped = line.group(1).strip()
        if not stripped:
            continue
        decorator = _DECORATOR_LINE.fullmatch(stripped)
        if decorator is None:
            return (decorators, content[line.start() :]) if decorators else ([], content)
        decorators.append(decorator)
    return (decorators, "") if decorators else ([], content)


def strip_decorators(content: str) -> tuple[list[str], str]:
    """Split the leading V3 decorator lines off lorebook entry content.

    Returns (decorator lines as written, e.g. ["@@depth 3", "@@@instruct_depth 5"], the rest).
    Only a block of `@@name` / `@@@name` lines at the start counts; blank lines before, between
    and right after them go too, as the spec asks. The rest is kept byte for byte (line endings
    included). Content that does not start with a decorator comes back unchanged.
    """
    decorators, rest = _decorator_block(content)
    return [decorator.group(0) for decorator in decorators], rest


def _at_least(minimum: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        count = read_whole_number(value)
        return None if count is None or count < minimum else str(count)

    return check


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        lowered = value.strip().lower()
        return lowered if lowered in choices else None

    return check


def _no_value(_value: str) -> str:
    return ""


def _any_number(value: str) -> str | None:
    count = read_whole_number(value)
    return None if count is None else str(count)


def _key_value(value: str) -> str | None:
    return value.strip() if split_keys(value) else None


ROLES = ("system", "user", "assistant")
# V3 `@@position` values: next to the card's description, or inside its personality / scenario.
BEFORE_DESC = "before_desc"
AFTER_DESC = "after_desc"
PERSONALITY = "personality"
SCENARIO = "scenario"

# The decorators we act on, each with its value check: the check returns the normalised value,
# or None when the value is invalid (the decorator is then ignored and its fallback considered).
# Any other name (`@@instruct_depth`, `@@is_greeting`, `@@keep_activate_after_match`, ...) is
# ignored the same way; docs/prompt-rules.md says why for each.
DECORATORS: dict[str, Callable[[str], str | None]] = {
    "activate": _no_value,
    "dont_activate": _no_value,
    "scan_depth": _at_least(0),
    "activate_only_after": _at_least(0),
    # 0 would divide by zero; the spec says invalid values are ignored.
    "activate_only_every": _at_least(1),
    "additional_keys": _key_value,
    "exclude_keys": _key_value,
    "depth": _any_number,
    "role": _one_of(*ROLES),
    "position": _one_of(BEFORE_DESC, AFTER_DESC, PERSONALITY, SCENARIO),
    "ignore_on_max_context": _no_value,
    "disable_ui_prompt": _one_of("system_prompt", "post_history_instructions"),
}


def parse_decorators(content: str) -> tuple[dict[str, str], str]:
    """The decorators of lorebook `content` that we act on, and the content without them.

    Returns ``(decorators, body)``: `decorators` maps each recognised name (lower case) to its
    normalised value ("" for flags, a whole number for counts, a lower-case word for roles and
    positions). A name counts once (the first valid occurrence wins); an unrecognised or invalid
    ``@@name`` falls back to the first valid ``@@@name`` line right after it. `body` is the
    content after the decorator block (`strip_decorators`), line endings normalised to ``\\n`` and
    surrounding whitespace trimmed.
    """
    lines, rest = _decorator_block(content)
    groups: list[list[tuple[str, str]]] = []
    for line in lines:
        at_signs, name, value = line.groups()
        decorator = (name.lower(), (value or "").strip())
        # A `@@@` line is a fallback for the `@@` line above it; a stray leading one is
        # treated as its own group so it is still considered.
        if at_signs == "@@" or not groups:
            groups.append([decorator])
        else:
            groups[-1].append(decorator)
    decorators: dict[str, str] = {}
    for group in groups:
        for name, value in group:
            check = DECORATORS.get(name)
            normalised = check(value) if check is not None else None
            if normalised is not None:
                decorators.setdefault(name, normalised)
                break
    body = rest.replace("\r\n", "\n").replace("\r", "\n").strip()
    return decorators, body


# --- Lenient reading, for prompt assembly ----------------------------------------------------------
# Import refuses wrong types (above), but a stored book may predate a rule, come from the admin's
# raw JSON, or hold what other apps write (0/1 for booleans, numbers as text). Prompt assembly
# must never fail on a card, so these readers fall back to a default instead of raising.


def read_number(value: Any) -> float | None:
    """A JSON number read liberally (numeric strings too); anything else, NaN, ±inf and integers
    beyond a float's range give None."""
    # `true` is no meaningful order/priority/depth, although Python takes it for 1.
    if not (is_number(value) or isinstance(value, str)):
        return None
    try:
        # An integer of 400 digits is valid JSON, and import keeps it; float() overflows.
        number_value = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number_value if math.isfinite(number_value) else None


def read_whole_number(value: Any) -> int | None:
    """`read_number`, rounded down (decorator counts, depths); None when unreadable."""
    number_value = read_number(value)
    return None if number_value is None else math.floor(number_value)


def read_flag(value: Any, default: bool) -> bool:
    """A JSON boolean read liberally (exporters sometimes write 0/1 or "true")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes", "on"}:
            return True
        if lowered in {"false", "0", "no", "off", ""}:
            return False
    return default


def read_keys(value: Any) -> list[str]:
    """Keys from an array of strings or one comma-separated string; blanks never match."""
    if isinstance(value, str):
        return split_keys(value)
    if isinstance(value, list | tuple):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return []


def read_role(value: Any) -> str | None:
    """A chat role: "system"/"user"/"assistant" (any case) or SillyTavern's 0/1/2; else None."""
    if isinstance(value, str) and value.strip().lower() in ROLES:
        return value.strip().lower()
    number_value = read_number(value)
    if number_value is not None and number_value in (0, 1, 2):
        return ROLES[int(number_value)]
    return None


def read_depth(value: Any, default: int) -> int:
    """A message depth: a whole number (fractions rounded down, below 0 read as 0), else `default`.

    Empty text counts as absent. (SillyTavern reads "" as depth 0 and never inserts negative or
    fractional depths; a card that says "" meant "the default" and a fraction meant about there.)
    """
    depth = read_whole_number(value)  # "" reads as no number, like any other text
    return default if depth is None else max(0, depth)


# --- Where an entry goes -------------------------------------------------------------------------

# Where lorebook text can go. The first two are the V2 `position` values.
BEFORE_CHAR = "before_char"  # the system message, before the character's description
AFTER_CHAR = "after_char"  # the system message, after the character definition and persona
AUTHORS_NOTE_TOP = "authors_note_top"  # in the chat, with SillyTavern's (empty) Author's Note
AUTHORS_NOTE_BOTTOM = "authors_note_bottom"
AT_DEPTH = "at_depth"  # in the chat, `depth` messages from the end, as `role`
EXAMPLES_TOP = "examples_top"  # example dialogue blocks before the card's own
EXAMPLES_BOTTOM = "examples_bottom"  # ... after them
OUTLET = "outlet"  # only where a `{{outlet::name}}` macro asks for it (we have none)

# SillyTavern's `world_info_position`, the numbers its exports write in `extensions.position`.
ST_POSITIONS = (
    BEFORE_CHAR,
    AFTER_CHAR,
    AUTHORS_NOTE_TOP,
    AUTHORS_NOTE_BOTTOM,
    AT_DEPTH,
    EXAMPLES_TOP,
    EXAMPLES_BOTTOM,
    OUTLET,
)
# SillyTavern's defaults for an entry at depth (world-info.js `DEFAULT_DEPTH`, role 0 = system).
DEFAULT_DEPTH = 4
DEFAULT_ROLE = "system"
# SillyTavern's default "Order", for entries without a numeric `insertion_order`.
DEFAULT_INSERTION_ORDER = 100
# Priority of entries without a numeric `priority` (V2: lower priority is discarded first).
DEFAULT_PRIORITY = 0


@dataclass(frozen=True)
class Placement:
    """Where one entry's content goes in the prompt.

    `where` is one of the names above or a V3 `@@position` value (`BEFORE_DESC`, `AFTER_DESC`,
    `PERSONALITY`, `SCENARIO`). `depth` and `role` matter for `AT_DEPTH` only. `fallback` is
    set for `PERSONALITY` and `SCENARIO`: the V3 spec ignores those positions when the card has
    no such section, and the entry then goes where it would have gone without `@@position`.
    """

    where: str
    depth: int = DEFAULT_DEPTH
    role: str = DEFAULT_ROLE
    fallback: Placement | None = None


def _st_position(value: Any) -> str | None:
    number_value = read_number(value)
    if number_value is None or not number_value.is_integer():
        return None
    index = int(number_value)
    return ST_POSITIONS[index] if 0 <= index < len(ST_POSITIONS) else None


def entry_placement(entry: Mapping[str, Any], decorators: Mapping[str, str]) -> Placement:
    """Where `entry` goes, from (strongest first):

    1. ``@@position`` (V3): before/after the description, or inside personality/scenario;
    2. ``@@depth N`` (V3): in the chat, N messages from the end (below 1: after the last);
    3. ``extensions.position`` (SillyTavern's number, 0-7, see `ST_POSITIONS`), with
       ``extensions.depth`` (default 4) for "at depth";
    4. the V2 ``position``: ``"before_char"`` goes before the character, anything else
       (``"after_char"``, ``""``, missing) after it, as SillyTavern's import reads it.

    The role of an in-chat entry is ``@@role``, else ``extensions.role`` (0/1/2 or a name),
    else system.
    """
    extensions = entry.get("extensions")
    if not isinstance(extensions, Mapping):
        extensions = {}
    role = decorators.get("role") or read_role(extensions.get("role")) or DEFAULT_ROLE
    if "depth" in decorators:
        base = Placement(AT_DEPTH, depth=max(0, int(decorators["depth"])), role=role)
    elif (position := _st_position(extensions.get("position"))) is not None:
        if position == AT_DEPTH:
            base = Placement(AT_DEPTH, read_depth(extensions.get("depth"), DEFAULT_DEPTH), role)
        else:
            base = Placement(position)
    elif entry.get("position") == BEFORE_CHAR:
        base = Placement(BEFORE_CHAR)
    else:
        base = Placement(AFTER_CHAR)
    position = decorators.get("position")
    if position in (BEFORE_DESC, AFTER_DESC):
        return Placement(position)
    if position in (PERSONALITY, SCENARIO):
        return Placement(position, fallback=base)
    return base


@dataclass(frozen=True)
class LoreEntry:
    """One enabled lorebook entry as prompt assembly reads it (text not yet macro-expanded)."""

    index: int  # position in the book's `entries`
    body: str  # the content without its decorator lines
    decorators: dict[str, str]
    placement: Placement
    keys: list[str]
    secondary_keys: list[str]  # empty unless the entry is `selective`
    use_regex: bool
    case_sensitive: bool
    constant: bool
    insertion_order: float
    priority: float


@dataclass(frozen=True)
class LoreBook:
    """A `character_book` as prompt assembly reads it."""

    entries: list[LoreEntry] = field(default_factory=list)
    scan_depth: int | None = None  # None: the site's default
    token_budget: float | None = None  # None: no limit
    recursive_scanning: bool = False


def read_entry(raw: Any, index: int) -> LoreEntry | None:
    """Read one stored entry leniently; None for one that can never reach a prompt (not an
    object, disabled, or content that is not text)."""
    if not isinstance(raw, Mapping) or not read_flag(raw.get("enabled"), True):
        return None
    content = raw.get("content")
    if not isinstance(content, str):
        return None
    decorators, body = parse_decorators(content)
    order = read_number(raw.get("insertion_order"))
    priority = read_number(raw.get("priority"))
    selective = read_flag(raw.get("selective"), False)
    return LoreEntry(
        index=index,
        body=body,
        decorators=decorators,
        placement=entry_placement(raw, decorators),
        keys=read_keys(raw.get("keys")),
        secondary_keys=read_keys(raw.get("secondary_keys")) if selective else [],
        use_regex=read_flag(raw.get("use_regex"), False),
        case_sensitive=read_flag(raw.get("case_sensitive"), False),
        constant=read_flag(raw.get("constant"), False),
        insertion_order=DEFAULT_INSERTION_ORDER if order is None else order,
        priority=DEFAULT_PRIORITY if priority is None else priority,
    )


def read_book(value: Any) -> LoreBook | None:
    """Read a stored `character_book` leniently; None when there is no usable book."""
    if not isinstance(value, Mapping):
        return None
    raw_entries = value.get("entries")
    if not isinstance(raw_entries, list):
        return None
    entries = [
        entry
        for index, raw in enumerate(raw_entries)
        if (entry := read_entry(raw, index)) is not None
    ]
    scan_depth = read_number(value.get("scan_depth"))
    token_budget = read_number(value.get("token_budget"))
    return LoreBook(
        entries=entries,
        scan_depth=int(scan_depth) if scan_depth is not None and scan_depth >= 0 else None,
        # Some exporters write 0 for "no limit"; dropping every entry would be the surprising
        # reading.
        token_budget=token_budget if token_budget is not None and token_budget > 0 else None,
        recursive_scanning=read_flag(value.get("recursive_scanning"), False),
    )

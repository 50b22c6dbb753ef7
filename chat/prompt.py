"""Prompt assembly: turns a persona and a chat history into Chat Completions messages.

Pure module: no Django, no I/O, deterministic. It implements the prompt-relevant parts of the
Character Card V2/V3 specs (malfoyslastname/character-card-spec-v2 ``spec_v2.md``,
kwaroran/character-card-spec-v3 ``SPEC_V3.md``); lorebook matching follows SillyTavern's
world-info behaviour where the specs leave room.

Message layout produced by :func:`build_prompt` (with a character):

1. One leading ``system`` message. Its sections, separated by a blank line and each omitted when
   empty, are: the system prompt; the ``before_char`` lorebook entries; the character definition
   (description as written, ``"{{char}}'s personality: ..."``, ``"Scenario: ..."``, and the user's
   persona as ``"{{user}}'s persona: ..."``); the ``after_char`` lorebook entries. Lorebook entries
   inside a section are joined by a newline, lowest ``insertion_order`` first.
2. One ``system`` message per example dialogue (``mes_example`` split on ``<START>``), each
   starting with ``"Example dialogue:"``. They are separate messages so that the context budget
   can drop them one at a time, last example first.
3. The stored history turns, oldest first, roles as stored.
4. When continuing the last reply (``continuing=True``, SillyTavern's "Continue"), a ``system``
   message :data:`CONTINUE_NUDGE` after the history, which then ends with that reply as written.
5. ``post_history_instructions`` as a final ``system`` message, when non-empty.

Without a character the messages are just the history turns (unchanged, budget still applied).

All prompt text, history turns included, has ``\\r\\n``/``\\r`` normalised to ``\\n``, the
CBS comments ``{{// ...}}``, ``{{comment: ...}}`` and ``{{hidden_key: ...}}`` removed, and the
macros ``{{char}}``/``<BOT>``/``<CHAR>`` and ``{{user}}``/``<USER>`` replaced case-insensitively in
a single pass (so a user called ``{{char}}`` is not expanded again).

Context budget: ``context_tokens`` bounds :func:`count_message_tokens` of the result. Over budget,
example dialogues go first (last first), then history turns oldest first; the leading system
message, the post-history instructions and the latest user turn are never dropped, even when that
still does not fit. The lorebook is part of the leading system message, so only its own
``token_budget`` limits it.

Scan budget: ``lore_budget_seconds`` bounds the time all lorebook key searches of one prompt take
together (each regex search is also capped at ``REGEX_KEY_TIMEOUT``). Once it is spent, the
entries still undecided are treated as not activated, in card order, and the prompt says how many
went unchecked (``Prompt.lore_unscanned``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from characters.card_macros import expand_macros, normalize_newlines

DEFAULT_SYSTEM_PROMPT = (
    "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}. "
    "Stay in character."
)

# Messages scanned for lorebook keys when the book has no usable `scan_depth`.
DEFAULT_SCAN_DEPTH = 10
# SillyTavern's default "Order"; used when an entry has no numeric `insertion_order`.
DEFAULT_INSERTION_ORDER = 100
# Priority of entries without a numeric `priority` (V2: lower priority is discarded first).
DEFAULT_PRIORITY = 0
# Recursive scanning stops after this many extra passes even if entries keep activating each
# other, so a large, densely cross-linked book cannot make prompt assembly quadratic-unbounded.
MAX_RECURSION_PASSES = 10
# Token heuristic: English-like text averages ~4 characters per BPE token; 3.5 errs on the side of
# overestimating so a prompt we think fits does fit.
CHARS_PER_TOKEN = 3.5
# CJK, kana, Hangul, fullwidth forms and emoji are all at or above U+2E80 and cost roughly one
# token (or more) per character, so chars/3.5 would badly underestimate them.
WIDE_CHAR_START = 0x2E80
_WIDE_CHARS = re.compile(f"[{chr(WIDE_CHAR_START)}-{chr(0x10FFFF)}]+")
# Role markers and separators the API wraps around every message (OpenAI documents ~3-4).
MESSAGE_OVERHEAD_TOKENS = 4
EXAMPLE_HEADER = "Example dialogue:"
# SillyTavern's default continue nudge (`continue_nudge_prompt`), sent after the reply to carry on.
CONTINUE_NUDGE = "[Continue your last message without repeating its original content.]"

_ORIGINAL_RE = re.compile(r"\{\{original\}\}", re.IGNORECASE)
_START_RE = re.compile(r"<START>", re.IGNORECASE)
# JavaScript-style `/pattern/flags` regex keys, as SillyTavern writes them.
_SLASH_REGEX_RE = re.compile(r"^/(.+)/([dgimsuvy]*)$", re.DOTALL)
_JS_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}

# V3 decorators that change activation and can be honoured from the history alone. Placement
# decorators (@@depth, @@role, @@position, ...) are stripped but ignored: entries always go
# before/after the character definition.
_FLAG_DECORATORS = frozenset({"activate", "dont_activate"})
_INT_DECORATORS = frozenset({"scan_depth", "activate_only_after", "activate_only_every"})
_KEY_DECORATORS = frozenset({"additional_keys", "exclude_keys"})


@dataclass(frozen=True)
class PromptCharacter:
    """The prompt-relevant fields of a character card (V2/V3 `data` names).

    Deliberately lacks creator_notes, tags, creator and character_version: the specs forbid
    using them in prompts, so they cannot leak in by accident.
    """

    name: str
    nickname: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    mes_example: str = ""
    character_book: dict | None = None


@dataclass(frozen=True)
class Turn:
    """One stored chat message: role is "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """The assembled request messages and what had to be left out to fit the budget.

    `activated_lore` holds the indices (into `character_book["entries"]`) of the lorebook entries
    placed in the prompt, in prompt order; `dropped_lore` those activated but discarded to honour
    the book's `token_budget`.
    """

    messages: list[dict[str, str]]
    trimmed_turns: int = 0
    dropped_examples: bool = False
    notes: list[str] = field(default_factory=list)
    activated_lore: list[int] = field(default_factory=list)
    dropped_lore: list[int] = field(default_factory=list)
    lore_unscanned: int = 0


@dataclass(frozen=True)
class LoreSelection:
    """Result of :func:`activate_lorebook`: the entry texts to place, and why."""

    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    activated: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unscanned: list[int] = field(default_factory=list)


# --- Text helpers -----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Cheaply estimate the token count of `text` (no tokenizer dependency).

    ``ceil(narrow_chars / CHARS_PER_TOKEN) + wide_chars`` where wide characters are those at or
    above U+2E80 (CJK, kana, Hangul, fullwidth, emoji), which cost about a token each.
    """
    if not text:
        return 0
    # Every send estimates the whole history: counting in C keeps a 500-message chat's send
    # at a few milliseconds (a per-character Python loop took 8 ms more).
    wide = 0 if text.isascii() else len(text) - len(_WIDE_CHARS.sub("", text))
    return math.ceil((len(text) - wide) / CHARS_PER_TOKEN) + wide


def count_message_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """Estimate the tokens of a message list: content plus a fixed per-message overhead."""
    return sum(_message_tokens(m) for m in messages)


def _message_tokens(message: Mapping[str, str]) -> int:
    return estimate_tokens(message["content"]) + MESSAGE_OVERHEAD_TOKENS


def resolve_override(value: str, default: str) -> str:
    """Apply the card override rule of `system_prompt` / `post_history_instructions`.

    A blank card value means "use the default"; otherwise the card value wins, with
    ``{{original}}`` (case-insensitive) expanded to the default.
    """
    if not value.strip():
        return default
    return _ORIGINAL_RE.sub(lambda _m: default, value)


def split_examples(mes_example: str) -> list[str]:
    """Split `mes_example` on ``<START>`` (case-insensitive) into stripped, non-empty examples."""
    blocks = _START_RE.split(normalize_newlines(mes_example))
    return [block.strip() for block in blocks if block.strip()]


def parse_decorators(content: str) -> tuple[dict[str, str], str]:
    """Split V3 ``@@decorator`` lines off the top of lorebook `content`.

    Returns ``(decorators, body)``: `decorators` maps the recognised decorator names this module
    honours to their value (first occurrence wins; an unrecognised or invalid ``@@name`` falls
    back to the first valid ``@@@name`` line right after it), and `body` is the content with every
    leading ``@@``/``@@@`` line and the surrounding blank lines removed.
    """
    lines = normalize_newlines(content).split("\n")
    groups: list[list[tuple[str, str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line and not line.startswith("@@"):
            break
        if line:
            level = len(line) - len(line.lstrip("@"))
            parts = line.lstrip("@").split(None, 1)
            name = parts[0].lower() if parts else ""
            value = parts[1].strip() if len(parts) > 1 else ""
            # A `@@@` line is a fallback for the `@@` line above it; a stray leading one is
            # treated as its own group so it is still considered.
            if level == 2 or not groups:
                groups.append([(name, value)])
            else:
                groups[-1].append((name, value))
        i += 1
    decorators: dict[str, str] = {}
    for group in groups:
        for name, value in group:
            if _decorator_valid(name, value):
                decorators.setdefault(name, value)
                break
    return decorators, "\n".join(lines[i:]).strip()


def strip_decorators(content: str) -> str:
    """Return lorebook `content` without its leading V3 ``@@decorator`` lines."""
    return parse_decorators(content)[1]


def _decorator_valid(name: str, value: str) -> bool:
    if name in _FLAG_DECORATORS:
        return True
    if name in _INT_DECORATORS:
        number = _parse_int(value)
        # @@activate_only_every 0 would divide by zero; the spec says ignore invalid values.
        minimum = 1 if name == "activate_only_every" else 0
        return number is not None and number >= minimum
    if name in _KEY_DECORATORS:
        return bool(_key_list(value))
    return False


def _parse_int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


# --- Lorebook ---------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """Read a JSON number liberally (numeric strings too); anything else gives None."""
    # bool is an int subclass; `true` is not a meaningful order/priority/depth.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _number_or(value: Any, default: float) -> float:
    number = _number(value)
    return default if number is None else number


def _flag(value: Any, default: bool) -> bool:
    """Read a JSON boolean liberally (exporters sometimes write 0/1 or "true")."""
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


def _key_list(value: Any) -> list[str]:
    """Keys from an array of strings or one comma-separated string; blanks never match."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [item for item in value if isinstance(item, str)]
    else:
        return []
    return [item.strip() for item in items if item.strip()]


# Cards come from strangers: a catastrophic-backtracking key must not stall the worker that
# builds prompts. The `regex` module can bound each search; a search that runs out never matches.
REGEX_KEY_TIMEOUT = 0.05  # seconds per search


def _compile_regex_key(key: str, case_sensitive: bool) -> regex.Pattern[str] | None:
    """Compile a regex key (bare or ``/pattern/flags``); a broken pattern gives None."""
    slash = _SLASH_REGEX_RE.match(key)
    if slash:
        pattern, flag_letters = slash.groups()
        # Explicit JS flags decide case sensitivity; g/y/u/d/v have no meaning for a search.
        flags = 0
        for letter in flag_letters:
            flags |= _JS_FLAGS.get(letter, 0)
    else:
        pattern = key
        flags = 0 if case_sensitive else regex.IGNORECASE
    try:
        # VERSION0 keeps the standard library's syntax and semantics.
        return regex.compile(pattern, flags | regex.VERSION0)
    except (regex.error, OverflowError, RecursionError, ValueError):
        return None


class ScanBudget:
    """The time left for one prompt's lorebook searches: a deadline shared by all of them.

    A per-search timeout alone does not bound a send: 2,000 entries of 50 ms each are 100 s.
    `seconds` None means unlimited. `clock` is injectable so tests can spend the budget
    deterministically. `refused` counts the searches not run (or cut short) for want of time.
    """

    def __init__(
        self, seconds: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._deadline = None if seconds is None else clock() + max(0.0, seconds)
        self.refused = 0

    def left(self) -> float | None:
        """Seconds left (None: unlimited); once none are left, counts a refused search."""
        if self._deadline is None:
            return None
        left = self._deadline - self._clock()
        if left <= 0:
            self.refused += 1
        return left


def _bounded_search(pattern: regex.Pattern[str], text: str, budget: ScanBudget) -> bool:
    left = budget.left()
    if left is not None and left <= 0:
        return False
    timeout = REGEX_KEY_TIMEOUT if left is None else min(REGEX_KEY_TIMEOUT, left)
    try:
        # concurrent=True releases the GIL during the search, so a slow key does not also
        # stall the event loop of the process building the prompt.
        return pattern.search(text, timeout=timeout, concurrent=True) is not None
    except TimeoutError:
        if timeout < REGEX_KEY_TIMEOUT:
            budget.refused += 1  # cut short by the budget, not by the key's own cap
        return False


def _budgeted(found: Callable[[str], bool], keys: Sequence[str], budget: ScanBudget) -> bool:
    """Whether `found(key)` holds for any key, checking the budget before each key."""
    for key in keys:
        left = budget.left()
        if left is not None and left <= 0:
            return False
        if found(key):
            return True
    return False


Matcher = Callable[[Sequence[str]], bool]


def _make_matcher(
    keys: list[str],
    *,
    use_regex: bool,
    case_sensitive: bool,
    notes: list[str],
    label: str,
    budget: ScanBudget,
) -> Matcher:
    """Build a predicate telling whether any of `keys` occurs in any of the given texts.

    Plain keys match as substrings (SillyTavern's default), which also works for CJK text that
    has no word boundaries. Every search draws on `budget`; once it is spent, nothing matches.
    """
    if use_regex:
        patterns = []
        for key in keys:
            compiled = _compile_regex_key(key, case_sensitive)
            if compiled is None:
                notes.append(f"{label}: invalid regex key {key!r} never matches")
            else:
                patterns.append(compiled)

        def regex_match(texts: Sequence[str]) -> bool:
            return any(_bounded_search(p, t, budget) for p in patterns for t in texts)

        return regex_match

    if case_sensitive:

        def exact_match(texts: Sequence[str]) -> bool:
            return _budgeted(lambda k: any(k in t for t in texts), keys, budget)

        return exact_match

    folded_keys = [k.casefold() for k in keys]

    def folded_match(texts: Sequence[str]) -> bool:
        folded = [t.casefold() for t in texts]
        return _budgeted(lambda k: any(k in t for t in folded), folded_keys, budget)

    return folded_match


@dataclass(frozen=True)
class _LoreEntry:
    index: int
    content: str  # expanded, decorators stripped: what goes into the prompt
    scan_text: str  # what recursive scanning sees (hidden keys kept)
    after_char: bool
    insertion_order: float
    priority: float
    constant: bool
    scan_depth: int | None
    keys: Matcher
    secondary: Matcher | None
    additional: Matcher | None
    exclude: Matcher | None
    decorators: dict[str, str]


def _parse_entry(
    raw: Any, index: int, *, char_name: str, user_name: str, notes: list[str], budget: ScanBudget
) -> _LoreEntry | None:
    """Normalise one raw entry; None for entries that can never contribute to the prompt."""
    if not isinstance(raw, Mapping) or not _flag(raw.get("enabled"), True):
        return None
    content = raw.get("content")
    if not isinstance(content, str):
        return None
    decorators, body = parse_decorators(content)
    text = expand_macros(body, char_name=char_name, user_name=user_name).strip()
    if not text:
        # The spec: empty content adds nothing, whether or not the entry matches.
        return None
    label = f"lorebook entry {index}"
    use_regex = _flag(raw.get("use_regex"), False)
    case_sensitive = _flag(raw.get("case_sensitive"), False)

    def matcher(keys: list[str]) -> Matcher | None:
        if not keys:
            return None
        return _make_matcher(
            keys,
            use_regex=use_regex,
            case_sensitive=case_sensitive,
            notes=notes,
            label=label,
            budget=budget,
        )

    selective = _flag(raw.get("selective"), False)
    depth = decorators.get("scan_depth")
    return _LoreEntry(
        index=index,
        content=text,
        scan_text=expand_macros(
            body, char_name=char_name, user_name=user_name, keep_hidden_keys=True
        ),
        after_char=raw.get("position") == "after_char",
        insertion_order=_number_or(raw.get("insertion_order"), DEFAULT_INSERTION_ORDER),
        priority=_number_or(raw.get("priority"), DEFAULT_PRIORITY),
        constant=_flag(raw.get("constant"), False),
        scan_depth=int(depth) if depth is not None else None,
        keys=matcher(_key_list(raw.get("keys"))) or (lambda _texts: False),
        secondary=matcher(_key_list(raw.get("secondary_keys"))) if selective else None,
        additional=matcher(_key_list(decorators.get("additional_keys", ""))),
        exclude=matcher(_key_list(decorators.get("exclude_keys", ""))),
        decorators=decorators,
    )


def _entry_fires(
    entry: _LoreEntry,
    history_texts: Sequence[str],
    extra_texts: Sequence[str],
    *,
    book_depth: int,
    assistant_turns: int,
) -> bool:
    """Decide activation of one entry against the history window plus recursion texts."""
    decorators = entry.decorators
    if "activate" in decorators:
        return True  # "IN ANY CASE" per the V3 spec (only `enabled: false` beats it).
    if "dont_activate" in decorators:
        return False
    after = decorators.get("activate_only_after")
    if after is not None and assistant_turns < int(after):
        return False
    every = decorators.get("activate_only_every")
    if every is not None and assistant_turns % int(every) != 0:
        return False
    depth = entry.scan_depth if entry.scan_depth is not None else book_depth
    # Not history_texts[-depth:]: with depth 0 that would be the whole history, not none of it.
    window = list(history_texts[max(0, len(history_texts) - depth) :])
    texts = window + list(extra_texts)
    if not entry.constant:
        if not entry.keys(texts):
            return False
        if entry.secondary is not None and not entry.secondary(texts):
            return False
    if entry.additional is not None and not entry.additional(texts):
        return False
    return not (entry.exclude is not None and entry.exclude(texts))


def activate_lorebook(
    book: Mapping[str, Any] | None,
    history: Sequence[Turn],
    *,
    char_name: str,
    user_name: str,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LoreSelection:
    """Select the lorebook entries that fire for `history` and order them for the prompt.

    Rules: disabled entries never fire; `constant` entries always do; otherwise an entry fires
    when one of its `keys` (array or comma-separated string; substring match, case-insensitive
    unless `case_sensitive`; regexes when `use_regex`, bare or ``/pattern/flags``, broken ones
    never match) occurs in the last `scan_depth` history messages (default
    ``DEFAULT_SCAN_DEPTH``), and, when `selective` with non-empty `secondary_keys`, one of those
    too. With `recursive_scanning` the content of fired entries is scanned as well, for at most
    ``MAX_RECURSION_PASSES`` extra passes. Supported V3 activation decorators: ``@@activate``,
    ``@@dont_activate``, ``@@scan_depth``, ``@@activate_only_after``, ``@@activate_only_every``,
    ``@@additional_keys``, ``@@exclude_keys``.

    Fired entries are sorted by `insertion_order` ascending (ties: card order). If their content
    exceeds a positive `token_budget`, entries are discarded lowest `priority` first (ties: lower
    `insertion_order` first, then later in the card first) until the rest fits.

    All key searches together may take `budget_seconds` (None: no limit), timed by `clock`.
    Entries are checked in card order; once the budget is spent, an entry whose decision needed
    a search is not activated and is listed in `unscanned` (entries that need none, such as
    constants, are still decided).
    """
    if not isinstance(book, Mapping):
        return LoreSelection()
    raw_entries = book.get("entries")
    if not isinstance(raw_entries, list):
        return LoreSelection()
    notes: list[str] = []
    budget = ScanBudget(budget_seconds, clock)
    entries = [
        entry
        for index, raw in enumerate(raw_entries)
        if (
            entry := _parse_entry(
                raw, index, char_name=char_name, user_name=user_name, notes=notes, budget=budget
            )
        )
        is not None
    ]
    book_depth_value = _number(book.get("scan_depth"))
    book_depth = (
        int(book_depth_value)
        if book_depth_value is not None and book_depth_value >= 0
        else DEFAULT_SCAN_DEPTH
    )
    history_texts = [
        expand_macros(turn.content, char_name=char_name, user_name=user_name) for turn in history
    ]
    assistant_turns = sum(1 for turn in history if turn.role == "assistant")

    unscanned: set[int] = set()

    def scan(candidates: list[_LoreEntry], extra: list[str]) -> list[_LoreEntry]:
        fired = []
        for e in candidates:
            refused = budget.refused
            fires = _entry_fires(
                e, history_texts, extra, book_depth=book_depth, assistant_turns=assistant_turns
            )
            if budget.refused > refused:
                # A search this entry needed did not run (or was cut short): its answer is
                # unknown, and an unknown entry stays out (an unrun exclude key is no "no").
                unscanned.add(e.index)
            elif fires:
                fired.append(e)
        return fired

    active = scan(entries, [])
    if _flag(book.get("recursive_scanning"), False):
        for _ in range(MAX_RECURSION_PASSES):
            fired = {e.index for e in active}
            remaining = [e for e in entries if e.index not in fired]
            newly = scan(remaining, [e.scan_text for e in active])
            if not newly:
                break
            active.extend(newly)

    active.sort(key=lambda e: (e.insertion_order, e.index))
    dropped: list[int] = []
    budget = _number(book.get("token_budget"))
    # Some exporters write 0 for "no limit"; dropping every entry would be the surprising reading.
    if budget is not None and budget > 0:
        total = sum(estimate_tokens(e.content) for e in active)
        discard_order = sorted(active, key=lambda e: (e.priority, e.insertion_order, -e.index))
        for victim in discard_order:
            if total <= budget:
                break
            total -= estimate_tokens(victim.content)
            dropped.append(victim.index)
        if dropped:
            notes.append(
                f"lorebook token_budget {budget:g} exceeded: dropped entries "
                + ", ".join(str(i) for i in dropped)
            )
        active = [e for e in active if e.index not in dropped]
    # Entries that fired in a later recursion pass were checked after all.
    unscanned -= {e.index for e in active} | set(dropped)
    if unscanned:
        notes.append(
            f"lorebook scan budget of {budget_seconds:g} s spent: {len(unscanned)} of "
            f"{len(entries)} entries were not checked"
        )

    return LoreSelection(
        before=[e.content for e in active if not e.after_char],
        after=[e.content for e in active if e.after_char],
        activated=[e.index for e in active if not e.after_char]
        + [e.index for e in active if e.after_char],
        dropped=dropped,
        notes=notes,
        unscanned=sorted(unscanned),
    )


# --- Assembly ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fitted:
    messages: list[dict[str, str]]
    trimmed_turns: int
    dropped_examples: int
    notes: list[str]


def _fit_budget(
    head: list[dict[str, str]],
    examples: list[dict[str, str]],
    turns: list[dict[str, str]],
    tail: list[dict[str, str]],
    context_tokens: int | None,
    keep_last_turn: bool = False,
) -> _Fitted:
    """Drop examples (last first), then turns (oldest first) until the prompt fits.

    `keep_last_turn` also protects the last turn (a reply being continued)."""
    if context_tokens is None:
        return _Fitted([*head, *examples, *turns, *tail], 0, 0, [])
    notes: list[str] = []
    total = count_message_tokens([*head, *examples, *turns, *tail])
    kept_examples = list(examples)
    while total > context_tokens and kept_examples:
        total -= _message_tokens(kept_examples.pop())
    dropped_examples = len(examples) - len(kept_examples)
    if dropped_examples:
        notes.append(f"dropped {dropped_examples} of {len(examples)} example dialogues")

    # The latest user turn is what the model answers; without a user turn, protect the last one.
    user_indices = [i for i, turn in enumerate(turns) if turn["role"] == "user"]
    protected = {user_indices[-1] if user_indices else len(turns) - 1}
    if keep_last_turn:
        protected.add(len(turns) - 1)
    dropped: set[int] = set()
    # Index order skipping `protected` = oldest turns before it, then (if still needed) the ones
    # after it, so the kept history stays a recent, contiguous stretch whenever possible.
    for i in range(len(turns)):
        if total <= context_tokens:
            break
        if i in protected:
            continue
        total -= _message_tokens(turns[i])
        dropped.add(i)
    if dropped:
        notes.append(f"trimmed {len(dropped)} oldest history turns")
    if total > context_tokens:
        notes.append(
            f"prompt (~{total} tokens) exceeds context_tokens={context_tokens} even after "
            "trimming; kept the system messages and the latest user message"
        )
    kept_turns = [turn for i, turn in enumerate(turns) if i not in dropped]
    return _Fitted(
        [*head, *kept_examples, *kept_turns, *tail], len(dropped), dropped_examples, notes
    )


def build_prompt(
    character: PromptCharacter | None,
    history: list[Turn],
    *,
    user_name: str = "User",
    user_description: str = "",
    default_system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    context_tokens: int | None = None,
    default_post_history_instructions: str = "",
    lore_budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    continuing: bool = False,
) -> Prompt:
    """Assemble the messages for one completion request.

    `history` is the stored chat, oldest first (the greeting is its first assistant turn when the
    app stored it). `context_tokens` is the budget for the whole prompt as measured by
    :func:`count_message_tokens` (None = unlimited; reserve the reply's tokens before calling).
    `lore_budget_seconds` bounds all lorebook searches together (see :func:`activate_lorebook`).
    See the module docstring for the message layout and the trimming order. `continuing` asks
    for more of the history's last (assistant) turn: the nudge goes after it, never trimmed.
    """
    nudge = [{"role": "system", "content": CONTINUE_NUDGE}] if continuing else []
    if character is None:
        turns = [{"role": turn.role, "content": turn.content} for turn in history]
        fitted = _fit_budget([], [], turns, nudge, context_tokens, continuing)
        return Prompt(
            messages=fitted.messages,
            trimmed_turns=fitted.trimmed_turns,
            dropped_examples=fitted.dropped_examples > 0,
            notes=fitted.notes,
        )

    char_name = character.nickname.strip() or character.name

    def expand(text: str) -> str:
        return expand_macros(text, char_name=char_name, user_name=user_name).strip()

    lore = activate_lorebook(
        character.character_book,
        history,
        char_name=char_name,
        user_name=user_name,
        budget_seconds=lore_budget_seconds,
        clock=clock,
    )
    description = expand(character.description)
    personality = expand(character.personality)
    scenario = expand(character.scenario)
    persona = expand(user_description)
    sections = [
        expand(resolve_override(character.system_prompt, default_system_prompt)),
        "\n".join(lore.before),
        description,
        f"{char_name}'s personality: {personality}" if personality else "",
        f"Scenario: {scenario}" if scenario else "",
        f"{user_name}'s persona: {persona}" if persona else "",
        "\n".join(lore.after),
    ]
    system_text = "\n\n".join(section for section in sections if section)
    head = [{"role": "system", "content": system_text}] if system_text else []
    examples = [
        {"role": "system", "content": f"{EXAMPLE_HEADER}\n{expand(example)}"}
        for example in split_examples(character.mes_example)
        if expand(example)
    ]
    turns = [
        {
            "role": turn.role,
            "content": expand_macros(turn.content, char_name=char_name, user_name=user_name),
        }
        for turn in history
    ]
    post = expand(
        resolve_override(character.post_history_instructions, default_post_history_instructions)
    )
    tail = [*nudge, *([{"role": "system", "content": post}] if post else [])]

    fitted = _fit_budget(head, examples, turns, tail, context_tokens, continuing)
    return Prompt(
        messages=fitted.messages,
        trimmed_turns=fitted.trimmed_turns,
        dropped_examples=fitted.dropped_examples > 0,
        notes=[*lore.notes, *fitted.notes],
        activated_lore=lore.activated,
        dropped_lore=lore.dropped,
        lore_unscanned=len(lore.unscanned),
    )

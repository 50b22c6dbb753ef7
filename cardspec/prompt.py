"""Prompt assembly: turns a persona and a chat history into Chat Completions messages.

Pure module: no Django, no I/O, deterministic. It implements the prompt-relevant parts of the
Character Card V2/V3 specs (malfoyslastname/character-card-spec-v2 ``spec_v2.md``,
kwaroran/character-card-spec-v3 ``SPEC_V3.md``) and follows SillyTavern's Chat Completion
assembly where the specs leave room. The card rules it reads (decorators, lenient values, entry
placement) live in ``cardspec.lorebook``; docs/prompt-rules.md lists every rule and where
we deliberately differ from SillyTavern.

Message layout produced by :func:`build_prompt` (with a character):

1. One leading ``system`` message. Its sections, separated by a blank line and each omitted when
   empty, are: the system prompt; the ``before_char`` lorebook entries; the ``@@position
   before_desc`` entries; the description as written; the ``@@position after_desc`` entries;
   ``"{{char}}'s personality: ..."`` followed by the ``@@position personality`` entries;
   ``"Scenario: ..."`` followed by the ``@@position scenario`` entries; the user's persona as
   ``"{{user}}'s persona: ..."``; the ``after_char`` entries. Entries in one place are joined by
   a newline, lowest ``insertion_order`` first.
2. One ``system`` message per example dialogue, each starting with ``"Example dialogue:"``: the
   blocks of "examples top" entries, then the card's ``mes_example`` split on ``<START>``, then
   the blocks of "examples bottom" entries. Separate messages, so that the context budget can
   drop them one at a time, last first.
3. The stored history turns, oldest first, roles as stored, with the in-chat insertions (the
   character's note, lorebook entries at a depth, SillyTavern's Author's Note slot) between them:
   see :func:`insert_at_depths`.
4. When continuing the last reply (``continuing=True``, SillyTavern's "Continue"), a ``system``
   message :data:`CONTINUE_NUDGE` after the history, which then ends with that reply as written
   (after the insertions at depth 0, as in SillyTavern).
5. ``post_history_instructions`` as a final ``system`` message, when non-empty.

Without a character the messages are just the history turns (unchanged, budget still applied).

All prompt text, history turns included, has ``\\r\\n``/``\\r`` normalised to ``\\n``, the
CBS comments ``{{// ...}}``, ``{{comment: ...}}`` and ``{{hidden_key: ...}}`` removed, and the
macros ``{{char}}``/``<BOT>``/``<CHAR>`` and ``{{user}}``/``<USER>`` replaced case-insensitively in
a single pass (so a user called ``{{char}}`` is not expanded again).

Context budget: ``context_tokens`` bounds :func:`count_message_tokens` of the result. Over budget,
lorebook entries marked ``@@ignore_on_max_context`` go first (all of them), then example
dialogues (last first), then history turns oldest first, together with the in-chat insertions
among them; the leading system message, the post-history instructions, the latest user turn and
a reply being continued are never dropped, even when that still does not fit. The rest of the
lorebook is only limited by its own ``token_budget``.

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

from cardspec.lorebook import (
    AFTER_CHAR,
    AFTER_DESC,
    AT_DEPTH,
    AUTHORS_NOTE_BOTTOM,
    AUTHORS_NOTE_TOP,
    BEFORE_CHAR,
    BEFORE_DESC,
    EXAMPLES_BOTTOM,
    EXAMPLES_TOP,
    OUTLET,
    PERSONALITY,
    SCENARIO,
    LoreEntry,
    Placement,
    read_book,
    read_depth,
    read_role,
    split_keys,
)
from cardspec.macros import expand_macros, normalize_newlines

DEFAULT_SYSTEM_PROMPT = (
    "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}. "
    "Stay in character."
)

# Messages scanned for lorebook keys when the book has no usable `scan_depth`: SillyTavern's
# "Scan Depth" (`world_info_depth`). The site's setting (CHAT_LOREBOOK_SCAN_DEPTH) is passed in.
DEFAULT_SCAN_DEPTH = 2
# Recursive scanning stops after this many extra passes even if entries keep activating each
# other, so a large, densely cross-linked book cannot make prompt assembly quadratic-unbounded.
MAX_RECURSION_PASSES = 10
# SillyTavern's "character's note" (`extensions.depth_prompt`) defaults:
# `depth_prompt_depth_default` and `depth_prompt_role_default`.
CHARACTER_NOTE_DEPTH = 4
CHARACTER_NOTE_ROLE = "system"
# SillyTavern's Author's Note is in the chat at depth 4 as system by default; lorebook entries at
# "AN top"/"AN bottom" go there (around the note, which we do not have, so it is empty).
AUTHORS_NOTE_DEPTH = 4
AUTHORS_NOTE_ROLE = "system"
# Top to bottom, the messages inserted at one depth (SillyTavern 1.12: system nearest the end).
DEPTH_ROLE_ORDER = ("assistant", "user", "system")
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


@dataclass(frozen=True)
class PromptCharacter:
    """The prompt-relevant fields of a character card (V2/V3 `data` names).

    Deliberately lacks creator_notes, tags, creator and character_version: the specs forbid
    using them in prompts, so they cannot leak in by accident. `depth_prompt` is the card's
    `extensions.depth_prompt` as stored (SillyTavern's character's note, read leniently by
    :func:`read_character_note`).
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
    depth_prompt: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Turn:
    """One stored chat message: role is "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """The assembled request messages and what had to be left out to fit the budget.

    `activated_lore` holds the indices (into `character_book["entries"]`) of the lorebook entries
    placed in the prompt, lowest `insertion_order` first (ties: card order); `dropped_lore` those
    activated but discarded to honour the book's `token_budget`, or left out by
    ``@@ignore_on_max_context`` because the prompt did not fit.
    """

    messages: list[dict[str, str]]
    trimmed_turns: int = 0
    dropped_examples: bool = False
    notes: list[str] = field(default_factory=list)
    activated_lore: list[int] = field(default_factory=list)
    dropped_lore: list[int] = field(default_factory=list)
    lore_unscanned: int = 0


@dataclass(frozen=True)
class PlacedLore:
    """An activated lorebook entry: its prompt text and where it goes."""

    index: int
    content: str  # macros expanded, decorators stripped, trimmed
    placement: Placement
    insertion_order: float
    priority: float
    decorators: Mapping[str, str]


@dataclass(frozen=True)
class LoreSelection:
    """Result of :func:`activate_lorebook`: the entries to place (lowest `insertion_order`
    first, ties in card order), and why others are missing."""

    entries: list[PlacedLore] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unscanned: list[int] = field(default_factory=list)

    @property
    def activated(self) -> list[int]:
        return [entry.index for entry in self.entries]

    def contents(self, where: str) -> list[str]:
        """The texts of the entries placed at `where` (a `Placement.where` name), in order."""
        return [entry.content for entry in self.entries if entry.placement.where == where]


@dataclass(frozen=True)
class CharacterNote:
    """SillyTavern's character's note: text inserted `depth` messages from the end as `role`."""

    text: str  # as written (macros not yet expanded)
    depth: int
    role: str


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


# --- Lorebook ---------------------------------------------------------------------------------

# Cards come from strangers: a catastrophic-backtracking key must not stall the worker that
# builds prompts. The `regex` module can bound each search; a search that runs out never matches.
REGEX_KEY_TIMEOUT = 0.05  # seconds per search


def compile_regex_key(key: str, case_sensitive: bool) -> regex.Pattern[str] | None:
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
            compiled = compile_regex_key(key, case_sensitive)
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
class _Scannable:
    """A lorebook entry ready to be matched: its expanded texts and compiled key matchers."""

    entry: LoreEntry
    content: str  # expanded, decorators stripped: what goes into the prompt
    scan_text: str  # what recursive scanning sees (hidden keys kept)
    keys: Matcher
    secondary: Matcher | None
    additional: Matcher | None
    exclude: Matcher | None

    @property
    def index(self) -> int:
        return self.entry.index


def _scannable(
    entry: LoreEntry, *, char_name: str, user_name: str, notes: list[str], budget: ScanBudget
) -> _Scannable | None:
    """Expand and compile one entry; None for entries that can never contribute to the prompt."""
    content = expand_macros(entry.body, char_name=char_name, user_name=user_name).strip()
    if not content:
        # The spec: empty content adds nothing, whether or not the entry matches.
        return None
    label = f"lorebook entry {entry.index}"

    def matcher(keys: list[str]) -> Matcher | None:
        if not keys:
            return None
        return _make_matcher(
            keys,
            use_regex=entry.use_regex,
            case_sensitive=entry.case_sensitive,
            notes=notes,
            label=label,
            budget=budget,
        )

    decorators = entry.decorators
    return _Scannable(
        entry=entry,
        content=content,
        scan_text=expand_macros(
            entry.body, char_name=char_name, user_name=user_name, keep_hidden_keys=True
        ),
        keys=matcher(entry.keys) or (lambda _texts: False),
        secondary=matcher(entry.secondary_keys),
        additional=matcher(split_keys(decorators.get("additional_keys", ""))),
        exclude=matcher(split_keys(decorators.get("exclude_keys", ""))),
    )


def _entry_fires(
    item: _Scannable,
    history_texts: Sequence[str],
    extra_texts: Sequence[str],
    *,
    book_depth: int,
    assistant_turns: int,
) -> bool:
    """Decide activation of one entry against the history window plus recursion texts."""
    decorators = item.entry.decorators
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
    scan_depth = decorators.get("scan_depth")
    depth = int(scan_depth) if scan_depth is not None else book_depth
    # Not history_texts[-depth:]: with depth 0 that would be the whole history, not none of it.
    window = list(history_texts[max(0, len(history_texts) - depth) :])
    texts = window + list(extra_texts)
    if not item.entry.constant:
        if not item.keys(texts):
            return False
        if item.secondary is not None and not item.secondary(texts):
            return False
    if item.additional is not None and not item.additional(texts):
        return False
    return not (item.exclude is not None and item.exclude(texts))


def activate_lorebook(
    book: Mapping[str, Any] | None,
    history: Sequence[Turn],
    *,
    char_name: str,
    user_name: str,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    default_scan_depth: int = DEFAULT_SCAN_DEPTH,
) -> LoreSelection:
    """Select the lorebook entries that fire for `history` and order them for the prompt.

    Rules: disabled entries never fire; `constant` entries always do; otherwise an entry fires
    when one of its `keys` (array or comma-separated string; substring match, case-insensitive
    unless `case_sensitive`; regexes when `use_regex`, bare or ``/pattern/flags``, broken ones
    never match) occurs in the last `scan_depth` history messages (the book's, else
    `default_scan_depth`), and, when `selective` with non-empty `secondary_keys`, one of those
    too. With `recursive_scanning` the content of fired entries is scanned as well, for at most
    ``MAX_RECURSION_PASSES`` extra passes. Activation decorators: ``@@activate``,
    ``@@dont_activate``, ``@@scan_depth``, ``@@activate_only_after``, ``@@activate_only_every``
    (both count the history's assistant turns), ``@@additional_keys``, ``@@exclude_keys``.

    Fired entries are sorted by `insertion_order` ascending (ties: card order). If their content
    exceeds a positive `token_budget`, entries are discarded lowest `priority` first (ties: lower
    `insertion_order` first, then later in the card first) until the rest fits. Entries placed at
    an "outlet" are activated but left out (we have no ``{{outlet::}}`` macro), with a note.

    All key searches together may take `budget_seconds` (None: no limit), timed by `clock`.
    Entries are checked in card order; once the budget is spent, an entry whose decision needed
    a search is not activated and is listed in `unscanned` (entries that need none, such as
    constants, are still decided).
    """
    lorebook = read_book(book)
    if lorebook is None:
        return LoreSelection()
    notes: list[str] = []
    budget = ScanBudget(budget_seconds, clock)
    entries = [
        item
        for entry in lorebook.entries
        if (
            item := _scannable(
                entry, char_name=char_name, user_name=user_name, notes=notes, budget=budget
            )
        )
        is not None
    ]
    book_depth = default_scan_depth if lorebook.scan_depth is None else lorebook.scan_depth
    history_texts = [
        expand_macros(turn.content, char_name=char_name, user_name=user_name) for turn in history
    ]
    assistant_turns = sum(1 for turn in history if turn.role == "assistant")

    unscanned: set[int] = set()

    def scan(candidates: list[_Scannable], extra: list[str]) -> list[_Scannable]:
        fired = []
        for item in candidates:
            refused = budget.refused
            fires = _entry_fires(
                item, history_texts, extra, book_depth=book_depth, assistant_turns=assistant_turns
            )
            if budget.refused > refused:
                # A search this entry needed did not run (or was cut short): its answer is
                # unknown, and an unknown entry stays out (an unrun exclude key is no "no").
                unscanned.add(item.index)
            elif fires:
                fired.append(item)
        return fired

    active = scan(entries, [])
    if lorebook.recursive_scanning:
        for _ in range(MAX_RECURSION_PASSES):
            fired = {item.index for item in active}
            remaining = [item for item in entries if item.index not in fired]
            newly = scan(remaining, [item.scan_text for item in active])
            if not newly:
                break
            active.extend(newly)

    active.sort(key=lambda item: (item.entry.insertion_order, item.index))
    dropped: list[int] = []
    token_budget = lorebook.token_budget
    if token_budget is not None:
        total = sum(estimate_tokens(item.content) for item in active)
        discard_order = sorted(active, key=_discard_key)
        for victim in discard_order:
            if total <= token_budget:
                break
            total -= estimate_tokens(victim.content)
            dropped.append(victim.index)
        if dropped:
            notes.append(
                f"lorebook token_budget {token_budget:g} exceeded: dropped entries "
                + ", ".join(str(i) for i in dropped)
            )
        active = [item for item in active if item.index not in dropped]
    # Entries that fired in a later recursion pass were checked after all.
    unscanned -= {item.index for item in active} | set(dropped)
    if unscanned:
        notes.append(
            f"lorebook scan budget of {budget_seconds:g} s spent: {len(unscanned)} of "
            f"{len(entries)} entries were not checked"
        )
    outlets = [item.index for item in active if item.entry.placement.where == OUTLET]
    if outlets:
        notes.append(
            "lorebook entries at an outlet are left out (no {{outlet::}} macro here): "
            + ", ".join(str(i) for i in outlets)
        )

    return LoreSelection(
        entries=[
            PlacedLore(
                index=item.index,
                content=item.content,
                placement=item.entry.placement,
                insertion_order=item.entry.insertion_order,
                priority=item.entry.priority,
                decorators=item.entry.decorators,
            )
            for item in active
            if item.entry.placement.where != OUTLET
        ],
        dropped=dropped,
        notes=notes,
        unscanned=sorted(unscanned),
    )


def _discard_key(item: _Scannable) -> tuple[float, float, int]:
    """Order in which lorebook entries are given up: lowest priority first (ties: lower
    `insertion_order` first, then later in the card first)."""
    return (item.entry.priority, item.entry.insertion_order, -item.index)


def read_character_note(value: Any) -> CharacterNote | None:
    """SillyTavern's character's note from a card's `extensions.depth_prompt`, read leniently.

    ``{prompt, depth, role}``: used when `prompt` is non-blank text; `depth` defaults to 4 (see
    :func:`cardspec.lorebook.read_depth`), `role` ("system"/"user"/"assistant", any case,
    or 0/1/2) to system; older cards have no `role`.
    """
    if not isinstance(value, Mapping):
        return None
    text = value.get("prompt")
    if not isinstance(text, str) or not text.strip():
        return None
    return CharacterNote(
        text=text,
        depth=read_depth(value.get("depth"), CHARACTER_NOTE_DEPTH),
        role=read_role(value.get("role")) or CHARACTER_NOTE_ROLE,
    )


# --- Assembly ---------------------------------------------------------------------------------


def insert_at_depths(
    turns: list[dict[str, str]],
    insertions: Mapping[tuple[int, str], Sequence[str]],
    *,
    continuing: bool = False,
) -> tuple[list[dict[str, str]], set[int]]:
    """Put in-chat insertions between the history turns; returns the messages and the indices
    of the inserted ones.

    `insertions` maps ``(depth, role)`` to text parts, which become one message, joined by a
    newline. Depth d goes before the d-th most recent turn: 0 after the last turn, a depth at or
    beyond the number of turns before the oldest (deeper ones higher up). The messages of one
    depth go top to bottom in :data:`DEPTH_ROLE_ORDER`. Depth counts turns only, never other
    insertions. `continuing` moves the last turn (the reply being continued) after the
    insertions at depth 0, as SillyTavern does.
    """
    count = len(turns)
    at: dict[int, list[tuple[int, str]]] = {}
    for depth, role in insertions:
        at.setdefault(max(0, count - depth), []).append((depth, role))
    messages: list[dict[str, str]] = []
    inserted: set[int] = set()
    held = count - 1 if continuing and count else None
    for point in range(count + 1):
        for depth, role in sorted(
            at.get(point, []), key=lambda key: (-key[0], DEPTH_ROLE_ORDER.index(key[1]))
        ):
            content = "\n".join(part for part in insertions[(depth, role)] if part)
            if content:
                inserted.add(len(messages))
                messages.append({"role": role, "content": content})
        if point < count and point != held:
            messages.append(turns[point])
    if held is not None:
        messages.append(turns[held])
    return messages, inserted


@dataclass(frozen=True)
class _Parts:
    head: list[dict[str, str]]
    examples: list[dict[str, str]]
    turns: list[dict[str, str]]  # history turns and in-chat insertions
    inserted: set[int]  # indices into `turns` of the insertions
    tail: list[dict[str, str]]

    def all(self) -> list[dict[str, str]]:
        return [*self.head, *self.examples, *self.turns, *self.tail]


@dataclass(frozen=True)
class _Fitted:
    messages: list[dict[str, str]]
    trimmed_turns: int
    dropped_examples: int
    notes: list[str]


def _fit_budget(parts: _Parts, context_tokens: int | None, keep_last_turn: bool = False) -> _Fitted:
    """Drop examples (last first), then turns and insertions (oldest first) until it fits.

    The latest user turn is never dropped; `keep_last_turn` also protects the last turn (a reply
    being continued). Insertions never count as the latest user turn."""
    head, examples, turns, tail = parts.head, parts.examples, parts.turns, parts.tail
    if context_tokens is None:
        return _Fitted(parts.all(), 0, 0, [])
    notes: list[str] = []
    total = count_message_tokens(parts.all())
    kept_examples = list(examples)
    while total > context_tokens and kept_examples:
        total -= _message_tokens(kept_examples.pop())
    dropped_examples = len(examples) - len(kept_examples)
    if dropped_examples:
        notes.append(f"dropped {dropped_examples} of {len(examples)} example dialogues")

    # The latest user turn is what the model answers; without a user turn, protect the last one.
    history = [i for i in range(len(turns)) if i not in parts.inserted]
    user_indices = [i for i in history if turns[i]["role"] == "user"]
    protected = {user_indices[-1]} if user_indices else set(history[-1:])
    if keep_last_turn and history:
        protected.add(history[-1])
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
    dropped_turns = len(dropped - parts.inserted)
    dropped_insertions = len(dropped & parts.inserted)
    if dropped_turns:
        notes.append(f"trimmed {dropped_turns} oldest history turns")
    if dropped_insertions:
        notes.append(f"left out {dropped_insertions} in-chat insertions among the trimmed turns")
    if total > context_tokens:
        notes.append(
            f"prompt (~{total} tokens) exceeds context_tokens={context_tokens} even after "
            "trimming; kept the system messages and the latest user message"
        )
    kept_turns = [turn for i, turn in enumerate(turns) if i not in dropped]
    return _Fitted(
        [*head, *kept_examples, *kept_turns, *tail], dropped_turns, dropped_examples, notes
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
    lore_scan_depth: int = DEFAULT_SCAN_DEPTH,
    clock: Callable[[], float] = time.monotonic,
    continuing: bool = False,
) -> Prompt:
    """Assemble the messages for one completion request.

    `history` is the stored chat, oldest first (the greeting is its first assistant turn when the
    app stored it). `context_tokens` is the budget for the whole prompt as measured by
    :func:`count_message_tokens` (None = unlimited; reserve the reply's tokens before calling).
    `lore_budget_seconds` bounds all lorebook searches together and `lore_scan_depth` is the
    number of latest messages scanned for keys when the book sets no `scan_depth` (see
    :func:`activate_lorebook`). See the module docstring for the message layout and the trimming
    order. `continuing` asks for more of the history's last (assistant) turn: the nudge goes after
    it, never trimmed.
    """
    nudge = [{"role": "system", "content": CONTINUE_NUDGE}] if continuing else []
    if character is None:
        turns = [{"role": turn.role, "content": turn.content} for turn in history]
        fitted = _fit_budget(_Parts([], [], turns, set(), nudge), context_tokens, continuing)
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
        default_scan_depth=lore_scan_depth,
    )
    note = read_character_note(character.depth_prompt)
    note_text = expand(note.text) if note is not None else ""
    turns = [
        {
            "role": turn.role,
            "content": expand_macros(turn.content, char_name=char_name, user_name=user_name),
        }
        for turn in history
    ]
    personality = expand(character.personality)
    scenario = expand(character.scenario)

    def render(entries: list[PlacedLore]) -> _Parts:
        by_place: dict[str, list[str]] = {}
        at_depth: dict[tuple[int, str], list[str]] = {}
        for entry in entries:
            placement = entry.placement
            if placement.fallback is not None and not (
                personality if placement.where == PERSONALITY else scenario
            ):
                placement = placement.fallback
            if placement.where == AT_DEPTH:
                at_depth.setdefault((placement.depth, placement.role), []).append(entry.content)
            else:
                by_place.setdefault(placement.where, []).append(entry.content)

        def lore(where: str) -> str:
            return "\n".join(by_place.get(where, []))

        disabled = {entry.decorators.get("disable_ui_prompt") for entry in entries}
        system_default = "" if "system_prompt" in disabled else default_system_prompt
        post_default = (
            "" if "post_history_instructions" in disabled else default_post_history_instructions
        )
        persona = expand(user_description)
        sections = [
            expand(resolve_override(character.system_prompt, system_default)),
            lore(BEFORE_CHAR),
            lore(BEFORE_DESC),
            expand(character.description),
            lore(AFTER_DESC),
            "\n".join(
                filter(None, [f"{char_name}'s personality: {personality}", lore(PERSONALITY)])
            )
            if personality
            else "",
            "\n".join(filter(None, [f"Scenario: {scenario}", lore(SCENARIO)])) if scenario else "",
            f"{user_name}'s persona: {persona}" if persona else "",
            lore(AFTER_CHAR),
        ]
        system_text = "\n\n".join(section for section in sections if section)
        head = [{"role": "system", "content": system_text}] if system_text else []

        # SillyTavern puts each "examples top" entry's blocks before everything already there,
        # so among themselves the last (highest order) comes first.
        blocks = [
            *(b for text in reversed(by_place.get(EXAMPLES_TOP, [])) for b in split_examples(text)),
            *(expand(example) for example in split_examples(character.mes_example)),
            *(b for text in by_place.get(EXAMPLES_BOTTOM, []) for b in split_examples(text)),
        ]
        examples = [
            {"role": "system", "content": f"{EXAMPLE_HEADER}\n{block}"} for block in blocks if block
        ]

        # One message per depth and role; its parts in SillyTavern's key order: the Author's
        # Note ("2_floating_prompt"), the character's note ("DEPTH_PROMPT"), then the lorebook
        # ("customDepthWI-...").
        insertions: dict[tuple[int, str], list[str]] = {}
        authors_note = f"{lore(AUTHORS_NOTE_TOP)}\n\n{lore(AUTHORS_NOTE_BOTTOM)}".strip()
        if authors_note:
            insertions[(AUTHORS_NOTE_DEPTH, AUTHORS_NOTE_ROLE)] = [authors_note]
        if note is not None and note_text:
            insertions.setdefault((note.depth, note.role), []).append(note_text)
        for key, contents in at_depth.items():
            insertions.setdefault(key, []).append("\n".join(contents))
        chat, inserted = insert_at_depths(turns, insertions, continuing=continuing)

        post = expand(resolve_override(character.post_history_instructions, post_default))
        tail = [*nudge, *([{"role": "system", "content": post}] if post else [])]
        return _Parts(head, examples, chat, inserted, tail)

    placed = list(lore.entries)
    parts = render(placed)
    # V3 `@@ignore_on_max_context`: such entries are not matched when the context is full.
    # (Counted here only when there are some: every send would otherwise count twice.)
    left_out = [e.index for e in placed if "ignore_on_max_context" in e.decorators]
    if (
        left_out
        and context_tokens is not None
        and count_message_tokens(parts.all()) > context_tokens
    ):
        placed = [e for e in placed if e.index not in left_out]
        parts = render(placed)
    else:
        left_out = []
    notes = list(lore.notes)
    if left_out:
        notes.append(
            "the prompt did not fit: left out lorebook entries marked @@ignore_on_max_context: "
            + ", ".join(str(i) for i in left_out)
        )

    fitted = _fit_budget(parts, context_tokens, continuing)
    return Prompt(
        messages=fitted.messages,
        trimmed_turns=fitted.trimmed_turns,
        dropped_examples=fitted.dropped_examples > 0,
        notes=[*notes, *fitted.notes],
        activated_lore=[entry.index for entry in placed],
        dropped_lore=[*lore.dropped, *left_out],
        lore_unscanned=len(lore.unscanned),
    )

"""The neutral chat model: what every reader produces and every writer takes.

A `Chat` is one conversation: its title, the character's name (and, for our own exports, a
reference to the character card), the chat settings, times, and its messages as a tree. Each
`ChatMessage` has a key that is only meaningful inside its file and the key of its parent (None
for a root: an opening greeting, or a first question when there is no greeting); messages with
the same parent are alternatives of one another, in the order of `Chat.messages`. `shown_leaf`
is the end of the branch the chat shows. The lead's views map this onto `Conversation` and
`Message` rows; keys never become database ids.

Pure Python: no Django, no files. Times are aware datetimes (UTC unless a file said otherwise).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

ROLES = ("user", "assistant")
"""Our two roles. Readers map or drop everything else (system, tool, narrator): see each one."""
STATUSES = ("complete", "stopped", "failed", "truncated", "interrupted")
"""`Message.Status` less `streaming`: an export is a snapshot, a reply in flight is unfinished."""

# --- Limits shared by every format (each format module has its own file-size cap) ------------

MAX_MESSAGES = 50_000
"""Most messages (tree nodes, swipes included, before any are dropped) one file may hold."""
MAX_JSON_DEPTH = 100
"""Deepest nesting of JSON objects/lists; real exports stay below 15."""
MAX_MESSAGE_CHARS = 1_000_000
"""Longest message text; longer is no chat message but an attack on the page that shows it."""
MAX_KEY_CHARS = 200
"""Longest message key (ids in the file)."""
MAX_TEXT_FIELD_CHARS = 10_000
"""Longest title, name or model name before it is refused as absurd..."""
FIELD_CHARS = 200
"""...and the length it is cut to, the database's column length."""
MAX_GREETING_INDEX = 32_767

T = TypeVar("T")


class ChatFormatError(ValueError):
    """A chat file we refuse. The message names the problem and is meant for the member."""


@dataclass(kw_only=True)
class CharacterRef:
    """Which character card a chat was with, as far as a file can say: the card's name, its
    creator and its version (our own exports; the other formats only know a name)."""

    name: str
    creator: str = ""
    character_version: str = ""


@dataclass(kw_only=True)
class ChatSettings:
    """The conversation's settings; None means "not set" (the upstream's default)."""

    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(kw_only=True)
class ChatMessage:
    key: str
    parent: str | None
    role: str
    content: str
    created_at: datetime | None = None
    status: str = "complete"
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = ""
    edited_at: datetime | None = None
    """When the member corrected the text in place (ours only); `edited` is the flag."""
    greeting_index: int | None = None
    """Which of the character's greetings a root shows, when the file says (ours only)."""

    @property
    def edited(self) -> bool:
        return self.edited_at is not None


@dataclass(kw_only=True)
class Chat:
    title: str = ""
    character_name: str = ""
    character: CharacterRef | None = None
    user_name: str = ""
    """The name the member went by in the file (SillyTavern's `user_name`); "" when unknown."""
    settings: ChatSettings = field(default_factory=ChatSettings)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    messages: list[ChatMessage] = field(default_factory=list)
    """Parents before children; siblings (alternatives) oldest first."""
    shown_leaf: str | None = None
    warnings: list[str] = field(default_factory=list, compare=False)
    """What a reader left out or could not read, in sentences for the member. Not compared."""

    def children(self) -> dict[str | None, list[ChatMessage]]:
        """Messages by parent key (None: the roots), in `messages` order."""
        found: dict[str | None, list[ChatMessage]] = defaultdict(list)
        for message in self.messages:
            found[message.parent].append(message)
        return found

    def leaf_key(self) -> str | None:
        """The end of the shown branch: `shown_leaf`, else the newest root's newest branch
        (the rule of `chat.tree.Tree.shown_leaf`)."""
        if self.shown_leaf is not None:
            return self.shown_leaf
        children = self.children()
        current = children[None][-1].key if children.get(None) else None
        while current is not None and children.get(current):
            current = children[current][-1].key
        return current

    def shown_path(self) -> list[ChatMessage]:
        """The messages of the shown branch, root first."""
        by_key = {message.key: message for message in self.messages}
        path = []
        current = self.leaf_key()
        while current is not None:
            message = by_key[current]
            path.append(message)
            current = message.parent
        path.reverse()
        return path

    def validate(self) -> None:
        """Refuse a chat whose tree or values our database cannot hold (writers call this on
        what they are given; readers on what they built)."""
        for moment in (self.created_at, self.updated_at):
            _check_aware(moment, "The chat")
        for message in self.messages:
            if message.role not in ROLES:
                raise ChatFormatError(f"Message {message.key!r} has an unknown role.")
            if message.status not in STATUSES:
                raise ChatFormatError(f"Message {message.key!r} has an unknown status.")
            for moment in (message.created_at, message.edited_at):
                _check_aware(moment, f"Message {message.key!r}")
        self.messages = order_tree(self.messages, what="message")
        if self.shown_leaf is not None and self.shown_leaf not in {
            message.key for message in self.messages
        }:
            raise ChatFormatError(f"The shown message {self.shown_leaf!r} is not in the chat.")


def _check_aware(moment: datetime | None, subject: str) -> None:
    if moment is not None and moment.utcoffset() is None:
        raise ChatFormatError(f"{subject} has a time without a time zone.")


def order_tree(nodes: list[T], *, what: str, key_of=None, parent_of=None) -> list[T]:
    """`nodes` with every parent before its children, siblings kept in their given order.

    Refuses duplicate keys, a node that is its own parent, a parent that is missing and a
    cycle, each with a message naming the nodes. When the nodes already come parents first,
    the order is unchanged. Runs without recursion: a chain of 100,000 messages is fine.
    """
    key_of = key_of or (lambda node: node.key)
    parent_of = parent_of or (lambda node: node.parent)
    keys: set[str] = set()
    for node in nodes:
        node_key = key_of(node)
        if node_key in keys:
            raise ChatFormatError(f"Two {what}s have the key {node_key!r}.")
        keys.add(node_key)
    for node in nodes:
        node_key, parent = key_of(node), parent_of(node)
        if parent == node_key:
            raise ChatFormatError(f"The {what} {node_key!r} is its own parent.")
        if parent is not None and parent not in keys:
            raise ChatFormatError(
                f"The {what} {node_key!r} has the parent {parent!r}, which is not in the file."
            )
    ordered: list[T] = []
    placed: set[str] = set()
    waiting: dict[str, list[T]] = defaultdict(list)
    for node in nodes:
        parent = parent_of(node)
        if parent is not None and parent not in placed:
            waiting[parent].append(node)
            continue
        stack = [node]
        while stack:
            current = stack.pop()
            ordered.append(current)
            placed.add(key_of(current))
            # Reversed so that children waiting on one parent keep their order.
            stack.extend(reversed(waiting.pop(key_of(current), [])))
    if len(ordered) < len(nodes):
        raise ChatFormatError(_describe_cycle(nodes, placed, what, key_of, parent_of))
    return ordered


def _describe_cycle(nodes, placed, what, key_of, parent_of) -> str:
    """Name the nodes of one cycle among the nodes that could not be placed."""
    parents = {key_of(node): parent_of(node) for node in nodes}
    start = next(key_of(node) for node in nodes if key_of(node) not in placed)
    seen: list[str] = []
    current = start
    while current not in seen:
        seen.append(current)
        current = parents[current]
    loop = seen[seen.index(current) :]
    shown = " → ".join(repr(item) for item in loop[:5])
    more = " → …" if len(loop) > 5 else ""
    return f"The {what}s form a cycle ({shown}{more} → {current!r}): no {what} starts it."

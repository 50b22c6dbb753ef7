"""Markdown for reading: each chat's shown branch, one section per message.

Not meant to be imported again: alternatives appear only as "alternative 2 of 3" beside the one
shown, branches below them not at all. Message texts are written as they are (model replies
are Markdown already, and a member's text reads the same); titles and names are escaped so that
they cannot become headings, links or HTML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from chat.formats.model import Chat, ChatMessage

# Characters that would make a title or a name Markdown or HTML. Escaped titles and names only
# ever follow "# ", "## " or a word, so list markers ("-", "1.") cannot start a block there.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~])")
_STATUS_WORDS = {
    "stopped": "stopped",
    "failed": "failed",
    "truncated": "cut off at the length limit",
    "interrupted": "interrupted",
}


def write_markdown(chats: Iterable[Chat]) -> Iterator[bytes]:
    """Chunks of UTF-8 Markdown, one per chat, chats separated by a rule."""
    separator = ""
    for chat in chats:
        chat.validate()
        yield (separator + _chat(chat)).encode("utf-8", "replace")
        separator = "\n---\n\n"


def _chat(chat: Chat) -> str:
    character = chat.character_name or "Assistant"
    title = chat.title or (
        f"Conversation with {character}" if chat.character_name else "Conversation"
    )
    lines = [f"# {escape(title)}", ""]
    facts = []
    if chat.character_name:
        facts.append(f"Character: {escape(chat.character_name)}")
    if chat.settings.model:
        facts.append(f"Model: {escape(chat.settings.model)}")
    if chat.created_at is not None:
        facts.append(f"Started: {_when(chat.created_at)}")
    if facts:
        lines += [" · ".join(facts), ""]
    children = chat.children()
    for message in chat.shown_path():
        lines += _message(message, chat, character, len(children[message.parent]),
                          children[message.parent].index(message))  # fmt: skip
    return "\n".join(lines).rstrip("\n") + "\n"


def _message(
    message: ChatMessage, chat: Chat, character: str, alternatives: int, position: int
) -> list[str]:
    speaker = character if message.role == "assistant" else (chat.user_name or "You")
    details = []
    if message.created_at is not None:
        details.append(_when(message.created_at))
    if message.role == "assistant" and message.model:
        details.append(escape(message.model))
    if alternatives > 1:
        details.append(f"alternative {position + 1} of {alternatives}")
    if message.edited:
        details.append("edited")
    if message.status in _STATUS_WORDS:
        details.append(_STATUS_WORDS[message.status])
    lines = [f"## {escape(speaker)}", ""]
    if details:
        lines += [f"*{' · '.join(details)}*", ""]
    lines += [message.content, ""]
    return lines


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def escape(text: str) -> str:
    """Plain text for a Markdown heading or line: specials backslash-escaped, one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))

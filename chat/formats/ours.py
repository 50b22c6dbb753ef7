"""Our own chat export (docs/chat-export-format.md): versioned JSON holding whole message trees.

Lossless for everything the neutral model holds: `read_ours(b"".join(write_ours(chats)))`
gives chats equal to `chats`, and writing what was read gives the same bytes. The reader is
strict (it is our format: a wrong type is a broken file) but ignores keys it does not know, so
a later version-1 writer may add fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from chat.formats.model import (
    MAX_GREETING_INDEX,
    MAX_MESSAGES,
    ROLES,
    STATUSES,
    CharacterRef,
    Chat,
    ChatFormatError,
    ChatMessage,
    ChatSettings,
)
from chat.formats.values import (
    MIB,
    json_kind,
    key,
    load_json,
    message_text,
    optional_key,
    short_text,
    text,
)

FORMAT_NAME = "serika-web-chats"
VERSION = 1
MAX_BYTES = 32 * MIB
"""Largest file `read_ours` reads. A bigger export of everything must be imported in parts."""
MAX_TOKENS_CAP = 1_000_000  # chat/forms.py's cap on a conversation's max_tokens
_MAX_COUNT = 2**31 - 1
_WHAT = "The file"


def read_ours(data: bytes) -> list[Chat]:
    """Read one of our exports (one chat or many) into chats, or refuse the whole file."""
    return chats_from_object(load_json(data, limit=MAX_BYTES, what=_WHAT))


def chats_from_object(obj: Any) -> list[Chat]:
    """The chats of a parsed export (for callers that already parsed the JSON)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
        raise ChatFormatError(
            f'This is not a Serika Web chat export (it has no "format": "{FORMAT_NAME}").'
        )
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ChatFormatError(f"The export's 'version' must be a number, not {json_kind(version)}.")
    if version > VERSION:
        raise ChatFormatError(
            f"This export was made by a newer Serika Web (format version {version}); this one "
            f"reads version {VERSION}."
        )
    if version < 1:
        raise ChatFormatError(f"The export's format version {version} does not exist.")
    chats = obj.get("chats")
    if not isinstance(chats, list):
        raise ChatFormatError(f"The export's 'chats' must be a list, not {json_kind(chats)}.")
    total = sum(len(chat["messages"]) for chat in chats if _has_message_list(chat))
    if total > MAX_MESSAGES:
        raise ChatFormatError(
            f"The file holds {total:,} messages; at most {MAX_MESSAGES:,} can be imported at once."
        )
    return [_chat(chat, number) for number, chat in enumerate(chats, 1)]


def _has_message_list(chat: Any) -> bool:
    return isinstance(chat, dict) and isinstance(chat.get("messages"), list)


def _chat(obj: Any, number: int) -> Chat:
    where = f"Chat {number}"
    if not isinstance(obj, dict):
        raise ChatFormatError(f"{where} must be an object, not {json_kind(obj)}.")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise ChatFormatError(f"{where}: 'messages' must be a list, not {json_kind(messages)}.")
    chat = Chat(
        title=short_text(obj.get("title"), f"{where}: 'title'"),
        character_name=short_text(obj.get("character_name"), f"{where}: 'character_name'"),
        character=_card(obj.get("character_card"), where),
        user_name=short_text(obj.get("user_name"), f"{where}: 'user_name'"),
        settings=_settings(obj.get("settings"), where),
        created_at=_time(obj.get("created_at"), f"{where}: 'created_at'"),
        updated_at=_time(obj.get("updated_at"), f"{where}: 'updated_at'"),
        messages=[_message(item, where, index) for index, item in enumerate(messages, 1)],
        shown_leaf=optional_key(obj.get("shown_leaf"), f"{where}: 'shown_leaf'"),
    )
    try:
        chat.validate()
    except ChatFormatError as error:
        raise ChatFormatError(f"{where}: {error}") from None
    return chat


def _card(value: Any, where: str) -> CharacterRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ChatFormatError(
            f"{where}: 'character_card' must be an object or null, not {json_kind(value)}."
        )
    return CharacterRef(
        name=short_text(value.get("name"), f"{where}: the card's 'name'"),
        creator=short_text(value.get("creator"), f"{where}: the card's 'creator'"),
        character_version=short_text(
            value.get("character_version"), f"{where}: the card's 'character_version'"
        ),
    )


def _settings(value: Any, where: str) -> ChatSettings:
    if value is None:
        return ChatSettings()
    if not isinstance(value, dict):
        raise ChatFormatError(f"{where}: 'settings' must be an object, not {json_kind(value)}.")
    temperature = value.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ChatFormatError(
                f"{where}: the temperature must be a number, not {json_kind(temperature)}."
            )
        if not 0 <= temperature <= 2:
            raise ChatFormatError(f"{where}: the temperature {temperature} is not within 0 to 2.")
        temperature = float(temperature)
    max_tokens = value.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_CAP
    ):
        raise ChatFormatError(
            f"{where}: max_tokens must be a whole number from 1 to {MAX_TOKENS_CAP:,}."
        )
    return ChatSettings(
        model=short_text(value.get("model"), f"{where}: the model"),
        temperature=temperature,
        max_tokens=max_tokens,
    )


def _message(obj: Any, where: str, index: int) -> ChatMessage:
    if not isinstance(obj, dict):
        raise ChatFormatError(f"{where}, message {index} must be an object, not {json_kind(obj)}.")
    message_key = key(obj.get("key"), f"{where}, message {index}: 'key'")
    where = f"{where}, message {message_key!r}"
    role = obj.get("role")
    if role not in ROLES:
        raise ChatFormatError(f"{where}: the role must be 'user' or 'assistant'.")
    status = obj.get("status", "complete")
    if status == "streaming":
        status = "interrupted"  # a reply that was streaming when it was exported never finished
    if status not in STATUSES:
        raise ChatFormatError(f"{where}: unknown status {status!r}.")
    usage = obj.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise ChatFormatError(f"{where}: 'usage' must be an object, not {json_kind(usage)}.")
    greeting_index = obj.get("greeting_index")
    if greeting_index is not None and not _whole(greeting_index, MAX_GREETING_INDEX):
        raise ChatFormatError(f"{where}: 'greeting_index' must be a small whole number.")
    return ChatMessage(
        key=message_key,
        parent=optional_key(obj.get("parent"), f"{where}: 'parent'"),
        role=role,
        content=message_text(obj.get("content"), f"{where}: 'content'"),
        created_at=_time(obj.get("created_at"), f"{where}: 'created_at'"),
        status=status,
        model=short_text(obj.get("model"), f"{where}: 'model'"),
        prompt_tokens=_tokens(usage.get("prompt_tokens"), f"{where}: 'prompt_tokens'"),
        completion_tokens=_tokens(usage.get("completion_tokens"), f"{where}: 'completion_tokens'"),
        finish_reason=short_text(obj.get("finish_reason"), f"{where}: 'finish_reason'")[:32],
        edited_at=_time(obj.get("edited_at"), f"{where}: 'edited_at'"),
        greeting_index=greeting_index,
    )


def _whole(value: Any, maximum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= maximum


def _tokens(value: Any, subject: str) -> int | None:
    if value is None:
        return None
    if not _whole(value, _MAX_COUNT):
        raise ChatFormatError(f"{subject} must be a whole number of tokens.")
    return value


def _time(value: Any, subject: str) -> datetime | None:
    if value is None:
        return None
    raw = text(value, subject)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ChatFormatError(f"{subject} is not an ISO 8601 time.") from None
    if moment.utcoffset() is None:
        raise ChatFormatError(f"{subject} has no time zone.")
    return moment


# --- Writing ---------------------------------------------------------------------------------


def write_ours(chats: Iterable[Chat], *, exported_at: datetime | None = None) -> Iterator[bytes]:
    """Our export of `chats` (one or many), as UTF-8 chunks: one per chat, so a download of
    everything streams while the caller fetches the next conversation.

    One chat per line inside a fixed envelope. Each chat is checked (`Chat.validate`) before
    its chunk: a chat the database could not hold stops the export with `ChatFormatError`.
    """
    envelope = {"format": FORMAT_NAME, "version": VERSION, "exported_at": _iso(exported_at)}
    head = _dumps(envelope)
    yield (head[:-1] + ',"chats":[').encode()
    separator = "\n"
    for chat in chats:
        chat.validate()
        yield (separator + _dumps(chat_to_object(chat))).encode("utf-8", "replace")
        separator = ",\n"
    yield b"\n]}\n"


def chat_to_object(chat: Chat) -> dict[str, Any]:
    """One chat as the JSON object the export holds."""
    card = chat.character
    return {
        "title": chat.title,
        "character_name": chat.character_name,
        "character_card": None
        if card is None
        else {
            "name": card.name,
            "creator": card.creator,
            "character_version": card.character_version,
        },
        "user_name": chat.user_name,
        "settings": {
            "model": chat.settings.model,
            "temperature": chat.settings.temperature,
            "max_tokens": chat.settings.max_tokens,
        },
        "created_at": _iso(chat.created_at),
        "updated_at": _iso(chat.updated_at),
        "shown_leaf": chat.shown_leaf,
        "messages": [_message_object(message) for message in chat.messages],
    }


def _message_object(message: ChatMessage) -> dict[str, Any]:
    return {
        "key": message.key,
        "parent": message.parent,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": _iso(message.created_at),
        "edited_at": _iso(message.edited_at),
        "model": message.model,
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
        },
        "finish_reason": message.finish_reason,
        "greeting_index": message.greeting_index,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

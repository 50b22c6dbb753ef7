"""Chat files in and out: readers (bytes → chats) and writers (chats → chunks of bytes).

Pure Python, like the card readers in `characters/card_*.py`: no Django, no files, no network.
The views (issue 13) turn `Chat` objects into conversations and back.

Readers, each all-or-nothing per file (a `ChatFormatError` naming the problem, or every chat):

- `read_ours` — our own JSON export (docs/chat-export-format.md), many chats;
- `read_sillytavern` — a SillyTavern `.jsonl` chat, one chat;
- `read_chatgpt` — ChatGPT's `conversations.json`, many chats;
- `read_openwebui` — Open WebUI's chat export, many chats;
- `read_chat_file` — any of these, recognised by content.

Writers yield UTF-8 chunks, so a download of everything streams:

- `write_ours(chats)` — lossless;
- `write_sillytavern(chat)` — one chat, what SillyTavern can hold (see its docstring);
- `write_markdown(chats)` — the shown branches, for reading.

What each reader keeps, drops and refuses is in its module's docstring.
"""

from __future__ import annotations

from typing import Any

from chat.formats import chatgpt, openwebui, ours, sillytavern
from chat.formats.chatgpt import read_chatgpt
from chat.formats.markdown import write_markdown
from chat.formats.model import (
    MAX_MESSAGES,
    CharacterRef,
    Chat,
    ChatFormatError,
    ChatMessage,
    ChatSettings,
)
from chat.formats.openwebui import read_openwebui
from chat.formats.ours import read_ours, write_ours
from chat.formats.sillytavern import read_sillytavern, write_sillytavern
from chat.formats.values import check_size, decode_utf8, parse_json

__all__ = [
    "MAX_MESSAGES",
    "CharacterRef",
    "Chat",
    "ChatFormatError",
    "ChatMessage",
    "ChatSettings",
    "read_chat_file",
    "read_chatgpt",
    "read_openwebui",
    "read_ours",
    "read_sillytavern",
    "write_markdown",
    "write_ours",
    "write_sillytavern",
]

OURS = "serika"
SILLYTAVERN = "sillytavern"
CHATGPT = "chatgpt"
OPENWEBUI = "openwebui"
_CAPS = {
    OURS: ours.MAX_BYTES,
    SILLYTAVERN: sillytavern.MAX_BYTES,
    CHATGPT: chatgpt.MAX_BYTES,
    OPENWEBUI: openwebui.MAX_BYTES,
}
# Keys of the JSON formats' top objects (ours; a ChatGPT conversation; an Open WebUI chat).
_JSON_FORMAT_KEYS = frozenset({"format", "mapping", "chat", "history"})
_ST_LINE_KEYS = frozenset({"user_name", "character_name", "chat_metadata", "mes", "create_date"})


def read_chat_file(data: bytes) -> tuple[str, list[Chat]]:
    """Recognise a chat file by its content and read it: (format, chats).

    The format is "serika", "sillytavern", "chatgpt" or "openwebui". Each format's own size
    cap applies; a file that is none of them is refused.
    """
    check_size(data, max(_CAPS.values()), "The file")
    source = decode_utf8(data, "The file")
    first_line = source.lstrip().split("\n", 1)[0].strip()
    if first_line.startswith("{") and first_line.endswith("}"):
        # A whole object on line 1: SillyTavern's header or first message, unless it is one of
        # the JSON formats written on one line. A broken line 1 goes to the SillyTavern reader,
        # which names the line.
        try:
            head = parse_json(first_line, "Line 1")
        except ChatFormatError:
            head = None
        if head is None or (
            isinstance(head, dict)
            and _ST_LINE_KEYS & head.keys()
            and not _JSON_FORMAT_KEYS & head.keys()
        ):
            check_size(data, _CAPS[SILLYTAVERN], "The file")
            return SILLYTAVERN, [sillytavern.chat_from_text(source)]
    obj = parse_json(source, "The file")
    found = _recognise(obj)
    check_size(data, _CAPS[found], "The file")
    module: Any = {OURS: ours, CHATGPT: chatgpt, OPENWEBUI: openwebui}[found]
    return found, module.chats_from_object(obj)


def _recognise(obj: Any) -> str:
    if isinstance(obj, dict) and obj.get("format") == ours.FORMAT_NAME:
        return OURS
    items = [item for item in (obj if isinstance(obj, list) else [obj]) if isinstance(item, dict)]
    # Any item decides: ChatGPT's exports may start with an entry that lost its mapping.
    if any("mapping" in item for item in items):
        return CHATGPT
    if any("chat" in item or "history" in item for item in items):
        return OPENWEBUI
    if obj == []:
        raise ChatFormatError("The file holds no chats.")
    raise ChatFormatError(
        "This file is not a chat export we know: not ours, SillyTavern's, ChatGPT's or "
        "Open WebUI's."
    )

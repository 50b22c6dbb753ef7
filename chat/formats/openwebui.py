"""Open WebUI's chat export: a JSON list of chats ("Export Chats" gives all of them, a chat's
own export a list of one), each `{"id", "title", "chat": {...}, "created_at", ...}`, or, in the
legacy form Open WebUI still imports, the `chat` object itself
(/work/shared/notes/chat-formats.md §3; open-webui/docs, "Import & Export").

The tree: `chat.history.messages` (id → message) with `parentId`, and `chat.history.currentId`,
the end of the branch shown. `parentId` is the authority; `childrenIds` is not read. Siblings
(regenerations, edits, one reply per model in multi-model chats) keep the order of `messages`.
A chat with no `history` but a flat `chat.messages` list (very old exports) is read as a chain.

- Roles `user` and `assistant` are kept; any other (`system`) is left out, its children
  re-parented to the nearest kept ancestor, and counted in the warnings.
- `content` is text. The reasoning and tool-call blocks Open WebUI embeds in a reply's text
  (`<details type="reasoning|tool_calls|code_interpreter">…</details>`) are taken out and
  counted; the rest of the reply is kept. Attached `files` (images, documents) are left out and
  counted.
- `timestamp` (seconds; milliseconds above 1e11) is the time; `model` the model; `usage` gives
  the tokens (`prompt_tokens`/`completion_tokens`, or Ollama's `prompt_eval_count`/`eval_count`).
  A reply with an `error` is `failed`; one with `done: false` never finished: `interrupted`.
- The chat: `title`, `created_at`/`updated_at` (seconds), `chat.models[0]` as the model,
  `chat.params.temperature` / `max_tokens` when they are in range.

Refused, for the whole file: wrong JSON shapes, a ChatGPT export (it has `mapping`), a
`parentId` or `currentId` that is not text or names no message, a message that is its own
parent, cycles, non-text `content`, more than MAX_MESSAGES messages, absurd lengths.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from chat.formats.model import (
    MAX_MESSAGES,
    Chat,
    ChatFormatError,
    ChatMessage,
    ChatSettings,
    order_tree,
)
from chat.formats.values import (
    MIB,
    count,
    from_epoch,
    is_time_like,
    json_kind,
    key,
    load_json,
    loose_short_text,
    message_text,
    optional_key,
    plural,
    short_text,
    were,
)

MAX_BYTES = 32 * MIB
"""Largest Open WebUI export we read; a bigger one must be exported and imported in parts."""
MAX_TOKENS_CAP = 1_000_000  # chat/forms.py's cap on a conversation's max_tokens
_KEPT_ROLES = ("user", "assistant")
_BLOCK_OPENING = re.compile(
    r'<details type="(?:reasoning|tool_calls|code_interpreter)"[^>]*>', re.ASCII
)
_BLOCK_CLOSING = "</details>"


def read_openwebui(data: bytes) -> list[Chat]:
    """Read an Open WebUI chat export (all chats, or one) into chats."""
    return chats_from_object(load_json(data, limit=MAX_BYTES, what="The file"))


def chats_from_object(obj: Any) -> list[Chat]:
    items = [obj] if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise ChatFormatError(f"An Open WebUI export is a list of chats, not {json_kind(obj)}.")
    chats = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ChatFormatError(f"Chat {number} must be an object, not {json_kind(item)}.")
        if "mapping" in item:
            raise ChatFormatError(
                "This is a ChatGPT export (its chats have a 'mapping'), not an Open WebUI one."
            )
        chat = item.get("chat", item)
        if not isinstance(chat, dict):
            raise ChatFormatError(
                f"Chat {number}: 'chat' must be an object, not {json_kind(chat)}."
            )
        chats.append((number, item, chat))
    total = sum(_message_count(chat) for _, _, chat in chats)
    if total > MAX_MESSAGES:
        raise ChatFormatError(
            f"The file holds {total:,} messages; at most {MAX_MESSAGES:,} can be imported at once."
        )
    return [_Reader(number, item, chat).read() for number, item, chat in chats]


def _message_count(chat: dict[str, Any]) -> int:
    history = chat.get("history")
    if isinstance(history, dict) and isinstance(history.get("messages"), dict):
        return len(history["messages"])
    return len(chat["messages"]) if isinstance(chat.get("messages"), list) else 0


class _Reader:
    def __init__(self, number: int, item: dict[str, Any], chat: dict[str, Any]) -> None:
        self.where = f"Chat {number}"
        self.item = item
        self.chat = chat
        self.left_out: Counter[str] = Counter()
        self.bad_dates = 0

    def read(self) -> Chat:
        where, item, data = self.where, self.item, self.chat
        title = item.get("title") if item.get("title") is not None else data.get("title")
        created = item.get("created_at")
        result = Chat(
            title=short_text(title, f"{where}: the title"),
            settings=self._settings(),
            created_at=self._time(created if created is not None else data.get("timestamp")),
            updated_at=self._time(item.get("updated_at")),
        )
        history = data.get("history")
        if history is None and isinstance(data.get("messages"), list):
            nodes, current = self._flat(data["messages"]), None
        else:
            if not isinstance(history, dict):
                raise ChatFormatError(f"{where} has no message 'history' object.")
            messages = history.get("messages")
            if not isinstance(messages, dict):
                raise ChatFormatError(
                    f"{where}: 'history.messages' must be an object, not {json_kind(messages)}."
                )
            nodes = [self._node(node_key, node) for node_key, node in messages.items()]
            current = optional_key(history.get("currentId"), f"{where}: 'currentId'")
        nodes = order_tree(nodes, what="message", key_of=lambda n: n[0], parent_of=lambda n: n[1])
        stands_for: dict[str, str | None] = {}
        for node_key, parent, node in nodes:
            kept_parent = None if parent is None else stands_for[parent]
            built = self._message(node_key, kept_parent, node)
            if built is None:
                stands_for[node_key] = kept_parent
            else:
                result.messages.append(built)
                stands_for[node_key] = node_key
        if current is not None:
            if current not in stands_for:
                raise ChatFormatError(
                    f"{where}: 'currentId' {current!r} is not one of its messages."
                )
            result.shown_leaf = stands_for[current]
        result.warnings.extend(self._warnings())
        result.validate()
        return result

    def _settings(self) -> ChatSettings:
        models = self.chat.get("models")
        model = models[0] if isinstance(models, list) and models else ""
        params = self.chat.get("params") if isinstance(self.chat.get("params"), dict) else {}
        temperature = params.get("temperature")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 2
        ):
            temperature = None
        max_tokens = count(params.get("max_tokens"))
        if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS_CAP:
            max_tokens = None
        return ChatSettings(
            model=loose_short_text(model),
            temperature=None if temperature is None else float(temperature),
            max_tokens=max_tokens,
        )

    def _node(self, node_key: str, node: Any) -> tuple[str, str | None, dict[str, Any]]:
        subject = f"{self.where}, message {node_key!r}"
        node_key = key(node_key, f"{self.where}: a message's id")
        if not isinstance(node, dict):
            raise ChatFormatError(f"{subject} must be an object, not {json_kind(node)}.")
        return node_key, optional_key(node.get("parentId"), f"{subject}: 'parentId'"), node

    def _flat(self, messages: list[Any]) -> list[tuple[str, str | None, dict[str, Any]]]:
        """The legacy flat list, as a chain."""
        nodes = []
        parent = None
        for index, node in enumerate(messages, 1):
            if not isinstance(node, dict):
                raise ChatFormatError(
                    f"{self.where}, message {index} must be an object, not {json_kind(node)}."
                )
            node_key = node.get("id") if isinstance(node.get("id"), str) else str(index)
            node_key = key(node_key, f"{self.where}, message {index}: 'id'")
            nodes.append((node_key, parent, node))
            parent = node_key
        return nodes

    def _message(
        self, node_key: str, parent: str | None, node: dict[str, Any]
    ) -> ChatMessage | None:
        subject = f"{self.where}, message {node_key!r}"
        content = message_text(node.get("content"), f"{subject}: 'content'")
        role = node.get("role")
        if role not in _KEPT_ROLES:
            self.left_out["message with another role than user or assistant"] += 1
            return None
        files = node.get("files")
        if isinstance(files, list) and files:
            self.left_out["attached file"] += len(files)
        assistant = role == "assistant"
        if assistant:
            content, blocks = strip_blocks(content)
            self.left_out["reasoning or tool-call block"] += blocks
        usage = node.get("usage") if isinstance(node.get("usage"), dict) else {}
        status = "complete"
        if assistant and node.get("error"):
            status = "failed"
        elif assistant and node.get("done") is False:
            status = "interrupted"
        return ChatMessage(
            key=node_key,
            parent=parent,
            role=role,
            content=content,
            created_at=self._time(node.get("timestamp")),
            status=status,
            model=loose_short_text(node.get("model")) if assistant else "",
            prompt_tokens=_first_count(usage, "prompt_tokens", "prompt_eval_count")
            if assistant
            else None,
            completion_tokens=_first_count(usage, "completion_tokens", "eval_count")
            if assistant
            else None,
        )

    def _time(self, value: Any) -> datetime | None:
        moment = from_epoch(value)
        if moment is None and is_time_like(value):
            self.bad_dates += 1
        return moment

    def _warnings(self) -> list[str]:
        warnings = [
            f"{plural(number, what)} {were(number)} left out."
            for what, number in sorted(self.left_out.items())
            if number
        ]
        if self.bad_dates:
            warnings.append(
                f"{plural(self.bad_dates, 'time')} could not be read and {were(self.bad_dates)} "
                "left empty."
            )
        return warnings


def _first_count(usage: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = count(usage.get(name))
        if value is not None:
            return value
    return None


def strip_blocks(content: str) -> tuple[str, int]:
    """`content` without Open WebUI's reasoning/tool-call `<details>` blocks, and how many.

    Scanned with `str.find`, never a backtracking pattern over the whole text: a reply of a
    million unclosed openings takes one pass.
    """
    kept: list[str] = []
    position = 0
    removed = 0
    while True:
        start = content.find("<details ", position)
        if start < 0:
            break
        tag_end = content.find(">", start)
        if tag_end < 0:
            break
        if not _BLOCK_OPENING.fullmatch(content, start, tag_end + 1):
            kept.append(content[position : tag_end + 1])
            position = tag_end + 1
            continue
        end = content.find(_BLOCK_CLOSING, tag_end)
        if end < 0:
            break
        kept.append(content[position:start])
        position = end + len(_BLOCK_CLOSING)
        removed += 1
    kept.append(content[position:])
    result = "".join(kept)
    return (result.strip() if removed else result), removed

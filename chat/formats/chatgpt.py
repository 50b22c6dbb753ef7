"""ChatGPT's data export, `conversations.json`: a JSON list of conversations, each with its
messages as a tree (`mapping`: node id → {message, parent, children}) and `current_node`, the
end of the branch ChatGPT shows (/work/shared/notes/chat-formats.md §2).

What becomes a message: nodes whose message has the role `user` or `assistant`, is addressed to
everyone (`recipient` "all"; an assistant's call to a tool, e.g. a browser `search(...)`, is not)
and is not hidden (`weight` 0 or `is_visually_hidden_from_conversation`). Left out, their
children re-parented to the nearest kept ancestor: empty root nodes (`message: null`), `system`
and `tool` messages, tool calls, hidden messages, the model's `thoughts` and
`reasoning_recap`, custom instructions (`user_editable_context`), and messages with no text.
`parent` pointers are the tree (`children` lists are not read); siblings keep the order of the
`mapping`, which is the order ChatGPT made them in.

Content: `parts` of text are joined with a line break; parts that are objects with a `text`
keep it; other objects (images, audio, files: the export holds only pointers to them) are left
out and counted in the chat's warnings. `code` content (an assistant's code addressed to
everyone) becomes a fenced block. A reply ChatGPT shows as stopped (`in_progress`, or
`finish_details.type` "interrupted") is `interrupted`; one cut at the length limit
(`max_tokens`) is `truncated`, finish reason "length".

A conversation without a `mapping` (seen in real exports) is read as a chat with no messages and
a warning. Refused, for the whole file: wrong JSON shapes, a `parent` or `current_node` that is
not text or names no node, a node that is its own parent, cycles, non-text `parts` that are not
objects, more than MAX_MESSAGES nodes, absurd lengths.
"""

from __future__ import annotations

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
"""Largest `conversations.json` we read. Bigger exports must be imported in parts (ChatGPT's
newer exports come split into `conversations-NNN.json` files)."""
_KEPT_ROLES = ("user", "assistant")
_SKIPPED_CONTENT = frozenset(
    {"thoughts", "reasoning_recap", "user_editable_context", "model_editable_context"}
)


def read_chatgpt(data: bytes) -> list[Chat]:
    """Read a ChatGPT `conversations.json` (or one conversation object) into chats."""
    return chats_from_object(load_json(data, limit=MAX_BYTES, what="The file"))


def chats_from_object(obj: Any) -> list[Chat]:
    conversations = [obj] if isinstance(obj, dict) else obj
    if not isinstance(conversations, list):
        raise ChatFormatError(f"A ChatGPT export is a list of conversations, not {json_kind(obj)}.")
    total = 0
    for number, conversation in enumerate(conversations, 1):
        if not isinstance(conversation, dict):
            raise ChatFormatError(
                f"Conversation {number} must be an object, not {json_kind(conversation)}."
            )
        mapping = conversation.get("mapping")
        if mapping is not None and not isinstance(mapping, dict):
            raise ChatFormatError(
                f"Conversation {number}: 'mapping' must be an object, not {json_kind(mapping)}."
            )
        total += len(mapping or ())
    if total > MAX_MESSAGES:
        raise ChatFormatError(
            f"The file holds {total:,} messages; at most {MAX_MESSAGES:,} can be imported at once."
        )
    return [_Conversation(c, n).read() for n, c in enumerate(conversations, 1)]


class _Conversation:
    def __init__(self, obj: dict[str, Any], number: int) -> None:
        self.obj = obj
        self.where = f"Conversation {number}"
        self.left_out: Counter[str] = Counter()
        self.attachments = 0
        self.bad_dates = 0

    def read(self) -> Chat:
        obj, where = self.obj, self.where
        chat = Chat(
            title=short_text(obj.get("title"), f"{where}: the title"),
            settings=ChatSettings(model=loose_short_text(obj.get("default_model_slug"))),
            created_at=self._time(obj.get("create_time")),
            updated_at=self._time(obj.get("update_time")),
        )
        mapping = obj.get("mapping")
        if mapping is None:
            chat.warnings.append(f"{where} has no messages in the export.")
            return chat
        nodes = [self._node(node_key, node) for node_key, node in mapping.items()]
        nodes = order_tree(nodes, what="node", key_of=lambda n: n[0], parent_of=lambda n: n[1])
        # The kept message each node stands for: itself, else its nearest kept ancestor.
        stands_for: dict[str, str | None] = {}
        for node_key, parent, message in nodes:
            kept_parent = None if parent is None else stands_for[parent]
            built = None if message is None else self._message(node_key, kept_parent, message)
            if built is None:
                stands_for[node_key] = kept_parent
            else:
                chat.messages.append(built)
                stands_for[node_key] = node_key
        current = optional_key(obj.get("current_node"), f"{where}: 'current_node'")
        if current is not None:
            if current not in stands_for:
                raise ChatFormatError(
                    f"{where}: 'current_node' {current!r} is not one of its messages."
                )
            chat.shown_leaf = stands_for[current]
        chat.warnings.extend(self._warnings())
        chat.validate()
        return chat

    def _node(self, node_key: str, node: Any) -> tuple[str, str | None, dict[str, Any] | None]:
        subject = f"{self.where}, node {node_key!r}"
        node_key = key(node_key, f"{self.where}: a node's id")
        if not isinstance(node, dict):
            raise ChatFormatError(f"{subject} must be an object, not {json_kind(node)}.")
        parent = optional_key(node.get("parent"), f"{subject}: 'parent'")
        message = node.get("message")
        if message is not None and not isinstance(message, dict):
            raise ChatFormatError(
                f"{subject}: 'message' must be an object or null, not {json_kind(message)}."
            )
        return node_key, parent, message

    def _message(
        self, node_key: str, parent: str | None, message: dict[str, Any]
    ) -> ChatMessage | None:
        """The message a node keeps, or None when it is left out (counted)."""
        subject = f"{self.where}, message {node_key!r}"
        author = message.get("author") if isinstance(message.get("author"), dict) else {}
        role = author.get("role")
        metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
        content = message.get("content")
        if content is None:
            content = {}
        if not isinstance(content, dict):
            raise ChatFormatError(
                f"{subject}: 'content' must be an object, not {json_kind(content)}."
            )
        content_type = content.get("content_type")
        if role not in _KEPT_ROLES:
            self.left_out["system or tool message"] += 1
            return None
        weight = message.get("weight")
        if metadata.get("is_visually_hidden_from_conversation") is True or (
            isinstance(weight, int | float) and not isinstance(weight, bool) and weight == 0
        ):
            self.left_out["hidden message"] += 1
            return None
        if message.get("recipient") not in (None, "all"):
            self.left_out["tool call"] += 1
            return None
        if content_type in _SKIPPED_CONTENT:
            self.left_out["reasoning or instructions block"] += 1
            return None
        body, omitted = self._content(content, subject)
        self.attachments += omitted
        if not body and not omitted:
            # Nothing a member would see: placeholders, empty turns around tool use.
            self.left_out["empty message"] += 1
            return None
        finish = metadata.get("finish_details")
        finish_type = finish.get("type") if isinstance(finish, dict) else None
        status = "complete"
        if message.get("status") == "in_progress" or finish_type == "interrupted":
            status = "interrupted"
        elif finish_type == "max_tokens":
            status = "truncated"
        assistant = role == "assistant"
        return ChatMessage(
            key=node_key,
            parent=parent,
            role=role,
            content=body,
            created_at=self._time(message.get("create_time")),
            status=status if assistant else "complete",
            model=loose_short_text(metadata.get("model_slug")) if assistant else "",
            finish_reason={"stop": "stop", "max_tokens": "length"}.get(finish_type, "")
            if assistant
            else "",
        )

    def _content(self, content: dict[str, Any], subject: str) -> tuple[str, int]:
        """(text, number of parts left out) of a message's content."""
        if content.get("content_type") == "code" and isinstance(content.get("text"), str):
            language = content.get("language")
            info = language if isinstance(language, str) and language != "unknown" else ""
            code = message_text(content["text"], f"{subject}: the code")
            return f"```{info}\n{code}\n```", 0
        parts = content.get("parts")
        if parts is None:
            return message_text(content.get("text"), f"{subject}: the text"), 0
        if not isinstance(parts, list):
            raise ChatFormatError(f"{subject}: 'parts' must be a list, not {json_kind(parts)}.")
        texts: list[str] = []
        omitted = 0
        for number, part in enumerate(parts, 1):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = part["text"]
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                omitted += 1
            elif part is not None:
                raise ChatFormatError(
                    f"{subject}: part {number} of the content is {json_kind(part)}, neither "
                    "text nor an attachment."
                )
        return message_text("\n".join(t for t in texts if t), f"{subject}: the text"), omitted

    def _time(self, value: Any) -> datetime | None:
        moment = from_epoch(value)
        if moment is None and is_time_like(value):
            self.bad_dates += 1
        return moment

    def _warnings(self) -> list[str]:
        warnings = [
            f"{plural(number, what)} {were(number)} left out."
            for what, number in sorted(self.left_out.items())
        ]
        if self.attachments:
            warnings.append(
                f"{plural(self.attachments, 'image or file', 'images or files')} "
                f"{were(self.attachments)} left out: the export holds only "
                "pointers to them, the text around them was kept."
            )
        if self.bad_dates:
            warnings.append(
                f"{plural(self.bad_dates, 'time')} could not be read and {were(self.bad_dates)} "
                "left empty."
            )
        return warnings

"""The events sent to browsers, and the only code that sends them to channel groups.

Each event is a small dict with a `type` (see docs/websocket-protocol.md). Functions here are
called after the data they describe is committed.
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer
from django.template.defaultfilters import linebreaksbr

from chat.access import conversation_group, user_group
from chat.models import Message
from chat.rendering import render_markdown


def render_message(role: str, content: str) -> str:
    """The safe HTML of a message's text (user text is escaped, model text sanitized)."""
    if role == Message.Role.USER:
        return str(linebreaksbr(content, autoescape=True))
    return render_markdown(content)


def message_html(message: Message) -> str:
    """The stored rendering of a finished message; a streaming one is rendered as it stands."""
    if message.content_html or not message.content:
        return message.content_html
    return render_message(message.role, message.content)


def message_payload(message: Message, **overrides: Any) -> dict[str, Any]:
    """A message as the browser sees it."""
    payload = {
        "id": message.pk,
        "role": message.role,
        "status": message.status,
        "content": message.content,
        "html": message_html(message),
        "error": message.error,
        "error_code": message.error_code,
        "finish_reason": message.finish_reason,
        "model": message.model,
        "greeting_index": message.greeting_index,
        "prompt_note": message.prompt_note,
        "usage": (
            {"prompt_tokens": message.prompt_tokens, "completion_tokens": message.completion_tokens}
            if message.completion_tokens is not None or message.prompt_tokens is not None
            else None
        ),
    }
    payload.update(overrides)
    return payload


async def _group_send(conversation_id: int, event: dict[str, Any]) -> None:
    await get_channel_layer().group_send(conversation_group(conversation_id), event)


async def message_created(message: Message) -> None:
    """A user message or a new (empty, streaming) reply was stored."""
    await _group_send(
        message.conversation_id,
        {"type": "message.created", "message": message_payload(message), "seq": 0},
    )


async def message_delta(
    conversation_id: int, message_id: int, seq: int, text: str, html: str, frozen: int
) -> None:
    """New text of a streaming reply. `html` holds blocks that froze; `frozen` is their length."""
    event: dict[str, Any] = {"type": "message.delta", "id": message_id, "seq": seq, "text": text}
    if html:
        event["html"] = html
        event["frozen"] = frozen
    await _group_send(conversation_id, event)


async def message_done(message: Message, seq: int | None = None) -> None:
    """A reply reached its final state (complete, stopped, failed, truncated or interrupted)."""
    await _group_send(
        message.conversation_id,
        {"type": "message.done", "message": message_payload(message), "seq": seq},
    )


async def session_ended(user_id: int, session_key: str | None) -> None:
    """Close the user's sockets: those of one session, or all of them when key is None."""
    await get_channel_layer().group_send(
        user_group(user_id), {"type": "session.ended", "session_key": session_key}
    )

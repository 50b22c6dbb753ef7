"""The events sent to browsers, and the only code that delivers them.

Each event is a small dict with a `type` (see docs/websocket-protocol.md). Functions here are
called after the data they describe is committed.

Delivery has two paths. Sockets of this process are attached here (`attach`) and get every
event of their conversation directly, in the order it was sent, whatever the channel layer is
doing. Sockets of other processes get it through the channel layer, published by one task per
process off the caller's path, and only while another process has a socket on that
conversation (`chat.presence`): a slow or unreachable Redis never delays or fails the write or
the generation that sent the event, and a conversation open in one process costs Redis nothing. The layer is at most once anyway; a socket that misses
events resyncs from the database and the generating process (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import Any, Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer

from chat import presence
from chat.access import conversation_group, user_group
from chat.models import Message
from serika_web import metrics
from serika_web.rendering import message_html

log = logging.getLogger(__name__)

# Tags what this process published, so its own sockets, which had it directly, drop the copy
# the layer brings back.
PROCESS_ID = uuid.uuid4().hex
# Events waiting for the layer; beyond this the newest are dropped (and repaired by resyncs).
PUBLISH_QUEUE_SIZE = 10_000


class LocalSocket(Protocol):
    """What this module and `chat.followers` need of a socket (a `ChatConsumer`)."""

    conversation_id: int
    user_id: int
    channel_name: str

    async def dispatch(self, message: dict[str, Any]) -> None: ...

    async def follow(self, reply_id: int, generator_channel: str) -> None: ...

    def quiet_replies(self, since: float) -> list[int]: ...

    def forget(self, reply_id: int) -> None: ...


_by_conversation: dict[int, set[LocalSocket]] = defaultdict(set)
_by_user: dict[int, set[LocalSocket]] = defaultdict(set)
_by_channel: dict[str, LocalSocket] = {}


def attach(socket: LocalSocket) -> bool:
    """Deliver the events of `socket`'s conversation and user to it directly from now on.

    True when it is this process's first socket on that conversation."""
    first = socket.conversation_id not in _by_conversation
    _by_conversation[socket.conversation_id].add(socket)
    _by_user[socket.user_id].add(socket)
    _by_channel[socket.channel_name] = socket
    return first


def detach(socket: LocalSocket) -> bool:
    """Stop delivering to `socket` (it disconnected).

    True when it was this process's last socket on its conversation."""
    for registry, key in ((_by_conversation, socket.conversation_id), (_by_user, socket.user_id)):
        sockets = registry.get(key)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del registry[key]
    _by_channel.pop(socket.channel_name, None)
    return socket.conversation_id not in _by_conversation


def local_conversations() -> list[int]:
    """The conversations this process has sockets on."""
    return list(_by_conversation)


def local_sockets() -> list[LocalSocket]:
    """Every socket of this process."""
    return list(_by_channel.values())


def local_socket(channel_name: str) -> LocalSocket | None:
    """The socket of this process listening on `channel_name`, if there is one."""
    return _by_channel.get(channel_name)


async def deliver_locally(sockets: set[LocalSocket], event: dict[str, Any]) -> None:
    """Hand `event` to each of this process's `sockets`; one socket's failure is not the
    sender's."""
    for socket in list(sockets):
        try:
            await socket.dispatch(event)
        except Exception as exc:
            # Most often a socket whose connection closed a moment before its disconnect
            # handler ran. It gets nothing more; its browser reconnects and resyncs.
            detach(socket)
            log.warning("Dropped a socket that could not take %s: %r", event.get("type"), exc)


# --- the layer, for other processes -----------------------------------------------------------
class _Publisher:
    """One task per event loop that sends queued events to their conversation's group, in
    order, while another process has a socket on that conversation."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue(PUBLISH_QUEUE_SIZE)
        self.failing = False
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            conversation_id, event = await self.queue.get()
            if not await presence.others_follow(conversation_id):
                continue
            try:
                await get_channel_layer().group_send(conversation_group(conversation_id), event)
            except Exception as exc:
                metrics.LAYER_ERRORS.inc()
                if not self.failing:
                    self.failing = True
                    log.warning(
                        "The channel layer is unreachable (%s); other processes' sockets will "
                        "resync when it is back",
                        exc,
                    )
                continue
            if self.failing:
                self.failing = False
                log.warning("The channel layer is reachable again")

    def put(self, conversation_id: int, event: dict[str, Any]) -> None:
        # A full queue drops the event: the layer is at most once anyway, and followers resync.
        try:
            self.queue.put_nowait((conversation_id, event))
        except asyncio.QueueFull:
            metrics.LAYER_ERRORS.inc()


_publisher: _Publisher | None = None


def layer_is_shared() -> bool:
    # The in-memory layer reaches only this process, whose sockets had the event directly.
    return not isinstance(get_channel_layer(), InMemoryChannelLayer)


def _publish(conversation_id: int, event: dict[str, Any]) -> None:
    # Queued for the sockets of other processes (never blocks, never raises).
    global _publisher
    if not layer_is_shared() or presence.known(conversation_id) is False:
        return
    loop = asyncio.get_running_loop()
    if _publisher is None or _publisher.loop is not loop or _publisher.task.done():
        _publisher = _Publisher()
    _publisher.put(conversation_id, {**event, "origin": PROCESS_ID})


async def _send(conversation_id: int, event: dict[str, Any]) -> None:
    _publish(conversation_id, event)
    sockets = _by_conversation.get(conversation_id)
    if sockets:
        await deliver_locally(sockets, event)


async def stop_publishing() -> None:
    """End this process's publisher task (tests; a process exiting needs nothing)."""
    global _publisher
    if _publisher is not None:
        _publisher.task.cancel()
        _publisher = None


# --- what a message looks like -----------------------------------------------------------------
def message_payload(message: Message, **overrides: Any) -> dict[str, Any]:
    """A message as the browser sees it. `siblings` (the ids of its alternatives, itself
    included, oldest first) is there when the caller read them (`chat.tree`)."""
    payload = {
        "id": message.pk,
        "parent": message.parent_id,
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
        "created_at": message.created_at.isoformat() if message.created_at else None,
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
    }
    siblings = getattr(message, "siblings", None)
    if siblings is not None:
        payload["siblings"] = siblings
    payload.update(overrides)
    return payload


# --- the events ----------------------------------------------------------------------------
async def message_created(message: Message) -> None:
    """A user message or a new (empty, streaming) reply was stored."""
    await _send(
        message.conversation_id,
        {"type": "message.created", "message": message_payload(message), "seq": 0},
    )


async def message_continued(message: Message, html: str, frozen: int) -> None:
    """A finished reply streams again (Continue): new deltas append to its text, from seq 1.
    `html` is the rendering of its first `frozen` characters, as in a snapshot."""
    await _send(
        message.conversation_id,
        {
            "type": "message.continued",
            "message": message_payload(message, html=html, frozen=frozen, seq=0),
            "seq": 0,
        },
    )


async def message_updated(message: Message) -> None:
    """A message's text was corrected in place (Edit of a reply)."""
    await _send(
        message.conversation_id, {"type": "message.updated", "message": message_payload(message)}
    )


async def path_changed(
    conversation_id: int, parent_id: int | None, messages: list[Message]
) -> None:
    """The conversation shows another branch (an alternative chosen, a message deleted):
    everything shown after message `parent_id` (after nothing: from the top) is replaced by
    `messages`."""
    await _send(
        conversation_id,
        {
            "type": "path.changed",
            "parent": parent_id,
            "messages": [message_payload(m) for m in messages],
        },
    )


async def message_delta(
    conversation_id: int, message_id: int, seq: int, text: str, html: str, frozen: int
) -> None:
    """New text of a streaming reply. `html` holds blocks that froze; `frozen` is their length."""
    event: dict[str, Any] = {"type": "message.delta", "id": message_id, "seq": seq, "text": text}
    if html:
        event["html"] = html
        event["frozen"] = frozen
    await _send(conversation_id, event)


async def message_done(message: Message, seq: int | None = None) -> None:
    """A reply reached its final state (complete, stopped, failed, truncated or interrupted)."""
    await _send(
        message.conversation_id,
        {"type": "message.done", "message": message_payload(message), "seq": seq},
    )


def conversation_payload(conversation) -> dict[str, Any]:
    """A conversation as its owner's pages see it."""
    return {
        "id": conversation.pk,
        "title": str(conversation),
        "pinned": conversation.pinned_at is not None,
        "archived": conversation.archived_at is not None,
    }


async def conversation_updated(conversation) -> None:
    """A conversation's title changed: every socket of its owner hears it, on any of their
    conversations (their lists show it)."""
    await _send_to_user(
        conversation.owner_id,
        {"type": "conversation.updated", "conversation": conversation_payload(conversation)},
    )


async def _send_to_user(user_id: int, event: dict[str, Any]) -> None:
    # Sent at once, not queued: it may run in a short-lived event loop (a management command,
    # a sync request outside the server's loop), which would end before a queued task ran.
    if layer_is_shared():
        try:
            async with asyncio.timeout(2):
                await get_channel_layer().group_send(
                    user_group(user_id), {**event, "origin": PROCESS_ID}
                )
        except Exception:
            log.warning("Could not tell other processes about user %s's %s", user_id, event["type"])
    sockets = _by_user.get(user_id)
    if sockets:
        await deliver_locally(sockets, event)


async def session_ended(user_id: int, session_key: str | None) -> None:
    """Close the user's sockets: those of one session, or all of them when key is None."""
    await _send_to_user(user_id, {"type": "session.ended", "session_key": session_key})

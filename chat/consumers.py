"""The chat websocket: authenticates, validates frames and relays; no business logic here.

Protocol: docs/websocket-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError

from chat import actions, events, followers, generation, presence
from chat.access import (
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    AccessEnded,
    SocketAccess,
    aget_conversation_for_user,
    conversation_group,
    user_group,
)
from chat.models import Message
from serika_web import log_context, metrics

log = logging.getLogger(__name__)

_SYNC_LIMIT = 500


@database_sync_to_async
def _messages_after(access: SocketAccess, after: int) -> list[Message]:
    conversation = access.conversation()
    return list(conversation.messages.filter(pk__gt=after).order_by("pk")[:_SYNC_LIMIT])


def _streaming_reply_sync(conversation_id: int) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id, status=Message.Status.STREAMING
    ).first()


@database_sync_to_async
def _checked_streaming_reply(access: SocketAccess) -> Message | None:
    return _streaming_reply_sync(access.conversation().pk)


_streaming_reply = database_sync_to_async(_streaming_reply_sync)

# Said when the database cannot be reached: nothing was stored, the browser keeps the text.
UNAVAILABLE = "The server cannot reach its database right now; nothing was saved. Try again soon."
# RFC 6455 "try again later": the database could not be reached while opening the socket;
# the browser reconnects.
CLOSE_TRY_AGAIN = 1013


# Events dispatched without the database-thread hop Channels makes before every event to close
# stale connections: the relayed ones touch no database, and frame handlers reach it only
# through `database_sync_to_async`, which closes stale connections itself. (The hop per event
# was a thread round trip per delta and per browser frame.)
_DIRECT_EVENTS = frozenset(
    {
        "message.created",
        "message.delta",
        "message.done",
        "reply.snapshot",
        "presence.joined",
        "session.ended",
        "websocket.receive",
        "websocket.disconnect",
    }
)


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab's connection to one conversation."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        if "origin" in message:
            # From the channel layer. This process's own events reached its sockets directly.
            if message["origin"] == events.PROCESS_ID:
                return
            message = {key: value for key, value in message.items() if key != "origin"}
        if message["type"] in _DIRECT_EVENTS:
            await getattr(self, message["type"].replace(".", "_"))(message)
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user") or AnonymousUser()
        self.conversation = None
        # reply id → last seq forwarded to the browser, or None while waiting for a snapshot
        self.following: dict[int, int | None] = {}
        self.held: dict[int, list[dict[str, Any]]] = {}
        # reply id → loop time it was last heard of (for `chat.followers`)
        self.heard: dict[int, float] = {}
        # Refusals are accept-then-close so the browser can read the code (a refused handshake
        # only says 403).
        if not self.user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        try:
            self.conversation = await aget_conversation_for_user(self.user, conversation_id)
        except DatabaseError:
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        if self.conversation is None:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        session_key = getattr(self.scope.get("session"), "session_key", None)
        self.access = SocketAccess(session_key, self.user.pk, self.conversation.pk)
        self.conversation_id = self.conversation.pk
        self.user_id = self.user.pk
        # This socket's task runs all its frames: their log lines carry these ids.
        log_context.user_id.set(self.user_id)
        log_context.conversation_id.set(self.conversation_id)
        # Other processes' events come through the layer's groups, joined before accepting.
        # A layer that cannot be reached does not keep the socket shut: this process's events
        # come directly, and the browser resyncs from the database while it hears nothing.
        self.group = conversation_group(self.conversation.pk)
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
        except Exception as exc:
            log.warning("Socket joins no layer group (%s); it hears this process only", exc)
        await self.accept()
        # No await between accepting and attaching: the browser's first frame, a `sync`, comes
        # after this, and brings everything committed before it from the database.
        first_here = events.attach(self)
        metrics.SOCKETS.inc()
        if events.layer_is_shared():
            followers.ensure_watching()
            if first_here:
                try:
                    await presence.join([self.conversation_id])
                    # Processes that publish this conversation's events learn it at once,
                    # rather than when their cache of who follows expires.
                    await self.channel_layer.group_send(
                        self.group, {"type": "presence.joined", "origin": events.PROCESS_ID}
                    )
                except Exception as exc:
                    log.warning("Could not record this socket's presence (%s)", exc)

    async def disconnect(self, code: int) -> None:
        # Leaving the groups is all: generations belong to the server, not to this socket.
        if self.conversation is not None:
            metrics.SOCKETS.dec()
            if events.detach(self) and events.layer_is_shared():
                with contextlib.suppress(Exception):  # its entry expires anyway
                    await presence.leave(self.conversation_id)
            with contextlib.suppress(Exception):  # an unreachable layer forgets them anyway
                await self.channel_layer.group_discard(self.group, self.channel_name)
                await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)

    # --- frames from the browser ------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        if text_data is None:
            await self.send_error("bad_frame", "Frames must be JSON text.")
            return
        if len(text_data) > settings.CHAT_MAX_FRAME_BYTES:
            await self.send_error("frame_too_large", "That frame is too large.")
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser's stack allows.
            await self.send_error("bad_json", "That frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self.send_error("bad_frame", "A frame must be an object with a type.")
            return
        handler = {
            "sync": self.on_sync,
            "message.send": self.on_send,
            "generation.stop": self.on_stop,
            "message.retry": self.on_retry,
            "greeting.switch": self.on_switch_greeting,
        }.get(frame["type"])
        if handler is None:
            await self.send_error("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            return
        # Every frame that acts re-checks the user and the conversation (`self.access`) in the
        # same database call as its own work, so a logged-out or deactivated user, or a deleted
        # conversation, stops working at once.
        try:
            await handler(frame)
        except AccessEnded as exc:
            await self.close(code=exc.code)
        except DatabaseError as exc:
            log.warning("A %s frame failed: the database is unreachable (%s)", frame["type"], exc)
            await self.send_error("unavailable", UNAVAILABLE)

    async def on_sync(self, frame: dict[str, Any]) -> None:
        after = frame.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self.send_error("bad_frame", "sync.after must be a message id (an integer).")
            return
        messages = await _messages_after(self.access, after)
        await self.send_json(
            {
                "type": "conversation.sync",
                "messages": [events.message_payload(m) for m in messages],
            }
        )
        for message in messages:
            if message.is_streaming and message.generator_channel:
                await self.follow(message.pk, message.generator_channel)

    async def on_send(self, frame: dict[str, Any]) -> None:
        content = frame.get("content")
        if not isinstance(content, str) or not content.strip():
            await self.send_error("empty_message", "Type a message first.")
            return
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            await self.send_error(
                "message_too_long",
                f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
            )
            return
        channel = await self.generator_channel()
        if channel is None:
            return
        try:
            started = await actions.post_user_message(self.access, content, channel)
        except actions.CharacterUnavailable as exc:
            await self.send_error("character_unavailable", str(exc))
            return
        except actions.ConversationBusy:
            await self.send_error(
                "busy", "A reply is still being written. Wait for it or stop it first."
            )
            return
        except actions.TooManyReplies as exc:
            await self.send_error("too_many_replies", str(exc))
            return
        generation.launch(started)

    async def on_retry(self, frame: dict[str, Any]) -> None:
        channel = await self.generator_channel()
        if channel is None:
            return
        try:
            started = await actions.start_reply(self.access, channel)
        except actions.CharacterUnavailable as exc:
            await self.send_error("character_unavailable", str(exc))
            return
        except actions.ConversationBusy:
            await self.send_error("busy", "A reply is still being written.")
            return
        except actions.TooManyReplies as exc:
            await self.send_error("too_many_replies", str(exc))
            return
        except ValueError as exc:
            await self.send_error("nothing_to_retry", str(exc))
            return
        generation.launch(started)

    async def generator_channel(self) -> str | None:
        """This process's control channel, or None (and an error frame) when the layer cannot
        make one: a reply must not be stored that no other process could stop or follow."""
        try:
            return await generation.new_generator_channel()
        except generation.ShuttingDown:
            await self.send_error(
                "unavailable", "The server is restarting; send again in a moment."
            )
            return None
        except Exception as exc:
            log.warning("Cannot start a reply: the channel layer is unreachable (%s)", exc)
            await self.send_error(
                "unavailable", "The server cannot start a reply right now; try again soon."
            )
            return None

    async def on_switch_greeting(self, frame: dict[str, Any]) -> None:
        index = frame.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            await self.send_error("bad_frame", "greeting.switch.index must be an integer.")
            return
        try:
            await actions.switch_greeting(self.access, index)
        except actions.GreetingLocked as exc:
            await self.send_error("greeting_locked", str(exc))

    async def on_stop(self, frame: dict[str, Any]) -> None:
        reply = await _checked_streaming_reply(self.access)
        if reply is None or not reply.generator_channel:
            await self.send_error("not_streaming", "No reply is being written.")
            return
        try:
            await generation.request_stop(reply.generator_channel, reply.pk)
        except Exception as exc:
            log.warning("Could not send Stop for reply %s (%s)", reply.pk, exc)
            await self.send_error("unavailable", "The server cannot stop that reply right now.")

    # --- following a streaming reply --------------------------------------------------------
    async def follow(self, reply_id: int, generator_channel: str) -> None:
        """Ask the reply's generation for a snapshot; hold its deltas until it arrives."""
        self.following[reply_id] = None
        self.held.setdefault(reply_id, [])
        self.heard[reply_id] = self._now()
        try:
            await generation.request_snapshot(generator_channel, reply_id, self.channel_name)
        except Exception as exc:
            # The layer is away: the browser's next resync asks again.
            log.warning("Could not ask for reply %s's snapshot (%s)", reply_id, exc)

    async def reply_snapshot(self, event: dict[str, Any]) -> None:
        message = event["message"]
        reply_id = message["id"]
        if reply_id not in self.following:
            return  # already done
        seq = message["seq"]
        self.following[reply_id] = seq
        self.heard[reply_id] = self._now()
        await self.send_json({"type": "message.snapshot", "message": message})
        for delta in self.held.pop(reply_id, []):
            await self.message_delta(delta)

    # --- events from the conversation group ---------------------------------------------------
    async def message_created(self, event: dict[str, Any]) -> None:
        message = event["message"]
        if message["status"] == Message.Status.STREAMING:
            self.following[message["id"]] = 0
            self.heard[message["id"]] = self._now()
        await self.send_json(event)

    async def message_delta(self, event: dict[str, Any]) -> None:
        reply_id = event["id"]
        if reply_id not in self.following:
            return
        last = self.following[reply_id]
        self.heard[reply_id] = self._now()
        if last is None:
            self.held[reply_id].append(event)
            return
        seq = event["seq"]
        if seq <= last:
            return  # already in the snapshot
        if seq != last + 1:
            # The layer dropped a delta (full channel): resync from the generation.
            try:
                reply = await _streaming_reply(self.access.conversation_id)
            except DatabaseError:
                return  # the browser resyncs once it hears nothing more
            if reply is not None and reply.pk == reply_id and reply.generator_channel:
                await self.follow(reply_id, reply.generator_channel)
                self.held[reply_id].append(event)
            return
        self.following[reply_id] = seq
        await self.send_json(event)

    async def message_done(self, event: dict[str, Any]) -> None:
        self.forget(event["message"]["id"])
        await self.send_json(event)

    def forget(self, reply_id: int) -> None:
        """Stop following reply `reply_id`."""
        self.following.pop(reply_id, None)
        self.held.pop(reply_id, None)
        self.heard.pop(reply_id, None)

    def quiet_replies(self, since: float) -> list[int]:
        """The followed replies last heard of before loop time `since`."""
        return [reply_id for reply_id, heard in self.heard.items() if heard < since]

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def presence_joined(self, event: dict[str, Any]) -> None:
        # Another process opened its first socket on this conversation.
        presence.mark_followed(self.conversation_id)

    async def session_ended(self, event: dict[str, Any]) -> None:
        key = event.get("session_key")
        if key is None or key == getattr(self.scope.get("session"), "session_key", None):
            await self.close(code=CLOSE_UNAUTHENTICATED)

    # --- helpers ------------------------------------------------------------------------------
    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, separators=(",", ":")))

    async def send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

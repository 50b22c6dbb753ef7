"""The chat websocket: authenticates, validates frames and relays; no business logic here.

Protocol: docs/websocket-protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.db.models import Q

from chat import actions, conversation_actions, events, followers, generation, presence
from chat import tree as tree_reads
from chat.access import (
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    AccessEnded,
    SocketAccess,
    aget_conversation_for_user,
    conversation_group,
    user_group,
)
from chat.database_threads import database_call
from chat.models import Message
from serika_web import log_context, metrics
from usage import rate_limits
from usage.accounting import QuotaExceeded

log = logging.getLogger(__name__)


@database_call
def _sync_state(
    access: SocketAccess, after: int, have: set[int] | None
) -> tuple[list[int], dict[str, list[int]], list[Message]]:
    """The shown branch's ids, the alternatives of those that have any, and the messages the
    tab lacks: those newer than `after`, those not in `have`, and those edited in place."""
    conversation = access.conversation()
    tree = tree_reads.load_tree(conversation.pk)
    leaf = tree.shown_leaf(conversation.current_leaf_id)
    path = tree.path_to(leaf) if leaf is not None else []
    missing = {i for i in path if i > after or (have is not None and i not in have)}
    if len(missing) < len(path):
        # Older messages that changed in place: edited, or streaming again (Continue).
        missing.update(
            Message.objects.filter(pk__in=path)
            .filter(Q(edited_at__isnull=False) | Q(status=Message.Status.STREAMING))
            .values_list("pk", flat=True)
        )
    alternatives = {str(i): siblings for i in path if len(siblings := tree.siblings(i)) > 1}
    return path, alternatives, tree_reads.path_messages(tree, [i for i in path if i in missing])


def _streaming_reply_sync(conversation_id: int) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id, status=Message.Status.STREAMING
    ).first()


@database_call
def _checked_streaming_reply(access: SocketAccess) -> Message | None:
    return _streaming_reply_sync(access.conversation().pk)


_streaming_reply = database_call(_streaming_reply_sync)

# Said when the database cannot be reached: nothing was stored, the browser keeps the text.
UNAVAILABLE = "The server cannot reach its database right now; nothing was saved. Try again soon."
# RFC 6455 "try again later": the database could not be reached while opening the socket;
# the browser reconnects.
CLOSE_TRY_AGAIN = 1013


# Events dispatched without the database-thread hop Channels makes before every event to close
# stale connections: the relayed ones touch no database, and frame handlers reach it only
# through `database_call`, which closes stale connections itself. (The hop per event
# was a thread round trip per delta and per browser frame.)
_DIRECT_EVENTS = frozenset(
    {
        "message.created",
        "message.continued",
        "message.updated",
        "path.changed",
        "conversation.updated",
        "message.delta",
        "message.done",
        "reply.snapshot",
        "presence.joined",
        "session.ended",
        "websocket.receive",
        "websocket.disconnect",
    }
)


def _is_id(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class _FrameRefused(Exception):
    """A frame's field was refused; the error frame has been sent."""


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
            "message.regenerate": self.on_regenerate,
            "message.continue": self.on_continue,
            "message.edit": self.on_edit,
            "message.delete": self.on_delete,
            "branch.switch": self.on_switch_branch,
            "conversation.rename": self.on_rename,
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
        except actions.Refused as exc:
            await self.send_error(exc.code, str(exc))
        except actions.ConversationBusy:
            await self.send_error(
                "busy", "A reply is still being written. Wait for it or stop it first."
            )
        except actions.CharacterUnavailable as exc:
            await self.send_error("character_unavailable", str(exc))
        except actions.TooManyReplies as exc:
            await self.send_error("too_many_replies", str(exc))
        except QuotaExceeded as exc:
            await self.send_error("quota_exceeded", str(exc))
        except _FrameRefused:
            pass
        except DatabaseError as exc:
            log.warning("A %s frame failed: the database is unreachable (%s)", frame["type"], exc)
            await self.send_error("unavailable", UNAVAILABLE)

    async def on_sync(self, frame: dict[str, Any]) -> None:
        after = frame.get("after", 0)
        if not _is_id(after, minimum=0):
            await self.send_error("bad_frame", "sync.after must be a message id (an integer).")
            return
        have = frame.get("have")
        if have is not None and not (isinstance(have, list) and all(_is_id(i) for i in have)):
            await self.send_error("bad_frame", "sync.have must be a list of message ids.")
            return
        path, alternatives, messages = await _sync_state(
            self.access, after, set(have) if have is not None else None
        )
        await self.send_json(
            {
                "type": "conversation.sync",
                "path": path,
                "alternatives": alternatives,
                "messages": [events.message_payload(m) for m in messages],
            }
        )
        for message in messages:
            if message.is_streaming and message.generator_channel:
                await self.follow(message.pk, message.generator_channel)

    async def _check_content(self, frame: dict[str, Any]) -> str | None:
        """The frame's message text, or None after an error frame saying what is wrong."""
        content = frame.get("content")
        if not isinstance(content, str) or not content.strip():
            await self.send_error("empty_message", "Type a message first.")
            return None
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            await self.send_error(
                "message_too_long",
                f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
            )
            return None
        return content

    async def _message_id(self, frame: dict[str, Any], *, required: bool = True) -> int | None:
        """The frame's message `id`; None when absent (and allowed) or after an error frame."""
        message_id = frame.get("id")
        if message_id is None and not required:
            return None
        if not _is_id(message_id):
            await self.send_error("bad_frame", f"{frame['type']}.id must be a message id.")
            raise _FrameRefused
        return message_id

    async def _check_rate(self) -> None:
        """Count a frame that may start a reply against `RATE_LIMIT_SENDS`; over it, answer
        `rate_limited` and refuse the frame. Here, before the database call: a flood costs
        no database work (the quotas, checked in the verb's transaction, count only the
        replies that started)."""
        refusal = await rate_limits.check_send(self.user_id)
        if refusal is not None:
            await self.send_error("rate_limited", refusal.message)
            raise _FrameRefused

    async def on_send(self, frame: dict[str, Any]) -> None:
        content = await self._check_content(frame)
        if content is None:
            return
        await self._check_rate()
        if channel := await self.generator_channel():
            generation.launch(await actions.post_user_message(self.access, content, channel))

    async def on_retry(self, frame: dict[str, Any]) -> None:
        # The shown leaf's reply again: a new alternative of it (or a reply to a user message
        # left without one).
        await self._check_rate()
        if channel := await self.generator_channel():
            generation.launch(await actions.regenerate_reply(self.access, channel))

    async def on_regenerate(self, frame: dict[str, Any]) -> None:
        message_id = await self._message_id(frame, required=False)
        await self._check_rate()
        if channel := await self.generator_channel():
            generation.launch(await actions.regenerate_reply(self.access, channel, message_id))

    async def on_continue(self, frame: dict[str, Any]) -> None:
        message_id = await self._message_id(frame, required=False)
        await self._check_rate()
        if channel := await self.generator_channel():
            generation.launch(await actions.continue_reply(self.access, channel, message_id))

    async def on_edit(self, frame: dict[str, Any]) -> None:
        message_id = await self._message_id(frame)
        content = await self._check_content(frame)
        if content is None:
            return
        await self._check_rate()
        # The member's own message becomes a new branch with a new reply, which needs this
        # process's channel; a reply is corrected in place, which does not (so it works while
        # the layer is away or the process restarts).
        try:
            channel = await generation.new_generator_channel()
        except Exception:
            channel = None
        started = await actions.edit_message(self.access, message_id, content, channel)
        if started is not None:
            generation.launch(started)

    async def on_delete(self, frame: dict[str, Any]) -> None:
        await actions.delete_message(self.access, await self._message_id(frame))

    async def on_switch_branch(self, frame: dict[str, Any]) -> None:
        await actions.switch_branch(self.access, await self._message_id(frame))

    async def on_rename(self, frame: dict[str, Any]) -> None:
        title = frame.get("title")
        title = conversation_actions.clean_title(title) if isinstance(title, str) else ""
        if not title:
            await self.send_error("empty_title", "Type a title first.")
            return
        await conversation_actions.rename_conversation(self.access, title)

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

    # A continued reply streams again from seq 0, as a new one does.
    message_continued = message_created

    async def message_updated(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def path_changed(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def conversation_updated(self, event: dict[str, Any]) -> None:
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

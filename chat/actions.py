"""Every write to conversations and messages: verb-named functions that persist, then broadcast.

The sync halves run in one transaction each; the async wrappers broadcast only after that
transaction has committed, so a browser never hears of data it cannot load. The conversation's
messages form a tree (`chat.tree`): sending, regenerating, editing, continuing, deleting and
choosing an alternative all change it here, and none of them while a reply streams.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from cardspec.macros import card_text
from characters.personas import persona_for
from chat import events
from chat.access import SocketAccess
from chat.database_threads import database_call
from chat.models import Conversation, Message
from chat.reply_requests import PromptInputs, build_request, prompt_inputs
from chat.tree import Tree, load_tree, path_messages
from chat.upstream import CompletionRequest
from serika_web.rendering import StreamingRenderer, render_card_text, render_message
from usage import models as usage
from usage.accounting import Charge


class ConversationBusy(Exception):
    """A reply is already being generated in this conversation."""


class CharacterUnavailable(Exception):
    """The conversation's character was made private or inactive since the chat began."""


class TooManyReplies(Exception):
    """The member already has `CHAT_MAX_CONCURRENT_PER_USER` replies streaming."""


class Refused(Exception):
    """A change to the conversation's tree that cannot be made; `code` is the error frame's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StartedReply:
    """A reply stored as streaming, and the upstream request that will write it.

    A continued reply (`prefix`: its text so far) streams on from `renderer`, which has
    rendered that text already."""

    conversation: Conversation
    reply: Message
    request: CompletionRequest
    user_message: Message | None = None
    prefix: str = ""
    renderer: StreamingRenderer | None = None


def greetings_of(character) -> list[str]:
    """The character's greetings: the first message, then the alternates (empty ones skipped)."""
    if character is None:
        return []
    options = [character.first_mes, *(character.alternate_greetings or [])]
    return [text for text in options if isinstance(text, str) and text.strip()]


def start_conversation(user, character) -> Conversation:
    """A new conversation with `character` (or none), opened by the character's greeting.

    Each of the character's greetings is stored as an alternative opening (a root of the
    tree); the first is shown."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=user,
            character=character,
            title=character.name if character else "",
            model=character.model_name if character else settings.SERIKA_DEFAULT_MODEL,
        )
        user_name = persona_for(user)[0] if character else ""
        greetings = []
        for index, text in enumerate(greetings_of(character)):
            greeting = card_text(text, character, user_name)
            greetings.append(
                Message(
                    conversation=conversation,
                    role=Message.Role.ASSISTANT,
                    content=greeting,
                    content_html=render_card_text(greeting),
                    greeting_index=index,
                )
            )
        if greetings:
            first, *alternates = greetings
            first.save(force_insert=True)  # the first gets the lowest id: it is the oldest root
            Message.objects.bulk_create(alternates)
            conversation.current_leaf = first
            Conversation.objects.filter(pk=conversation.pk).update(current_leaf=first)
    return conversation


def update_chat_settings(
    conversation: Conversation, *, model: str, temperature: float | None, max_tokens: int | None
) -> Conversation:
    """Store the model and sampling settings the conversation's next replies are asked with."""
    conversation.model = model
    conversation.temperature = temperature
    conversation.max_tokens = max_tokens
    conversation.save(update_fields=["model", "temperature", "max_tokens", "updated_at"])
    return conversation


def _new_reply(
    conversation: Conversation, generator_channel: str, parent_id: int | None
) -> Message:
    return Message(
        conversation=conversation,
        parent_id=parent_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        generator_channel=generator_channel,
    )


@contextmanager
def _member_writing(access: SocketAccess) -> Iterator[Conversation]:
    """A transaction in which this member's writes run one after another, and the socket's
    conversation as of then (its access re-checked).

    Everything a tree change decides on (the shown leaf, whether a reply streams, how many
    replies the member has streaming) is read after the lock, so two tabs or processes acting
    at once see each other's results. On PostgreSQL the member's row is locked first; SQLite's
    IMMEDIATE transactions take the database's write lock when they begin.
    """
    with transaction.atomic():
        if connection.features.has_select_for_update:
            list(
                get_user_model().objects.select_for_update().filter(pk=access.user_id).values("pk")
            )
        yield access.conversation()


def _check_capacity(conversation: Conversation) -> None:
    """Refuse a new reply when the owner has their share of generations streaming already.

    Called inside `_member_writing`, before the reply is stored."""
    streaming = Message.objects.filter(
        conversation__owner_id=conversation.owner_id, status=Message.Status.STREAMING
    ).count()
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    if streaming >= limit:
        replies = "reply" if limit == 1 else "replies"
        raise TooManyReplies(
            f"You already have {limit} {replies} being written. Wait for one to finish "
            "or stop it first."
        )


def _refuse_while_streaming(conversation: Conversation) -> None:
    """Refuse when a reply streams in this conversation: its branch must stay as it was while
    it is being written. Called inside `_member_writing`."""
    if Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING).exists():
        raise ConversationBusy


def _check_character(conversation: Conversation) -> None:
    # The server resolves character → persona at send time: a character made private or
    # inactive since the chat began can no longer be talked to.
    character = conversation.character
    if character is not None and not character.is_visible_to(conversation.owner):
        raise CharacterUnavailable("This character is no longer available.")


def _message_in(conversation: Conversation, message_id: int | None) -> Message:
    """Message `message_id` of this conversation; any other id is "not found"."""
    message = (
        Message.objects.filter(conversation=conversation, pk=message_id).first()
        if message_id is not None
        else None
    )
    if message is None:
        raise Refused("not_found", "There is no such message in this conversation.")
    return message


def _children(conversation: Conversation, parent_id: int | None) -> list[int]:
    return list(
        Message.objects.filter(conversation=conversation, parent_id=parent_id)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _show(conversation: Conversation, leaf_id: int | None, *, touch: bool = True) -> None:
    """Make the branch ending at `leaf_id` the one the conversation shows."""
    conversation.current_leaf_id = leaf_id
    changes = {"current_leaf_id": leaf_id}
    if touch:  # new messages move the conversation up the list; browsing its branches does not
        changes["updated_at"] = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(**changes)


def _reserve(
    conversation: Conversation, reply: Message, *, continuing_from: str | None = None
) -> PromptInputs:
    """Read what the stored `reply`'s prompt needs, then check the owner's quotas and reserve
    what the reply may use (`usage.reserve`, which raises QuotaExceeded). Called inside
    `_member_writing`, so a refusal rolls back everything the call stored, and sends at once
    (other tabs, other processes) each see the reservations made before them.

    The history is read here, inside the transaction, rather than after it: the reservation's
    prompt estimate is counted from it (the prompt itself is built later, off this thread)."""
    inputs = prompt_inputs(conversation, reply, continuing_from=continuing_from)
    usage.reserve(conversation, reply, inputs, text_offset=len(continuing_from or ""))
    return inputs


@dataclass
class _Stored:
    """What a send's or a retry's database call stored, and what its prompt needs."""

    conversation: Conversation
    reply: Message
    inputs: PromptInputs
    user_message: Message | None = None


def _store_exchange(
    conversation: Conversation, parent_id: int | None, content: str, generator_channel: str
) -> tuple[Message, Message]:
    """Store a user message under `parent_id` and an empty streaming reply to it, and show
    them. Called inside `_member_writing`: when the reply cannot start (another one streams:
    the database's unique constraint), the user message is rolled back with it."""
    _check_character(conversation)
    _check_capacity(conversation)
    user_message = Message.objects.create(
        conversation=conversation,
        parent_id=parent_id,
        role=Message.Role.USER,
        content=content,
        content_html=render_message(Message.Role.USER, content),
    )
    reply = _new_reply(conversation, generator_channel, user_message.pk)
    reply.save(force_insert=True)
    _show(conversation, reply.pk)
    return user_message, reply


@database_call
def _post_user_message_sync(access: SocketAccess, content: str, generator_channel: str) -> _Stored:
    try:
        with _member_writing(access) as conversation:
            user_message, reply = _store_exchange(
                conversation, conversation.current_leaf_id, content, generator_channel
            )
            inputs = _reserve(conversation, reply)
    except IntegrityError as exc:
        raise ConversationBusy from exc
    # Added below the shown leaf, which has no children: neither has alternatives yet.
    user_message.siblings = [user_message.pk]
    reply.siblings = [reply.pk]
    return _Stored(conversation, reply, inputs, user_message)


async def post_user_message(
    access: SocketAccess, content: str, generator_channel: str
) -> StartedReply:
    """Store the user's message and an empty streaming reply at the end of the shown branch,
    then announce both.

    One database call re-checks the socket's access, checks the character, stores both
    messages and reads the history; a burst of sends is then served in arrival order, each in
    one hop to the database thread instead of several interleaved ones. The prompt is built
    after it, in a worker thread, so a slow lorebook never holds up anyone's database work.
    Raises AccessEnded, CharacterUnavailable, ConversationBusy, TooManyReplies or
    QuotaExceeded (`usage`), storing nothing.
    """
    stored = await _post_user_message_sync(access, content, generator_channel)
    return await _announce_exchange(stored)


async def _announce_exchange(stored: _Stored) -> StartedReply:
    started = await _started(stored)
    await events.message_created(started.user_message)
    await events.message_created(started.reply)
    return started


@database_call
def _regenerate_sync(
    access: SocketAccess, generator_channel: str, message_id: int | None
) -> _Stored:
    try:
        with _member_writing(access) as conversation:
            _check_character(conversation)
            target_id = conversation.current_leaf_id if message_id is None else message_id
            if target_id is None:
                raise Refused("nothing_to_retry", "There is no message to reply to yet.")
            target = _message_in(conversation, target_id)
            # A reply is regenerated as an alternative of itself; a user message left without
            # a reply (or whose replies are not shown) gets one more.
            parent_id = target.parent_id if target.role == Message.Role.ASSISTANT else target.pk
            if parent_id is None:
                raise Refused(
                    "nothing_to_retry",
                    "An opening greeting comes from the character card; choose another one "
                    "with the alternative buttons instead.",
                )
            _check_capacity(conversation)
            reply = _new_reply(conversation, generator_channel, parent_id)
            reply.save(force_insert=True)
            _show(conversation, reply.pk)
            inputs = _reserve(conversation, reply)
    except IntegrityError as exc:
        raise ConversationBusy from exc
    reply.siblings = _children(conversation, parent_id)
    return _Stored(conversation, reply, inputs)


async def regenerate_reply(
    access: SocketAccess, generator_channel: str, message_id: int | None = None
) -> StartedReply:
    """A new reply in place of reply `message_id` (default: the shown leaf), kept beside it as
    its alternative, in one database call, then announced. Retry is this on the shown leaf.

    Raises AccessEnded, CharacterUnavailable, ConversationBusy, TooManyReplies, QuotaExceeded
    or Refused (`not_found`, `nothing_to_retry`), storing nothing.
    """
    started = await _started(await _regenerate_sync(access, generator_channel, message_id))
    await events.message_created(started.reply)
    return started


@database_call
def _continue_sync(access: SocketAccess, generator_channel: str, message_id: int | None) -> _Stored:
    try:
        with _member_writing(access) as conversation:
            _check_character(conversation)
            _refuse_while_streaming(conversation)
            reply = _message_in(
                conversation, conversation.current_leaf_id if message_id is None else message_id
            )
            if reply.role != Message.Role.ASSISTANT or reply.pk != conversation.current_leaf_id:
                raise Refused("cannot_continue", "Only the latest reply can be continued.")
            if not reply.content:
                raise Refused(
                    "cannot_continue", "This reply has no text to continue; regenerate it instead."
                )
            _check_capacity(conversation)
            # It streams again with the model asked now; a note on the new prompt replaces
            # the old one.
            reply.status = Message.Status.STREAMING
            reply.generator_channel = generator_channel
            reply.model = conversation.model
            reply.error = reply.error_code = reply.finish_reason = reply.prompt_note = ""
            reply.save(
                update_fields=[
                    "status", "generator_channel", "model", "error", "error_code",
                    "finish_reason", "prompt_note", "updated_at",
                ]
            )  # fmt: skip
            inputs = _reserve(conversation, reply, continuing_from=reply.content)
    except IntegrityError as exc:
        raise ConversationBusy from exc
    return _Stored(conversation, reply, inputs)


async def continue_reply(
    access: SocketAccess, generator_channel: str, message_id: int | None = None
) -> StartedReply:
    """Ask the upstream to carry on the latest reply: the same reply streams again, its new text
    appended to what it had (useful after the token limit or Stop).

    Raises AccessEnded, CharacterUnavailable, ConversationBusy, TooManyReplies, QuotaExceeded
    or Refused (`not_found`, `cannot_continue`), changing nothing.
    """
    stored = await _continue_sync(access, generator_channel, message_id)
    started = await _started(stored)
    started.prefix = stored.reply.content
    started.renderer = StreamingRenderer()
    started.renderer.feed(started.prefix)
    await events.message_continued(
        started.reply, started.renderer.frozen_html, started.renderer.frozen_upto
    )
    return started


@database_call
def _edit_message_sync(
    access: SocketAccess, message_id: int, content: str, generator_channel: str | None
) -> _Stored | Message:
    try:
        with _member_writing(access) as conversation:
            original = _message_in(conversation, message_id)
            if original.role == Message.Role.USER:
                if generator_channel is None:
                    raise Refused(
                        "unavailable", "The server cannot start a reply right now; try again soon."
                    )
                user_message, reply = _store_exchange(
                    conversation, original.parent_id, content, generator_channel
                )
                inputs = _reserve(conversation, reply)
            else:
                _refuse_while_streaming(conversation)
                original.content = content
                original.content_html = render_message(original.role, content)
                original.edited_at = timezone.now()
                original.save(update_fields=["content", "content_html", "edited_at", "updated_at"])
                return original
    except IntegrityError as exc:
        raise ConversationBusy from exc
    user_message.siblings = _children(conversation, original.parent_id)
    reply.siblings = [reply.pk]
    return _Stored(conversation, reply, inputs, user_message)


async def edit_message(
    access: SocketAccess, message_id: int, content: str, generator_channel: str | None
) -> StartedReply | None:
    """Edit message `message_id`.

    The member's own message is not changed: the new text is stored as its alternative (a new
    branch) with an empty streaming reply, the branch is shown, and the reply to start is
    returned (it needs `generator_channel`; None when the process cannot start replies). The
    original branch stays as it was. A reply (or greeting) is corrected in place, marked
    edited: what the model sees from then on (None is returned).
    Raises AccessEnded, CharacterUnavailable, ConversationBusy, TooManyReplies, QuotaExceeded
    or Refused (`not_found`, `unavailable`), changing nothing.
    """
    result = await _edit_message_sync(access, message_id, content, generator_channel)
    if isinstance(result, _Stored):
        return await _announce_exchange(result)
    await events.message_updated(result)
    return None


def _shown_after(tree: Tree, leaf_id: int | None, parent_id: int | None) -> list[int]:
    """The ids of the shown branch (ending at `leaf_id`) below message `parent_id`, or all of
    it when `parent_id` is not on it."""
    if leaf_id is None:
        return []
    path = tree.path_to(leaf_id)
    if parent_id is None or parent_id not in path:
        # (A message off the shown branch, from a tab that was behind: resend all of it.)
        return path
    return path[path.index(parent_id) + 1 :]


def _changeable_tree(conversation: Conversation, message_id: int) -> Tree:
    """The conversation's tree, to change around message `message_id`; refused while a reply
    streams, or when the message is not in it. Called inside `_member_writing`."""
    _refuse_while_streaming(conversation)
    tree = load_tree(conversation.pk)
    if message_id not in tree.parents:
        raise Refused("not_found", "There is no such message in this conversation.")
    return tree


@database_call
def _switch_branch_sync(access: SocketAccess, message_id: int) -> tuple[int | None, list[Message]]:
    with _member_writing(access) as conversation:
        tree = _changeable_tree(conversation, message_id)
        leaf = tree.latest_leaf(message_id)
        _show(conversation, leaf, touch=False)
    parent_id = tree.parents[message_id]
    return parent_id, path_messages(tree, _shown_after(tree, leaf, parent_id))


async def switch_branch(access: SocketAccess, message_id: int) -> None:
    """Show the alternative `message_id` and, below it, its newest branch.

    Raises AccessEnded, ConversationBusy or Refused (`not_found`), changing nothing.
    """
    parent_id, messages = await _switch_branch_sync(access, message_id)
    await events.path_changed(access.conversation_id, parent_id, messages)


@database_call
def _delete_message_sync(access: SocketAccess, message_id: int) -> tuple[int | None, list[Message]]:
    with _member_writing(access) as conversation:
        tree = _changeable_tree(conversation, message_id)
        parent_id = tree.parents[message_id]
        leaf = tree.shown_leaf(conversation.current_leaf_id)
        siblings = tree.siblings(message_id)
        doomed = tree.subtree(message_id)
        if leaf in doomed:
            # The shown branch loses it: show its nearest alternative (the one before it,
            # else the one after), or end the branch at its parent.
            index = siblings.index(message_id)
            nearest = siblings[index - 1] if index > 0 else next(iter(siblings[1:]), None)
            leaf = tree.latest_leaf(nearest) if nearest is not None else parent_id
        Message.objects.filter(pk__in=doomed).delete()
        _show(conversation, leaf, touch=False)
        for gone in doomed:
            del tree.parents[gone]
        tree.children[parent_id] = [s for s in siblings if s != message_id]
    return parent_id, path_messages(tree, _shown_after(tree, leaf, parent_id))


async def delete_message(access: SocketAccess, message_id: int) -> None:
    """Delete a message and everything below it (in every branch); the conversation then shows
    the nearest alternative's branch, or ends at the message's parent.

    Raises AccessEnded, ConversationBusy or Refused (`not_found`), changing nothing.
    """
    parent_id, messages = await _delete_message_sync(access, message_id)
    await events.path_changed(access.conversation_id, parent_id, messages)


@database_call
def _store_prompt_note(reply: Message) -> None:
    Message.objects.filter(pk=reply.pk).update(prompt_note=reply.prompt_note)


async def _started(stored: _Stored) -> StartedReply:
    """Build the stored reply's request off the database thread; store its note, if any.

    On SQLite all database work of a send runs on one shared thread (`chat.database_threads`),
    so a prompt built there (a lorebook's searches can take up to the scan budget) held up
    every user's sends, sockets, flushes and heartbeats meanwhile. A lorebook character's
    prompt (the only slow kind) is built in a worker thread of the default executor instead,
    while the reply is marked alive as the heartbeat would; any other is built at once.
    Only a reply whose prompt left something out costs a second (one UPDATE) call, before the
    reply is announced with its note.
    """
    character = stored.inputs.character
    if character is None or not (character.character_book or {}).get("entries"):
        # No lorebook, nothing slow: a thread hop would cost more than the build (a
        # millisecond or two even in a long chat).
        request, note = build_request(stored.inputs)
        return await _with_note(stored, request, note)
    building = asyncio.ensure_future(asyncio.to_thread(build_request, stored.inputs))
    while not (await asyncio.wait({building}, timeout=settings.CHAT_HEARTBEAT_INTERVAL))[0]:
        # No generation holds the reply yet, so no heartbeat marks it: without this, a
        # sweep (this process's or another's) would take a slow build for a dead process.
        await touch_replies([stored.reply.pk])
    request, note = building.result()
    return await _with_note(stored, request, note)


async def _with_note(stored: _Stored, request: CompletionRequest, note: str) -> StartedReply:
    if note:
        stored.reply.prompt_note = note
        await _store_prompt_note(stored.reply)
    return StartedReply(stored.conversation, stored.reply, request, stored.user_message)


# The writes that keep live replies alive (flushes, heartbeats, the sweep) run on a thread of
# their own: on Channels' one shared database thread they would wait behind every other
# member's work, and a starved heartbeat makes another process take a live reply for dead.
_maintenance_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reply-maintenance")


def _on_maintenance_thread(fn):
    return database_sync_to_async(fn, thread_sensitive=False, executor=_maintenance_executor)


async def close_maintenance_connections() -> None:
    """Close the maintenance thread's database connections (tests drop their database)."""
    await _on_maintenance_thread(connections.close_all)()


@_on_maintenance_thread
def flush_replies(texts: dict[int, str]) -> None:
    """Save streaming replies' text so far (about once a second, never per token)."""
    now = timezone.now()
    with transaction.atomic():
        for reply_id, content in texts.items():
            # A reply that finished meanwhile keeps its final text.
            Message.objects.filter(pk=reply_id, status=Message.Status.STREAMING).update(
                content=content, updated_at=now
            )


@dataclass
class ReplyOutcome:
    status: str
    content: str
    finish_reason: str = ""
    error_code: str = ""
    error: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # This upstream call's own cost, for the usage aggregates. The two counts above are the
    # reply's (a continue's add up every part); this is only the call that just ended. None:
    # estimated when settled.
    charge: Charge | None = None


@database_call
def _finish_reply_sync(reply: Message, outcome: ReplyOutcome, html: str) -> Message:
    with transaction.atomic():
        reply = _store_final(reply, outcome, html)
        # In the same transaction: the usage is counted exactly when the final state is stored.
        usage.settle(reply.pk, outcome.charge, text=outcome.content)
    return reply


def _store_final(reply: Message, outcome: ReplyOutcome, html: str) -> Message:
    # The reply as created by this process: one UPDATE of the fields that change, no re-read.
    # A copy: the generation's own instance still answers snapshot requests meanwhile.
    reply = copy.copy(reply)
    reply.status = outcome.status
    reply.content = outcome.content
    reply.content_html = html
    reply.finish_reason = outcome.finish_reason
    reply.error_code = outcome.error_code
    reply.error = outcome.error
    reply.prompt_tokens = outcome.prompt_tokens
    reply.completion_tokens = outcome.completion_tokens
    reply.generator_channel = ""
    reply.save(
        update_fields=[
            "status", "content", "content_html", "finish_reason", "error_code", "error",
            "prompt_tokens", "completion_tokens", "generator_channel", "updated_at",
        ]
    )  # fmt: skip
    return reply


# Replies longer than this are rendered in a worker thread; shorter ones render in well under
# a millisecond, less than the thread hop costs.
_RENDER_INLINE_CHARS = 8_000


async def finish_reply(reply: Message, outcome: ReplyOutcome, seq: int) -> Message:
    """Store a reply's final state with all the text that arrived, then announce it.

    The text is rendered before the database call, a long one in a worker thread: its markdown
    would otherwise hold Channels' one shared database thread, and everyone's database work.
    """
    if len(outcome.content) > _RENDER_INLINE_CHARS:
        html = await asyncio.to_thread(render_message, reply.role, outcome.content)
    else:
        html = render_message(reply.role, outcome.content)
    reply = await _finish_reply_sync(reply, outcome, html)
    await events.message_done(reply, seq)
    return reply


@_on_maintenance_thread
def touch_replies(reply_ids: list[int]) -> None:
    """Mark live replies as still owned by a running process (the heartbeat)."""
    if reply_ids:
        Message.objects.filter(pk__in=reply_ids, status=Message.Status.STREAMING).update(
            updated_at=timezone.now()
        )


@_on_maintenance_thread
def _interrupt_stale_sync(
    stale_after: float, live_ids: list[int], alive_generators: set[str]
) -> list[Message]:
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    interrupted = []
    stale = (
        Message.objects.filter(status=Message.Status.STREAMING, updated_at__lt=cutoff)
        .exclude(pk__in=live_ids)
        .exclude(generator_channel__in=alive_generators)
    )
    for reply in stale:
        with transaction.atomic():
            changed = Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update(
                status=Message.Status.INTERRUPTED,
                content_html=render_message(reply.role, reply.content),
                error_code="interrupted",
                error="The server stopped while this reply was being written; "
                "the text saved until then is kept.",
                generator_channel="",
                updated_at=timezone.now(),
            )
            if changed:
                # Its reservation stops counting now; what it used is estimated from the text
                # flushed until then (the upstream's usage died with the process).
                usage.settle(reply.pk, text=reply.content)
        if changed:
            reply.refresh_from_db()
            interrupted.append(reply)
    _purge_reservations()
    return interrupted


_last_purge = 0.0


def _purge_reservations() -> None:
    """Drop reservations that no quota counts any more, about once a minute per process."""
    global _last_purge
    if time.monotonic() - _last_purge >= 60:
        _last_purge = time.monotonic()
        usage.purge_reservations()


async def interrupt_stale_replies(
    stale_after: float, live_ids: list[int], alive_generators: set[str] | None = None
) -> list[Message]:
    """Mark replies whose generating process died as interrupted, keeping what was flushed.

    Replies generated by the processes on `alive_generators` (control channels marked alive in
    Redis) are spared, however long ago they were marked in the database.
    """
    replies = await _interrupt_stale_sync(stale_after, live_ids, alive_generators or set())
    for reply in replies:
        await events.message_done(reply)
    return replies

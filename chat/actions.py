"""Every write to conversations and messages: verb-named functions that persist, then broadcast.

The sync halves run in one transaction each; the async wrappers broadcast only after that
transaction has committed, so a browser never hears of data it cannot load.
"""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from characters.card_macros import card_text
from characters.personas import persona_for
from chat import events
from chat.access import SocketAccess
from chat.events import render_message
from chat.models import Conversation, Message
from chat.prompt import PromptCharacter, Turn, build_prompt
from chat.rendering import render_card_text
from chat.upstream import CompletionRequest


class ConversationBusy(Exception):
    """A reply is already being generated in this conversation."""


class CharacterUnavailable(Exception):
    """The conversation's character was made private or inactive since the chat began."""


class TooManyReplies(Exception):
    """The member already has `CHAT_MAX_CONCURRENT_PER_USER` replies streaming."""


@dataclass
class StartedReply:
    """A reply stored as streaming, and the upstream request that will write it."""

    conversation: Conversation
    reply: Message
    request: CompletionRequest
    user_message: Message | None = None


def greetings_of(character) -> list[str]:
    """The character's greetings: the first message, then the alternates (empty ones skipped)."""
    if character is None:
        return []
    options = [character.first_mes, *(character.alternate_greetings or [])]
    return [text for text in options if isinstance(text, str) and text.strip()]


def _expand_greeting(character, user, text: str) -> str:
    return card_text(text, character, persona_for(user)[0])


def start_conversation(user, character) -> Conversation:
    """A new conversation with `character` (or none), opened by the character's greeting."""
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=user,
            character=character,
            title=character.name if character else "",
            model=character.model_name if character else settings.SERIKA_DEFAULT_MODEL,
        )
        greetings = greetings_of(character)
        if greetings:
            greeting = _expand_greeting(character, user, greetings[0])
            Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                content=greeting,
                content_html=render_card_text(greeting),
                greeting_index=0,
            )
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


class GreetingLocked(Exception):
    """The greeting can no longer be switched: the user has replied, or there is none."""


@database_sync_to_async
def _switch_greeting_sync(access: SocketAccess, index: int) -> Message:
    conversation = access.conversation()
    with transaction.atomic():
        greeting = (
            conversation.messages.select_for_update()
            .filter(greeting_index__isnull=False)
            .order_by("pk")
            .first()
        )
        if greeting is None or conversation.messages.filter(role=Message.Role.USER).exists():
            raise GreetingLocked("The greeting can only be changed before your first message.")
        options = greetings_of(conversation.character)
        if not 0 <= index < len(options):
            raise GreetingLocked("There is no such greeting.")
        greeting.content = _expand_greeting(
            conversation.character, conversation.owner, options[index]
        )
        greeting.content_html = render_card_text(greeting.content)
        greeting.greeting_index = index
        greeting.save(update_fields=["content", "content_html", "greeting_index", "updated_at"])
    return greeting


async def switch_greeting(access: SocketAccess, index: int) -> Message:
    """Replace the opening message with greeting `index`, before the user's first reply.

    Raises AccessEnded or GreetingLocked, changing nothing.
    """
    greeting = await _switch_greeting_sync(access, index)
    await events.message_done(greeting)
    return greeting


def _new_reply(conversation: Conversation, generator_channel: str) -> Message:
    return Message(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=conversation.model,
        generator_channel=generator_channel,
    )


def _check_capacity(conversation: Conversation) -> None:
    """Refuse a new reply when the owner has their share of generations streaming already.

    Called inside the transaction that stores the reply. On PostgreSQL the owner's row is
    locked first, so that concurrent sends of one member, from any process, count one after
    the other; SQLite's IMMEDIATE transactions serialize every write anyway.
    """
    owner_id = conversation.owner_id
    if connection.features.has_select_for_update:
        list(get_user_model().objects.select_for_update().filter(pk=owner_id).values("pk"))
    streaming = Message.objects.filter(
        conversation__owner_id=owner_id, status=Message.Status.STREAMING
    ).count()
    limit = settings.CHAT_MAX_CONCURRENT_PER_USER
    if streaming >= limit:
        replies = "reply" if limit == 1 else "replies"
        raise TooManyReplies(
            f"You already have {limit} {replies} being written. Wait for one to finish "
            "or stop it first."
        )


def _create_reply(conversation: Conversation, generator_channel: str) -> Message:
    reply = _new_reply(conversation, generator_channel)
    try:
        with transaction.atomic():
            _check_capacity(conversation)
            reply.save(force_insert=True)
    except IntegrityError as exc:
        raise ConversationBusy from exc
    return reply


def _check_character(conversation: Conversation) -> None:
    # The server resolves character → persona at send time: a character made private or
    # inactive since the chat began can no longer be talked to.
    character = conversation.character
    if character is not None and not character.is_visible_to(conversation.owner):
        raise CharacterUnavailable("This character is no longer available.")


@dataclass(frozen=True)
class PromptInputs:
    """Everything a reply's prompt is built from, read inside the send's database call, so that
    building it needs no database and can run off the shared database thread."""

    character: PromptCharacter | None  # None: no character, or the upstream persona alone
    history: list[Turn]
    user_name: str
    user_description: str
    context_tokens: int
    model: str
    temperature: float | None
    max_tokens: int | None
    character_id: str


@dataclass
class _Stored:
    """What a send's or a retry's database call stored, and what its prompt needs."""

    conversation: Conversation
    reply: Message
    inputs: PromptInputs
    user_message: Message | None = None


@database_sync_to_async
def _post_user_message_sync(access: SocketAccess, content: str, generator_channel: str) -> _Stored:
    conversation = access.conversation()
    _check_character(conversation)
    user_message = Message(
        conversation=conversation,
        role=Message.Role.USER,
        content=content,
        content_html=render_message(Message.Role.USER, content),
    )
    reply = _new_reply(conversation, generator_channel)
    try:
        with transaction.atomic():
            _check_capacity(conversation)
            # One INSERT for both: when the reply cannot start (another one is streaming),
            # the user message is refused with it, so a refused send stores nothing.
            Message.objects.bulk_create([user_message, reply])
            Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    except IntegrityError as exc:
        raise ConversationBusy from exc
    return _Stored(conversation, reply, prompt_inputs(conversation, reply), user_message)


async def post_user_message(
    access: SocketAccess, content: str, generator_channel: str
) -> StartedReply:
    """Store the user's message and an empty streaming reply together, then announce both.

    One database call re-checks the socket's access, checks the character, stores both
    messages and reads the history; a burst of sends is then served in arrival order, each in
    one hop to the database thread instead of several interleaved ones. The prompt is built
    after it, in a worker thread, so a slow lorebook never holds up anyone's database work.
    Raises AccessEnded, CharacterUnavailable, ConversationBusy or TooManyReplies, storing
    nothing.
    """
    stored = await _post_user_message_sync(access, content, generator_channel)
    started = await _started(stored)
    await events.message_created(started.user_message)
    await events.message_created(started.reply)
    return started


@database_sync_to_async
def _start_reply_sync(access: SocketAccess, generator_channel: str) -> _Stored:
    conversation = access.conversation()
    _check_character(conversation)
    if not conversation.messages.filter(role=Message.Role.USER).exists():
        raise ValueError("There is no message to reply to yet.")
    reply = _create_reply(conversation, generator_channel)
    return _Stored(conversation, reply, prompt_inputs(conversation, reply))


async def start_reply(access: SocketAccess, generator_channel: str) -> StartedReply:
    """A new reply to the latest user message (Retry), in one database call, then announced.

    Raises AccessEnded, CharacterUnavailable, ConversationBusy, TooManyReplies or ValueError
    (nothing to retry).
    """
    started = await _started(await _start_reply_sync(access, generator_channel))
    await events.message_created(started.reply)
    return started


# Written out because every send runs it: the ORM takes ~0.4 ms to build this query, twenty
# times what SQLite takes to answer it. Plain SQL that SQLite and PostgreSQL both accept.
_HISTORY_SQL = (
    'SELECT "role", "content" FROM "chat_message" WHERE "conversation_id" = %s AND "id" < %s '
    'AND "status" NOT IN (%s, %s) ORDER BY "id"'
)


def history_for_reply(conversation: Conversation, reply: Message) -> list[Turn]:
    """The turns a reply answers: everything up to the latest user message before it.

    Failed replies are left out, and so are earlier attempts at the same answer (a Retry).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _HISTORY_SQL,
            [conversation.pk, reply.pk, Message.Status.FAILED, Message.Status.STREAMING],
        )
        rows = cursor.fetchall()
    last_user = max(
        (i for i, (role, _) in enumerate(rows) if role == Message.Role.USER), default=-1
    )
    return [Turn(role, content) for role, content in rows[: last_user + 1] if content]


def context_budget(conversation: Conversation) -> int:
    """Prompt tokens a reply may use: the character's budget, else the model's, else the site's."""
    character = conversation.character
    if character is not None and character.context_tokens:
        return character.context_tokens
    return settings.SERIKA_MODEL_CONTEXT_TOKENS.get(
        conversation.model, settings.SERIKA_CONTEXT_TOKENS
    )


def _prompt_note(prompt) -> str:
    notes = []
    if prompt.trimmed_turns:
        turns = "message was" if prompt.trimmed_turns == 1 else "messages were"
        notes.append(
            f"{prompt.trimmed_turns} older {turns} left out to fit the model's context; "
            "the character does not see them."
        )
    elif prompt.dropped_examples:
        notes.append("Example dialogue was left out to fit the model's context.")
    if prompt.lore_unscanned:
        notes.append(
            "The lorebook was only partly scanned (its keys took too long to match): "
            f"{prompt.lore_unscanned} entries were not checked."
        )
    return " ".join(notes)


def prompt_inputs(conversation: Conversation, reply: Message) -> PromptInputs:
    """Read what `reply`'s prompt needs (the history: one query), inside the database call.

    When the character's prompt mode is "upstream", only the Serika persona speaks: no local
    persona prompt is sent, just its `character_id` and the history.
    """
    character = conversation.character
    user_name, user_description = persona_for(conversation.owner)
    local = character is not None and not (
        character.prompt_mode == "upstream" and character.serika_character_id
    )
    return PromptInputs(
        character=character.as_prompt_character() if local else None,
        history=history_for_reply(conversation, reply),
        user_name=user_name,
        user_description=user_description,
        context_tokens=context_budget(conversation),
        model=conversation.model,
        temperature=conversation.temperature,
        max_tokens=conversation.max_tokens,
        character_id=character.serika_character_id if character else "",
    )


def build_request(inputs: PromptInputs) -> tuple[CompletionRequest, str]:
    """The upstream request and the note on what its prompt left out ("" if nothing).

    No database: called in a worker thread. The lorebook's key searches share the budget
    `CHAT_LOREBOOK_BUDGET_SECONDS`.
    """
    prompt = build_prompt(
        inputs.character,
        inputs.history,
        user_name=inputs.user_name,
        user_description=inputs.user_description,
        context_tokens=inputs.context_tokens,
        lore_budget_seconds=settings.CHAT_LOREBOOK_BUDGET_SECONDS,
    )
    request = CompletionRequest(
        model=inputs.model,
        messages=prompt.messages,
        temperature=inputs.temperature,
        max_tokens=inputs.max_tokens,
        character_id=inputs.character_id,
    )
    return request, _prompt_note(prompt)


@database_sync_to_async
def _store_prompt_note(reply: Message) -> None:
    Message.objects.filter(pk=reply.pk).update(prompt_note=reply.prompt_note)


async def _started(stored: _Stored) -> StartedReply:
    """Build the stored reply's request off the database thread; store its note, if any.

    All database work of a send runs on one shared thread (Channels' `database_sync_to_async`),
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


@database_sync_to_async
def _finish_reply_sync(reply: Message, outcome: ReplyOutcome, html: str) -> Message:
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
            reply.refresh_from_db()
            interrupted.append(reply)
    return interrupted


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

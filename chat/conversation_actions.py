"""Writes to a conversation itself (its title, pin and archive), as verb-named functions that
persist, then tell every socket of its owner. `chat.actions` holds the writes to its messages."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from chat import events
from chat.access import SocketAccess
from chat.database_threads import database_call
from chat.models import Conversation, Message

TITLE_MAX_CHARS = 200  # the column's size
# Stripped from both ends of a model's title: quotes of several languages, markdown emphasis.
_QUOTES_AND_MARKUP = "\"'`*# \u201c\u201d\u2018\u2019\u00ab\u00bb"


def clean_title(text: str) -> str:
    """A title as stored: one line, no surrounding quotes or white space, at most 200 characters."""
    title = " ".join(text.split())
    # Models like to quote their titles or end them with a full stop.
    title = title.strip(_QUOTES_AND_MARKUP).removesuffix(".").strip()
    return title[:TITLE_MAX_CHARS].strip()


@database_call
def _rename_sync(access: SocketAccess, title: str) -> Conversation:
    conversation = access.conversation()
    conversation.title = title
    conversation.title_source = Conversation.TitleSource.MEMBER
    # Not `updated_at`: renaming does not move a conversation up the list.
    Conversation.objects.filter(pk=conversation.pk).update(
        title=title, title_source=Conversation.TitleSource.MEMBER
    )
    return conversation


async def rename_conversation(access: SocketAccess, title: str) -> Conversation:
    """Give the socket's conversation the member's own `title` (already cleaned, not empty);
    no automatic title replaces it afterwards. Raises AccessEnded."""
    conversation = await _rename_sync(access, title)
    await events.conversation_updated(conversation)
    return conversation


@dataclass(frozen=True)
class TitleTask:
    """What an automatic title is written from: the first exchange of a conversation."""

    conversation_id: int
    owner_id: int
    character: object | None  # the conversation's Character, for the member's usage
    model: str
    question: str
    answer: str


@database_call
def claim_auto_title(reply_id: int) -> TitleTask | None:
    """Claim the one automatic title of reply `reply_id`'s conversation; None when it has a
    title already (written, being written, or the member's own) or the reply is gone.

    The claim is one conditional UPDATE, so two processes finishing replies at once never
    both ask for a title."""
    reply = (
        Message.objects.select_related("conversation__character", "parent")
        .filter(pk=reply_id, status=Message.Status.COMPLETE)
        .first()
    )
    if reply is None or reply.parent is None or reply.parent.role != Message.Role.USER:
        return None
    conversation = reply.conversation
    claimed = Conversation.objects.filter(
        pk=conversation.pk, title_source=Conversation.TitleSource.DEFAULT
    ).update(title_source=Conversation.TitleSource.AUTO)
    if not claimed:
        return None
    return TitleTask(
        conversation_id=conversation.pk,
        owner_id=conversation.owner_id,
        character=conversation.character,
        model=conversation.model,
        question=reply.parent.content,
        answer=reply.content,
    )


@database_call
def _set_auto_title_sync(conversation_id: int, title: str) -> Conversation | None:
    with transaction.atomic():
        changed = Conversation.objects.filter(
            pk=conversation_id, title_source=Conversation.TitleSource.AUTO
        ).update(title=title)
        # A member who renamed it meanwhile keeps their title.
        return Conversation.objects.filter(pk=conversation_id).first() if changed else None


async def set_auto_title(conversation_id: int, title: str) -> Conversation | None:
    """Store an automatic title, unless the member renamed the conversation meanwhile."""
    conversation = await _set_auto_title_sync(conversation_id, title)
    if conversation is not None:
        await events.conversation_updated(conversation)
    return conversation


def set_pinned(conversation: Conversation, pinned: bool) -> Conversation:
    """Pin the conversation to the top of the list, or unpin it."""
    conversation.pinned_at = timezone.now() if pinned else None
    Conversation.objects.filter(pk=conversation.pk).update(pinned_at=conversation.pinned_at)
    return conversation


def set_archived(conversation: Conversation, archived: bool) -> Conversation:
    """Move the conversation out of the list (it stays under "Archived"), or back."""
    conversation.archived_at = timezone.now() if archived else None
    Conversation.objects.filter(pk=conversation.pk).update(archived_at=conversation.archived_at)
    return conversation

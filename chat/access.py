"""Who may see what: the one place conversation ownership is checked, for views and sockets."""

from __future__ import annotations

from django.http import Http404

from chat.models import Conversation


def get_conversation_for_user(user, pk) -> Conversation:
    """The user's conversation `pk`; anyone else's, or none, is 404 (never "forbidden")."""
    try:
        return Conversation.objects.for_user(user).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404("No such conversation.") from exc


async def aget_conversation_for_user(user, pk) -> Conversation | None:
    """The async twin of `get_conversation_for_user`, for consumers: None when not theirs."""
    try:
        return await Conversation.objects.for_user(user).aget(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        return None


def conversation_group(conversation_id: int) -> str:
    """The channel group of a conversation; derived here, never named by a client."""
    return f"conversation.{int(conversation_id)}"


def user_group(user_id: int) -> str:
    """The channel group of all of one user's sockets (for ending sessions)."""
    return f"user.{int(user_id)}"

"""Who may see what: the one place conversation ownership is checked, for views and sockets."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from chat.database_threads import database_call
from chat.models import Conversation

# Websocket close codes (docs/websocket-protocol.md).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


def get_conversation_for_user(user, pk) -> Conversation:
    """The user's conversation `pk`; anyone else's, or none, is 404 (never "forbidden")."""
    try:
        return Conversation.objects.for_user(user).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404("No such conversation.") from exc


@database_call
def aget_conversation_for_user(user, pk) -> Conversation | None:
    """The async twin of `get_conversation_for_user`, for consumers: None when not theirs.

    Through `database_call` (Channels' `database_sync_to_async`), not the ORM's `aget`: it
    hands the connection back (to the pool, on PostgreSQL) when done, where `aget` would keep it
    checked out on the shared thread until that thread's next query.
    """
    try:
        return Conversation.objects.for_user(user).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        return None


def session_user(session_key: str | None):
    """The user of session `session_key` as of now (AnonymousUser once it has ended, or when
    the password changed or the user was deactivated since)."""
    if not session_key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return auth.get_user(SimpleNamespace(session=store(session_key=session_key)))


class AccessEnded(Exception):
    """A socket's user or conversation is no longer valid; `code` is the close code to use."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class SocketAccess:
    """What a websocket was opened for: re-checked on every frame, in the same database call
    as that frame's own work, so a logout, deactivation or deleted conversation takes effect
    at the next frame without costing a round trip of its own."""

    session_key: str | None
    user_id: int
    conversation_id: int

    def conversation(self) -> Conversation:
        """The conversation as of now. Raises AccessEnded when it is no longer the user's."""
        user = session_user(self.session_key)
        if not user.is_authenticated or user.pk != self.user_id:
            raise AccessEnded(CLOSE_UNAUTHENTICATED)
        try:
            return get_conversation_for_user(user, self.conversation_id)
        except Http404 as exc:
            raise AccessEnded(CLOSE_NOT_FOUND) from exc


def conversation_group(conversation_id: int) -> str:
    """The channel group of a conversation; derived here, never named by a client."""
    return f"conversation.{int(conversation_id)}"


def user_group(user_id: int) -> str:
    """The channel group of all of one user's sockets (for ending sessions)."""
    return f"user.{int(user_id)}"

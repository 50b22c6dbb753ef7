"""CPU of one send's set-up as a conversation grows: `chat.actions.post_user_message` (access
re-check, character check, both inserts, showing the new branch, its history read through the
message tree, prompt assembly, the two "created" events) at several history lengths, without a
character and with one that has a lorebook. The relay benchmark's conversations are new, so this
is where the cost of a long chat shows. Median of several sends per case; needs a migrated
database: run from bench.run (which sets one up).
"""

from __future__ import annotations

import asyncio
import time

from bench.common import median
from bench.page_bench import store_chat

HISTORY_LENGTHS = (0, 100, 500)


def _character(owner):
    from characters.models import Character, Visibility

    entries = [
        {
            "keys": [f"place{i}", f"person{i}"],
            "content": f"Lore entry {i}: " + "a paragraph of world detail. " * 8,
            "extensions": {},
            "enabled": True,
            "insertion_order": 100,
        }
        for i in range(40)
    ]
    return Character.objects.create(
        name="Bench",
        owner=owner,
        visibility=Visibility.EVERYONE,
        description="A bench character. " * 40,
        personality="Patient, precise. " * 10,
        scenario="A long conversation about relays. " * 10,
        mes_example="<START>\n{{user}}: hi\n{{char}}: hello, {{user}}\n" * 5,
        character_book={"entries": entries, "scan_depth": 4},
    )


def _session(user) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


async def _sends(access, leaf_id: int | None, repeats: int) -> tuple[list[float], int]:
    """CPU of `repeats` sends to the branch ending at `leaf_id`, and the prompt's message count."""
    from asgiref.sync import sync_to_async

    from chat import actions
    from chat.models import Conversation, Message

    @sync_to_async
    def discard(started) -> None:  # not measured: the next send finds the same history
        # The reply goes with its parent; the conversation shows the same branch as before.
        Message.objects.filter(pk=started.user_message.pk).delete()
        Conversation.objects.filter(pk=access.conversation_id).update(current_leaf_id=leaf_id)

    times = []
    prompt_messages = 0
    for i in range(repeats):
        start = time.process_time()  # every thread: the database call runs in another one
        started = await actions.post_user_message(access, f"Question {i} about place3?", "bench")
        times.append(time.process_time() - start)
        prompt_messages = len(started.request.messages)
        await discard(started)
    return times, prompt_messages


def run(repeats: int = 40) -> dict:
    from django.contrib.auth.models import User
    from django.db import connections

    from chat.access import SocketAccess
    from chat.models import Conversation

    user = User.objects.create_user(f"send-bench-{time.time_ns()}")
    session_key = _session(user)
    character = _character(user)
    out: dict = {"repeats": repeats, "cpu_ms_per_send": {}, "prompt_messages": {}}
    for with_character in (False, True):
        for length in HISTORY_LENGTHS:
            conversation = Conversation.objects.create(
                owner=user, character=character if with_character else None, model="bench"
            )
            # A chain, so that each send reads its history through the tree, as in use.
            store_chat(conversation, length)
            connections.close_all()  # the sends' thread opens its own connection
            access = SocketAccess(session_key, user.pk, conversation.pk)
            times, prompt_messages = asyncio.run(
                _sends(access, conversation.current_leaf_id, repeats)
            )
            key = f"{'character' if with_character else 'no character'}, {length} messages"
            # The first sends warm caches.
            out["cpu_ms_per_send"][key] = round(median(times[5:]) * 1000, 2)
            out["prompt_messages"][key] = prompt_messages
    return out

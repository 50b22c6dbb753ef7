"""CPU of one send's set-up as a conversation grows: `chat.actions.post_user_message` (access
re-check, character check, both inserts, history, prompt assembly, the two "created" events) at
several history lengths, without a character and with one that has a lorebook. The relay
benchmark's conversations are new, so this is where the cost of a long chat shows. Median of
several sends per case; needs a migrated database: run from bench.run (which sets one up).
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


async def _sends(access, repeats: int) -> list[float]:
    from asgiref.sync import sync_to_async

    from chat import actions
    from chat.models import Message

    @sync_to_async
    def discard(started) -> None:  # not measured: the next send finds the same history
        Message.objects.filter(pk__in=[started.user_message.pk, started.reply.pk]).delete()

    times = []
    for i in range(repeats):
        start = time.process_time()  # every thread: the database call runs in another one
        started = await actions.post_user_message(access, f"Question {i} about place3?", "bench")
        times.append(time.process_time() - start)
        await discard(started)
    return times


def run(repeats: int = 40) -> dict:
    from django.contrib.auth.models import User
    from django.db import connections

    from chat.access import SocketAccess
    from chat.models import Conversation

    user = User.objects.create_user(f"send-bench-{time.time_ns()}")
    session_key = _session(user)
    character = _character(user)
    out: dict = {"repeats": repeats, "cpu_ms_per_send": {}}
    for with_character in (False, True):
        for length in HISTORY_LENGTHS:
            conversation = Conversation.objects.create(
                owner=user, character=character if with_character else None, model="bench"
            )
            store_chat(conversation, length)
            connections.close_all()  # the sends' thread opens its own connection
            access = SocketAccess(session_key, user.pk, conversation.pk)
            times = asyncio.run(_sends(access, repeats))[5:]  # the first ones warm caches
            key = f"{'character' if with_character else 'no character'}, {length} messages"
            out["cpu_ms_per_send"][key] = round(median(times) * 1000, 2)
    return out

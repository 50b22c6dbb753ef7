"""Server time of the chat page (`chat.views.conversation`) with 500 messages, through the
Django test client (all middleware, the real template), median of several requests, with the
number of queries it runs: once for a plain chain, once with 5 alternatives per reply (the 4
not shown are in the tree the page loads, not on the path it renders). Needs a migrated
database: run from bench.run (which sets one up)."""

from __future__ import annotations

import time

from bench.common import median, reply_text

TARGET_MS = 100
# The cases measured: replies stored per question, all siblings, one shown (1: a plain chain).
CASES = {"chain": 1, "5 alternatives per reply": 5}


def store_chat(conversation, messages: int, alternatives: int = 1) -> None:
    """Store `messages` alternating user questions and 120-token replies, rendered as sent, as
    one branch (each message the parent of the next) and show its end. With `alternatives` > 1
    each reply has that many siblings in all (regenerated replies); the newest is the shown one.
    """
    from chat.models import Conversation, Message
    from serika_web.rendering import render_message

    reply = reply_text(120)
    reply_html = render_message(Message.Role.ASSISTANT, reply)
    parent_id = conversation.current_leaf_id
    # One INSERT per level of the tree: a level's parent needs its id first (bulk_create sets
    # the ids on SQLite 3.35+ and PostgreSQL), and a reply's alternatives share one level.
    for i in range(messages):
        if i % 2 == 0:
            content = f"Question {i}: how does the relay keep up?"
            level = [
                Message(
                    conversation=conversation,
                    parent_id=parent_id,
                    role=Message.Role.USER,
                    content=content,
                    content_html=render_message(Message.Role.USER, content),
                )
            ]
        else:
            level = [
                Message(
                    conversation=conversation,
                    parent_id=parent_id,
                    role=Message.Role.ASSISTANT,
                    content=reply,
                    content_html=reply_html,
                )
                for _ in range(alternatives)
            ]
        parent_id = Message.objects.bulk_create(level)[-1].pk
    conversation.current_leaf_id = parent_id
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf_id=parent_id)


def measure(client, url: str, repeats: int) -> dict:
    """Median and least server time of `repeats` requests of `url`, their median CPU, and the
    queries of one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # not measured: warms the template and connection caches
    assert response.status_code == 200, response.status_code
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        # On a shared machine the wall time also counts other processes' turns; the CPU not.
        cpu.append(time.process_time() - start_cpu)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return {
        "server_ms_median": round(median(times) * 1000, 2),
        "server_ms_min": round(min(times) * 1000, 2),
        "server_cpu_ms_median": round(median(cpu) * 1000, 2),
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
        "shown": response.content.decode().count('class="message '),
        "target_ms": TARGET_MS,
        "met": median(times) * 1000 <= TARGET_MS,
    }


def run(messages: int = 500, repeats: int = 15) -> dict:
    """The chat page of a `messages`-message chat, for each of `CASES`."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.test import Client

    from chat.models import Conversation

    user = User.objects.create_user(f"page-bench-{time.time_ns()}")
    host = settings.ALLOWED_HOSTS[0] if settings.ALLOWED_HOSTS else "127.0.0.1"
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    out: dict = {"messages": messages}
    for name, alternatives in CASES.items():
        conv = Conversation.objects.create(owner=user, title="page bench", model="bench-model")
        store_chat(conv, messages, alternatives)
        out[name] = measure(client, f"/conversations/{conv.pk}/", repeats)
    return out

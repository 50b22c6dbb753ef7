"""Server time of the chat page (`chat.views.conversation`) with 500 messages, through the
Django test client (all middleware, the real template), median of several requests, with the
number of queries it runs. Needs a migrated database: run from bench.run (which sets one up)."""

from __future__ import annotations

import time

from bench.common import median, reply_text


def store_chat(conversation, messages: int) -> None:
    """Store `messages` alternating user questions and 120-token replies, rendered as sent."""
    from chat.events import render_message
    from chat.models import Message

    reply = reply_text(120)
    rows = []
    for i in range(messages):
        role = Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT
        content = f"Question {i}: how does the relay keep up?" if i % 2 == 0 else reply
        rows.append(
            Message(
                conversation=conversation,
                role=role,
                content=content,
                content_html=render_message(role, content),
            )
        )
    Message.objects.bulk_create(rows)


def run(messages: int = 500, repeats: int = 15) -> dict:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from chat.models import Conversation

    user = User.objects.create_user(f"page-bench-{time.time_ns()}")
    conv = Conversation.objects.create(owner=user, title="page bench", model="bench-model")
    store_chat(conv, messages)
    host = settings.ALLOWED_HOSTS[0] if settings.ALLOWED_HOSTS else "127.0.0.1"
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    url = f"/conversations/{conv.pk}/"
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return {
        "messages": messages,
        "server_ms_median": round(median(times) * 1000, 2),
        "server_ms_min": round(min(times) * 1000, 2),
        "queries": len(queries.captured_queries),
        "bytes": len(response.content),
        "target_ms": 100,
        "met": median(times) * 1000 <= 100,
    }

"""Quotas and rate limits across real daphne processes: sends at once on two processes never
reserve more than the quota, and every reply's usage is settled into the day's figures.

Alice sends from tabs on both processes at once.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from chat import actions
from chat.models import Conversation, Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import in_thread, open_socket
from usage.models import DailyUsage, Quota, Reservation

static_root = live.static_root
daphne_servers = live.daphne_servers

pytestmark = [pytest.mark.multiprocess, pytest.mark.django_db(transaction=True)]

REPLY_TOKENS = 10_000


async def first_answer(ws) -> dict:
    """The send's outcome: the reply's `message.created`, or the error frame."""
    return await ws.receive_until(
        lambda f: (
            f["type"] == "error"
            or (f["type"] == "message.created" and f["message"]["role"] == "assistant")
        ),
        timeout=20,
    )


async def test_sends_at_once_on_two_processes_never_reserve_more_than_the_quota(
    daphne_servers, upstream, alice
):
    daphne_servers.env["CHAT_MAX_CONCURRENT_PER_USER"] = "50"
    servers = [daphne_servers.start(), daphne_servers.start()]
    room_for, tries = 3, 10
    # Each reply needs its max_tokens plus a prompt estimate of a few tokens: three fit.
    await Quota.objects.acreate(user=alice, tokens_per_day=room_for * REPLY_TOKENS + 5_000)
    upstream.enqueue(*[Reply(tokens=[f"w{i} " for i in range(20)], gap=0.05)] * room_for)

    def make_chats() -> list[int]:
        chats = [actions.start_conversation(alice, None) for _ in range(tries)]
        Conversation.objects.filter(pk__in=[c.pk for c in chats]).update(max_tokens=REPLY_TOKENS)
        return [chat.pk for chat in chats]

    chats = await in_thread(make_chats)
    sockets = [await open_socket(servers[i % 2], alice, chat_id) for i, chat_id in enumerate(chats)]
    await asyncio.gather(*(ws.send({"type": "message.send", "content": "go"}) for ws in sockets))
    answers = await asyncio.gather(*(first_answer(ws) for ws in sockets))

    started = [a["message"]["id"] for a in answers if a["type"] == "message.created"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(started) == room_for
    assert {a["code"] for a in refused} == {"quota_exceeded"}
    assert len(refused) == tries - room_for
    assert await Message.objects.filter(role="user").acount() == room_for

    # Each reply ends settled: its reservation replaced by what it used, in the day's figures.
    deadline = time.monotonic() + 20
    while await Reservation.objects.filter(settled_at=None).aexists():
        assert time.monotonic() < deadline, "replies still unsettled"
        await asyncio.sleep(0.1)
    replies = [m async for m in Message.objects.filter(pk__in=started)]
    assert {m.status for m in replies} == {"complete"}
    [day] = [row async for row in DailyUsage.objects.filter(user=alice)]
    assert day.requests == room_for
    assert day.prompt_tokens == sum(m.prompt_tokens for m in replies)
    assert day.completion_tokens == sum(m.completion_tokens for m in replies) == 20 * room_for
    for ws in sockets:
        await ws.close()


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="needs REDIS_URL: without Redis each process counts its own attempts",
)
async def test_the_send_rate_limit_is_shared_by_the_processes(daphne_servers, upstream, alice):
    daphne_servers.env["RATE_LIMIT_SENDS"] = "2/minute"
    servers = [daphne_servers.start(), daphne_servers.start()]
    upstream.default = Reply(tokens=["ok"])
    chats = await in_thread(lambda: [actions.start_conversation(alice, None).pk for _ in "abc"])
    tabs = [await open_socket(servers[i % 2], alice, chat) for i, chat in enumerate(chats)]
    for tab in tabs[:2]:  # one on each process
        await tab.send({"type": "message.send", "content": "go"})
        assert (await first_answer(tab))["type"] == "message.created"
    await tabs[2].send({"type": "message.send", "content": "go"})
    error = await first_answer(tabs[2])
    assert error["code"] == "rate_limited"
    assert "at most 2 a minute" in error["message"]
    for tab in tabs:
        await tab.close()

"""SIGTERM (a restart): live replies finish within the grace, later ones keep all their text."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed

from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import in_thread, open_socket, start_reply

static_root = live.static_root
daphne_servers = live.daphne_servers

pytestmark = [pytest.mark.multiprocess, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


async def exit_code(server: live.LiveServer, within: float) -> int:
    """The process's exit status once it has exited; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while server.process.poll() is None:
        if time.monotonic() >= deadline:
            pytest.fail(f"{server.name} still running {within:g} s after SIGTERM")
        await asyncio.sleep(0.05)
    return server.process.returncode


async def streaming_server(servers, upstream, alice, conversation, grace: str, reply: Reply):
    """A server with grace `grace`, a tab on it, and `reply` streaming to it (3 deltas in)."""
    servers.env["SHUTDOWN_GRACE_SECONDS"] = grace
    upstream.enqueue(reply)
    server = servers.start()
    tab = await open_socket(server, alice, conversation.pk)
    reply_id = await start_reply(tab)
    await tab.receive_until(lambda f: f["type"] == "message.delta" and f["seq"] >= 3)
    return server, tab, reply_id


async def test_a_reply_that_ends_within_the_grace_is_stored_complete_and_no_new_one_starts(
    daphne_servers, upstream, conversation, alice
):
    tokens = [f"t{i:02d} " for i in range(30)]
    server, _, reply_id = await streaming_server(
        daphne_servers, upstream, alice, conversation, "15", Reply(tokens=tokens, gap=0.1)
    )  # ~3 s

    server.process.send_signal(signal.SIGTERM)
    # While it drains, the process still takes sockets but starts nothing new.
    messages_before = await in_thread(lambda: Message.objects.count())
    late = await open_socket(server, alice, conversation.pk)
    await late.send({"type": "message.send", "content": "one more"})
    refused = await late.receive_until(lambda f: f["type"] == "error", timeout=10)
    assert refused["code"] == "unavailable"
    assert "restarting" in refused["message"]

    assert await exit_code(server, within=15) == 0
    reply = await in_thread(lambda: Message.objects.get(pk=reply_id))
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "".join(tokens)
    assert upstream.client_disconnects == 0
    assert await in_thread(lambda: Message.objects.count()) == messages_before


async def test_a_reply_still_streaming_after_the_grace_keeps_every_character_it_received(
    daphne_servers, upstream, conversation, alice
):
    tokens = [f"w{i:03d} " for i in range(200)]
    server, tab, reply_id = await streaming_server(
        daphne_servers, upstream, alice, conversation, "1", Reply(tokens=tokens, gap=0.05)
    )  # ~10 s
    shown_at_signal, _ = tab.streamed(reply_id)

    server.process.send_signal(signal.SIGTERM)
    assert await exit_code(server, within=1 + 10 + 5) == 0
    with pytest.raises(ConnectionClosed):  # the socket was closed by the shutdown
        while True:
            await tab.receive(timeout=5)
    shown, _ = tab.streamed(reply_id)

    reply = await in_thread(lambda: Message.objects.get(pk=reply_id))
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.error_code == "interrupted"
    # The tab kept streaming through the grace, and the reply keeps all of it.
    assert len(shown) > len(shown_at_signal)
    assert reply.content.startswith(shown)
    assert "".join(tokens).startswith(reply.content)
    assert reply.content != "".join(tokens)
    assert reply.content_html
    assert reply.generator_channel == ""

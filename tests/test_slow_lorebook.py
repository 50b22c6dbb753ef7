"""A card whose lorebook is slow to match stalls nobody else: on a real daphne process, Alice's
send with 2,000 backtracking regex keys runs beside Bob's streaming reply and his new socket, and
another process's sweep takes neither reply for a dead process's."""

from __future__ import annotations

import asyncio
import time

import pytest

from characters.models import Character, Visibility
from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import in_thread, open_socket

static_root = live.static_root
daphne_servers = live.daphne_servers

pytestmark = [pytest.mark.multiprocess, pytest.mark.django_db(transaction=True)]

# Each search of this key against "aaa…a!" backtracks until its own 50 ms cap: 2,000 entries
# took 100 s per send when only each search was bounded. (The regex module short-cuts the
# textbook ^(a+)+$; the alternation backtracks the same way and it does not.)
CATASTROPHIC_KEY = "/^(a|aa)+$/"
HOSTILE_MESSAGE = "a" * 40 + "!"
# Bob's reply: 40 chunks 0.1 s apart, about 4 s when nothing holds it up.
BOB_TOKENS = [f"b{i:02d} " for i in range(40)]
BOB_REPLY_BOUND = 15.0  # seconds; the stalled process finished it after about 100
DAPHNE_CONNECT_TIMEOUT = 5.0  # daphne drops a websocket whose application has not accepted it
# Longer than daphne's connect timeout: a budget spent on the shared database thread would
# still make Bob's new socket fail, so the test needs both the budget and the thread.
LOREBOOK_BUDGET = 6.0


def slow_lorebook_character(owner) -> Character:
    """Alice's private character (created directly: the import refuses lorebooks this big)."""
    entries = [
        {"keys": [CATASTROPHIC_KEY], "content": f"Lore {i}.", "use_regex": True, "enabled": True}
        for i in range(2000)
    ]
    return Character.objects.create(
        name="Backtracker",
        owner=owner,
        visibility=Visibility.OWNER,
        character_book={"entries": entries},
    )


async def test_a_slow_lorebook_neither_blocks_other_users_sockets_nor_their_replies(
    daphne_servers, upstream, alice, bob, character
):
    daphne_servers.env["CHAT_LOREBOOK_BUDGET_SECONDS"] = str(LOREBOOK_BUDGET)
    daphne_server = daphne_servers.start()
    # A second process on the same database: its sweep marks "streaming" replies whose
    # process stopped marking them (3 heartbeats of 0.5 s) as interrupted. It sweeps from the
    # first connection it serves.
    other_process = daphne_servers.start()
    alices = await in_thread(
        lambda: actions.start_conversation(alice, slow_lorebook_character(alice))
    )
    bobs = await in_thread(lambda: actions.start_conversation(bob, character))
    upstream.enqueue(Reply(tokens=BOB_TOKENS, gap=0.1))  # Bob's; Alice's gets the default

    await (await open_socket(other_process, bob, bobs.pk)).close()
    bob_tab = await open_socket(daphne_server, bob, bobs.pk)
    bob_sent = time.monotonic()
    await bob_tab.send({"type": "message.send", "content": "Tell me a long story"})
    await bob_tab.receive_until(lambda f: f["type"] == "message.delta")

    alice_tab = await open_socket(daphne_server, alice, alices.pk)
    await alice_tab.send({"type": "message.send", "content": HOSTILE_MESSAGE})
    await asyncio.sleep(0.2)  # Alice's send is being served

    # Bob opens a second tab meanwhile: connecting needs the database (session, user).
    async with asyncio.timeout(DAPHNE_CONNECT_TIMEOUT):
        bob_second_tab = await open_socket(daphne_server, bob, bobs.pk)
    await bob_second_tab.send({"type": "sync", "after": 0})
    await bob_second_tab.receive_until(lambda f: f["type"] == "conversation.sync")

    bob_done = await bob_tab.receive_until(
        lambda f: f["type"] == "message.done", timeout=BOB_REPLY_BOUND
    )
    assert time.monotonic() - bob_sent < BOB_REPLY_BOUND
    assert bob_done["message"]["status"] == "complete"
    assert bob_done["message"]["content"] == "".join(BOB_TOKENS)

    alice_done = await alice_tab.receive_until(
        lambda f: f["type"] == "message.done", timeout=LOREBOOK_BUDGET + 10
    )
    assert alice_done["message"]["status"] == "complete"
    assert alice_done["message"]["prompt_note"].startswith("The lorebook was only partly scanned")
    stored = await in_thread(lambda: Message.objects.get(pk=alice_done["message"]["id"]))
    assert stored.prompt_note == alice_done["message"]["prompt_note"]
    alice_request = next(
        r for r in upstream.requests if r.json["messages"][-1]["content"] == HOSTILE_MESSAGE
    )
    assert "Lore 1999." not in alice_request.json["messages"][0]["content"]
    for tab in (bob_tab, bob_second_tab, alice_tab):
        await tab.close()

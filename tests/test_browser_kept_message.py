"""The message box keeps what was typed until the server says it was stored."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.sessions.models import Session

from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_refused_or_unsent_message_stays_in_the_box(daphne_server, upstream, character, browser):
    from playwright.sync_api import expect

    alice = get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    conversation = actions.start_conversation(alice, character)
    upstream.enqueue(Reply(tokens=["Fine, ", "thanks."]))
    page = browser.page
    live.log_in(page, daphne_server.url, "alice", "alice-password")
    page.goto(f"{daphne_server.url}/conversations/{conversation.pk}/")
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    message_box = page.get_by_role("textbox", name="Message")

    # Confirmed by the server: only then is the box emptied.
    message_box.fill("How are you?")
    message_box.press("Enter")
    expect(message_box).to_have_value("")
    expect(page.get_by_role("log", name="Transcript")).to_contain_text("Fine, thanks.")

    # The character was made private since: the send is refused and the text stays.
    character.visibility = "owner"
    character.owner = get_user_model().objects.create_user("carol", password="carol-password")
    character.save()
    message_box.fill("Are you still there?")
    message_box.press("Enter")
    expect(page.get_by_text("This character is no longer available.")).to_be_visible()
    expect(message_box).to_have_value("Are you still there?")
    assert not Message.objects.filter(content="Are you still there?").exists()

    # The session ended: the socket closes and the text stays.
    Session.objects.all().delete()
    message_box.fill("Hello?")
    message_box.press("Enter")
    expect(page.get_by_text("You have been logged out.", exact=False)).to_be_visible()
    expect(message_box).to_have_value("Hello?")
    assert not Message.objects.filter(content="Hello?").exists()
    assert browser.problems == []


@pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="the test process reaches the server's sockets only through Redis (services pass)",
)
def test_a_tab_keeps_the_longer_text_when_a_sweep_marks_the_reply_interrupted(
    daphne_server, upstream, character, browser
):
    from channels.layers import get_channel_layer
    from playwright.sync_api import expect

    from chat import events
    from chat.access import conversation_group

    alice = get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    conversation = actions.start_conversation(alice, character)
    upstream.enqueue(Reply(tokens=[f"w{i} " for i in range(120)], gap=0.05))  # 6 s
    page = browser.page
    live.log_in(page, daphne_server.url, "alice", "alice-password")
    page.goto(f"{daphne_server.url}/conversations/{conversation.pk}/")
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    page.get_by_role("textbox", name="Message").fill("Count")
    page.get_by_role("textbox", name="Message").press("Enter")
    streaming = page.locator(".message.assistant.status-streaming")
    expect(streaming).to_contain_text("w20 ")

    # What another process's sweep would store and announce about this reply: the text of an
    # older flush, marked interrupted.
    reply = Message.objects.get(conversation=conversation, status="streaming")
    reply.status, reply.content = "interrupted", "w0 w1 "
    reply.error = "The server stopped while this reply was being written."
    event = {"type": "message.done", "message": events.message_payload(reply), "seq": None}
    send = get_channel_layer().group_send(conversation_group(conversation.pk), event)
    # In a thread of its own: Playwright's event loop runs in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, send).result(timeout=10)
    interrupted = page.locator('.message.assistant[data-status="interrupted"]')
    expect(interrupted).to_contain_text("w20 ")  # the longer text stays
    # The generation goes on and stores everything: the final text replaces it.
    final = page.locator(f'.message[data-id="{reply.pk}"][data-status="complete"]')
    expect(final).to_contain_text("w119", timeout=15_000)
    assert browser.problems == []

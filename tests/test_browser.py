"""A person's chat in headless Chromium against a real daphne server: log in, chat, stop."""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.models import Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import ARTIFACTS

# The live-server fixtures, registered in this module.
static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def latest_reply(username: str) -> Message:
    return (
        Message.objects.filter(conversation__owner__username=username, role="assistant")
        .order_by("-pk")
        .first()
    )


def wait_for_reply_status(username: str, status: str, timeout: float = 10.0) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        reply = latest_reply(username)
        if reply is not None and reply.status == status:
            return reply
        if time.monotonic() >= deadline:
            state = None if reply is None else (reply.status, reply.content[:80])
            pytest.fail(f"the latest reply is {state}, not {status!r}, after {timeout:g} s")
        time.sleep(0.1)


def test_a_member_logs_in_chats_watches_a_reply_stream_and_stops_the_next_ones(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    # Hashed as the server hashes (the test settings hash with MD5, which it does not accept).
    get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    story = ["Once ", "upon ", "a ", "time, ", "a ", "**bold** ", "fox ", "ran ", "home."]
    slow = Reply(tokens=["tick "], repeat=300, gap=0.05)  # 15 s unless stopped
    upstream.enqueue(Reply(tokens=story, gap=0.3), slow, slow)
    page = browser.page

    # Log in through the login page, then start a chat from the character's card.
    page.goto(f"{daphne_server.url}/")
    expect(page).to_have_url(f"{daphne_server.url}/login/?next=/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.get_by_role("heading", name="Serika", exact=True)).to_be_visible()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")

    log = page.get_by_role("log", name="Transcript")
    message_box = page.get_by_role("textbox", name="Message")
    stop = page.get_by_role("button", name="Stop")
    expect(log).to_contain_text("Hello alice, I am Serika!")

    # A reply streams in: partial text first, then the final render with markdown.
    message_box.fill("Tell me a story")
    message_box.press("Enter")
    expect(message_box).to_have_value("")
    expect(log.locator(".message.user .body").last).to_have_text("Tell me a story")
    streaming = log.locator(".message.assistant.status-streaming")
    expect(streaming).to_contain_text("Once upon")
    partial = streaming.inner_text()  # still streaming: the element has that class
    assert "Once upon" in partial
    assert "home." not in partial
    expect(stop).to_be_visible()
    reply = log.locator(".message.assistant").last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply).to_contain_text("Once upon a time, a bold fox ran home.")
    expect(reply).not_to_contain_text("**")
    expect(stop).to_be_hidden()
    assert wait_for_reply_status("alice", "complete").content == "".join(story)

    # A long reply, stopped with the Stop button.
    message_box.fill("Count for me")
    message_box.press("Enter")
    expect(streaming).to_contain_text("tick tick")
    stop.click()
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply).to_contain_text("Stopped.")
    expect(stop).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    stopped = wait_for_reply_status("alice", "stopped")
    assert stopped.content.startswith("tick tick")
    assert len(stopped.content) < len("tick ") * 300

    # Another, stopped with Esc.
    message_box.fill("Count again")
    message_box.press("Enter")
    expect(streaming).to_contain_text("tick tick")
    page.keyboard.press("Escape")
    expect(log.get_by_text("Stopped.", exact=True)).to_have_count(2)
    expect(reply).to_have_attribute("data-status", "stopped")
    stopped_again = wait_for_reply_status("alice", "stopped")
    assert stopped_again.pk != stopped.pk
    assert stopped_again.content.startswith("tick")

    if os.environ.get("SERIKA_SCREENSHOT"):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)
    assert browser.problems == []

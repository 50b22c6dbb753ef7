"""The message box keeps what was typed until the server says it was stored."""

from __future__ import annotations

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


def log_in(page, server, username: str, password: str) -> None:
    page.goto(f"{server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_a_refused_or_unsent_message_stays_in_the_box(daphne_server, upstream, character, browser):
    from playwright.sync_api import expect

    alice = get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    conversation = actions.start_conversation(alice, character)
    upstream.enqueue(Reply(tokens=["Fine, ", "thanks."]))
    page = browser.page
    log_in(page, daphne_server, "alice", "alice-password")
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

"""The chat view's client-side parts in a real browser: copying code blocks."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests import live
from tests.fake_upstream import Reply

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_copy_code_puts_the_code_block_text_on_the_clipboard(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    upstream.enqueue(Reply(tokens=["Here:\n\n```python\n", "print('hi')\n", "```\n"]))
    page = browser.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=daphne_server.url)
    page.goto(f"{daphne_server.url}/login/?next=/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")

    message_box = page.get_by_role("textbox", name="Message")
    message_box.fill("Show me code")
    message_box.press("Enter")
    reply = page.locator(".message.assistant").last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".code-lang")).to_have_text("python")
    reply.get_by_role("button", name="Copy code").click()
    expect(reply.get_by_role("button", name="Copy code")).to_have_attribute("data-copied", "true")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')\n"

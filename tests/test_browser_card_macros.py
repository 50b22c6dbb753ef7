"""In headless Chromium: a member sees one card text the same way on the home page, on the
character's page and as the greeting of a new chat (the one macro expander, issue 10)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from characters.models import Character
from tests import live

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TEXT = "Hi {{user}}, I am <CHAR>. {{// note}}<USER> meets <BOT>."
EXPECTED = "Hi mel, I am Mira. mel meets Mira."


def test_home_page_character_page_and_greeting_show_the_same_expanded_text(daphne_server, browser):
    from playwright.sync_api import expect

    page = browser.page
    get_user_model().objects.create(
        username="mel", password=PBKDF2PasswordHasher().encode("mel-password", "melsalt123456789")
    )
    mira = Character.objects.create(name="Mira", description=TEXT, first_mes=TEXT)
    url = daphne_server.url

    live.log_in(page, url, "mel", "mel-password")
    expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()

    card = page.locator(".character-card", has_text="Mira")
    expect(card.locator(".description")).to_have_text(EXPECTED)

    page.goto(f"{url}/characters/{mira.pk}/")
    description = page.get_by_role("region", name="Description")
    expect(description).to_contain_text(EXPECTED)
    expect(page.get_by_role("region", name="Greetings")).to_contain_text(EXPECTED)

    page.goto(f"{url}/")
    page.get_by_role("button", name="Chat with Mira").click()
    log = page.get_by_role("log", name="Transcript")
    expect(log).to_contain_text(EXPECTED)
    assert "{{" not in log.inner_text() and "<CHAR>" not in log.inner_text()
    assert browser.problems == []

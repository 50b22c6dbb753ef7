"""In headless Chromium against a real daphne server: a staff member uploads a PNG card in the
admin, finds the character in the library, starts a chat, sees its greeting and a streamed reply."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from characters.models import Character
from tests import live
from tests.card_corpus import card_png, v2_card
from tests.fake_upstream import Reply
from tests.live import ARTIFACTS

# The live-server fixtures, registered in this module.
static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_staff_upload_a_png_card_in_the_admin_and_chat_with_it_from_the_library(
    daphne_server, upstream, browser
):
    from playwright.sync_api import expect

    page = browser.page

    # Hashed as the server hashes (the test settings hash with MD5, which it does not accept).
    get_user_model().objects.create(
        username="sam",
        is_staff=True,
        is_superuser=True,
        password=PBKDF2PasswordHasher().encode("sam-password", "samsalt123456789"),
    )
    upstream.enqueue(Reply(tokens=["Shh... ", "the ", "books ", "are ", "sleeping."], gap=0.2))
    url = daphne_server.url

    live.log_in(page, url, "sam", "sam-password")
    expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()

    # The admin's import page: one PNG card with its chara chunk.
    page.goto(f"{url}/admin/characters/character/import/")
    page.get_by_label("Card files").set_input_files(
        files=[{"name": "aiko.png", "mimeType": "image/png", "buffer": card_png(chara=v2_card())}]
    )
    page.get_by_role("button", name="Import").click()
    expect(page.locator(".import-results")).to_contain_text("imported as Aiko")
    aiko = Character.objects.get(name="Aiko")
    assert aiko.avatar and aiko.visibility == "everyone"

    # The library (linked from the top bar) shows it, with its avatar and tags.
    page.goto(f"{url}/")
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Characters").click()
    card = page.locator(".character-card", has_text="Aiko")
    thumbnail = f"/characters/{aiko.pk}/avatar-thumbnail.webp"
    expect(card.locator("img.avatar")).to_have_attribute("src", thumbnail)
    expect(card).to_contain_text("library")
    assert card.locator("img.avatar").evaluate("img => img.naturalWidth") > 0
    if os.environ.get("SERIKA_SCREENSHOT"):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "library.png"), full_page=True)

    # Its page, then "Start chat": the greeting opens the chat, and a reply streams in.
    card.get_by_role("link", name="Aiko").click()
    expect(page.get_by_role("heading", name="Greetings")).to_be_visible()
    page.get_by_role("button", name="Start chat").click()

    expect(page.get_by_role("heading", name="Aiko", exact=True)).to_be_visible()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    log = page.get_by_role("log", name="Transcript")
    expect(log).to_contain_text("Oh! You startled me, sam.")

    box = page.get_by_role("textbox", name="Message")
    box.fill("What is this place?")
    box.press("Enter")
    streaming = log.locator(".message.assistant.status-streaming")
    expect(streaming).to_contain_text("Shh...")
    reply = log.locator(".message.assistant").last
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply).to_contain_text("Shh... the books are sleeping.")
    request = upstream.wait_for_requests(1)[-1]
    sent = [(m["role"], m["content"]) for m in request.json["messages"]]
    assert ("user", "What is this place?") in sent
    assert any("Aiko is a cheerful librarian." in content for _, content in sent)
    assert browser.problems == []

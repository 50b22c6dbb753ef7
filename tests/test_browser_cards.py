"""In headless Chromium against a real daphne server: a staff member uploads a PNG card in the
admin, finds the character in the library, starts a chat, sees its greeting and a streamed reply."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections

from characters.models import Character
from tests import live
from tests.card_corpus import card_png, v2_card
from tests.fake_upstream import Reply
from tests.live import ARTIFACTS

# The live-server fixtures, registered in this module.
static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT_MS = 15_000
# The pages declare no icon; Chromium's request for /favicon.ico and its 404 are not a problem.
FAVICON = "/favicon.ico"


@pytest.fixture
def page(request: pytest.FixtureRequest, monkeypatch, daphne_server) -> Iterator:
    """A Chromium page; console errors and uncaught exceptions are collected in `page.problems`.
    Depends on the server so that the failure screenshot is taken before the server stops."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which Django takes for an async
    # context; the test's ORM calls are plain sync code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        tab.problems = []

        def on_console(message) -> None:
            if message.type == "error" and not message.location.get("url", "").endswith(FAVICON):
                tab.problems.append(f"console: {message.text} ({message.location})")

        tab.on("console", on_console)
        tab.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        failed_before = request.session.testsfailed
        try:
            yield tab
        finally:
            if request.session.testsfailed > failed_before:
                ARTIFACTS.mkdir(exist_ok=True)
                path = ARTIFACTS / f"{request.node.name}.png"
                tab.screenshot(path=str(path), full_page=True)
                print(f"screenshot: {path}")
            context.close()
            chromium.close()
            # Playwright's running loop gives this thread its own connection, which
            # pytest-django never closes; an open one keeps PostgreSQL from dropping the database.
            connections.close_all()


def test_staff_upload_a_png_card_in_the_admin_and_chat_with_it_from_the_library(
    daphne_server, upstream, page
):
    from playwright.sync_api import expect

    # Hashed as the server hashes (the test settings hash with MD5, which it does not accept).
    get_user_model().objects.create(
        username="sam",
        is_staff=True,
        is_superuser=True,
        password=PBKDF2PasswordHasher().encode("sam-password", "samsalt123456789"),
    )
    upstream.enqueue(Reply(tokens=["Shh... ", "the ", "books ", "are ", "sleeping."], gap=0.2))
    url = daphne_server.url

    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill("sam")
    page.get_by_label("Password").fill("sam-password")
    page.get_by_role("button", name="Log in").click()
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
    expect(card.locator("img.avatar")).to_have_attribute("src", f"/characters/{aiko.pk}/avatar.png")
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
    assert page.problems == []

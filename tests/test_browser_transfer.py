"""Export and import through the pages in a real browser, served by daphne (so downloads take
the ASGI streaming path): a chat exported from its "More" menu, every conversation from the
list, and a SillyTavern file imported in two steps, opened at its shown branch with its swipes
as alternatives. The file is tests/fixtures/chats/sillytavern/handmade-swipes.jsonl (where it
came from: tests/test_chat_formats.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat import actions
from chat.formats import read_ours
from tests import live
from tests.conftest import store_chain
from tests.test_browser_chat_view import make_alice

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SILLYTAVERN_FILE = (
    Path(__file__).parent / "fixtures" / "chats" / "sillytavern" / "handmade-swipes.jsonl"
)


def test_alice_exports_chats_and_imports_a_sillytavern_file_through_the_pages(
    daphne_server, character, browser
):
    from playwright.sync_api import expect

    alice = make_alice()
    conversation = actions.start_conversation(alice, character)
    store_chain(
        conversation,
        {"role": "user", "content": "Tell me about the lighthouse."},
        {"role": "assistant", "content": "It is old.", "content_html": "<p>It is old.</p>"},
    )
    url = daphne_server.url
    page = browser.page
    live.log_in(page, url, "alice", "alice-password")

    # One chat, from its "More" menu, as SillyTavern JSONL.
    page.goto(f"{url}/conversations/{conversation.pk}/")
    page.get_by_text("More", exact=True).click()
    page.get_by_label("Export as").select_option(label="SillyTavern JSONL")
    with page.expect_download() as started:
        page.get_by_role("button", name="Export", exact=True).click()
    download = started.value
    assert download.suggested_filename == "serika.jsonl"
    lines = [json.loads(line) for line in Path(download.path()).read_text().splitlines()]
    assert lines[0]["character_name"] == "Serika"
    assert [line["mes"] for line in lines[1:]] == [
        "Hello alice, I am Serika!",
        "Tell me about the lighthouse.",
        "It is old.",
    ]

    # Everything, from the list of conversations.
    page.goto(f"{url}/conversations/")
    main = page.get_by_role("main")
    main.get_by_label("Export all conversations as").select_option(label="Serika Web JSON")
    with page.expect_download() as started:
        main.get_by_role("button", name="Export", exact=True).click()
    chats = read_ours(Path(started.value.path()).read_bytes())
    assert [len(chat.messages) for chat in chats] == [3]

    # A SillyTavern chat with Iris, whom Alice has no character for: she picks Serika.
    main.get_by_role("link", name="Import chats").click()
    expect(page.get_by_role("heading", name="Import chats")).to_be_visible()
    page.get_by_label("Chat file").set_input_files(SILLYTAVERN_FILE)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_role("heading", name="Choose characters")).to_be_visible()
    page.get_by_label("Character for the chats with Iris").select_option(label="Serika")
    page.get_by_role("button", name="Import", exact=True).click()

    # The imported chat opens at its shown branch, swipes as alternatives.
    expect(page.get_by_role("status")).to_contain_text("Imported “Serika” from a SillyTavern file.")
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    transcript = page.locator(".transcript > .message")
    expect(transcript).to_have_count(8)  # the file's nine lines less its hidden comment
    expect(transcript.nth(0)).to_contain_text("Hi there.")
    expect(transcript.nth(0).locator(".counter")).to_have_text("2 / 2")
    expect(transcript.nth(2).locator(".counter")).to_have_text("3 / 3")
    expect(transcript.nth(5).locator(".counter")).to_have_text("1 / 3")
    transcript.nth(0).get_by_role("button", name="Previous alternative").click()
    expect(transcript.first).to_contain_text("Hello.")
    expect(transcript.first.locator(".counter")).to_have_text("1 / 2")
    sidebar = page.get_by_role("complementary", name="Conversations")
    expect(sidebar.get_by_role("link", name="Serika")).to_have_count(2)
    assert not browser.problems, browser.problems

"""Search in a real browser: the member types into "Search conversations", sees the match
highlighted, and opens it: the chat shows the hit's branch (stored, so other tabs follow), with
the message marked and scrolled into view."""

from __future__ import annotations

import time

import pytest

from chat.models import Conversation, Message
from tests import live
from tests.conftest import store_chain
from tests.test_browser_chat_view import make_alice

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def filler(count: int, start: int = 0) -> list[dict]:
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"Small talk number {i}.\n\n" + "More words to fill the screen. " * 8,
        }
        for i in range(start, start + count)
    ]


def birds(alice) -> tuple[Conversation, Message, Message]:
    """A long chat where a question has two replies: the herons' branch (the hit, with much
    after it) is not the one shown; the kingfishers' is."""
    conversation = Conversation.objects.create(owner=alice, title="Birds", model="test-model")
    *_, question = store_chain(
        conversation, *filler(20), {"role": "user", "content": "Who fishes?"}
    )
    heron, *rest = store_chain(
        conversation,
        {"role": "assistant", "content": "Herons <stand> still in the shallows."},
        *filler(20, start=100),
    )
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=question)
    conversation.refresh_from_db()
    store_chain(conversation, {"role": "assistant", "content": "Kingfishers dive."})
    return conversation, heron, rest[-1]


def test_searching_shows_the_highlighted_hit_and_opening_it_shows_its_branch_at_the_message(
    daphne_server, browser
):
    from playwright.sync_api import expect

    alice = make_alice()
    conversation, heron, heron_leaf = birds(alice)
    page = browser.page
    live.log_in(page, daphne_server.url, "alice", "alice-password")

    box = page.get_by_role("searchbox", name="Search conversations")
    box.fill("heron")
    box.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Results for “heron”")
    hit = page.get_by_role("main").get_by_role("link").filter(has_text="Herons")
    expect(hit).to_have_count(1)
    # The match is highlighted, and the message's "<stand>" is text, not markup.
    expect(hit.locator("mark")).to_have_text("Herons")
    expect(hit.locator(".snippet")).to_have_text("Herons <stand> still in the shallows.")
    expect(page.get_by_role("searchbox", name="Search conversations")).to_have_value("heron")

    hit.click()
    found = page.locator(f'.message[data-id="{heron.pk}"]')
    expect(found).to_have_attribute("data-found", "")
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    # The herons' branch is shown (not the kingfishers'), and stays after the socket's sync.
    expect(page.locator(".message").filter(has_text="Kingfishers dive.")).to_have_count(0)
    expect(page.locator(".transcript > .message").last).to_contain_text("Small talk number 119.")
    expect(page.locator(".message").filter(has_text="Herons")).to_have_count(1)
    deadline = time.monotonic() + 10
    while Conversation.objects.get(pk=conversation.pk).current_leaf_id != heron_leaf.pk:
        assert time.monotonic() < deadline, "the page did not store the hit's branch"
        time.sleep(0.1)
    expect(found).to_have_attribute("data-found", "")
    expect(found).to_be_in_viewport()
    # Its alternatives are there to go back to the other branch.
    expect(found.get_by_text("1 / 2")).to_be_visible()
    assert browser.problems == []

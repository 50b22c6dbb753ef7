"""The conversation list in a real browser: a title written live, rename in place, pin,
archive, and delete with a confirmation."""

from __future__ import annotations

import pytest

from chat.models import Conversation
from tests import live
from tests.fake_upstream import Reply
from tests.test_browser_chat_view import make_alice
from tests.test_browser_message_tree import ask, open_chat

static_root = live.static_root
daphne_servers = live.daphne_servers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def titled_server(daphne_servers):
    """A server that writes titles (the test settings turn them off)."""
    daphne_servers.env["SERIKA_AUTO_TITLES"] = "true"
    return daphne_servers.start()


@pytest.fixture
def page(request, monkeypatch, titled_server):
    with live.chromium_page(request, monkeypatch) as browser_page:
        yield browser_page


def test_a_title_arrives_live_and_the_member_renames_pins_archives_and_deletes(
    titled_server, upstream, character, page
):
    from playwright.sync_api import expect

    make_alice()
    tab = page.page
    open_chat(tab, titled_server.url)
    heading = tab.get_by_role("heading", level=1)
    expect(heading).to_have_text("Serika")
    upstream.enqueue(Reply(tokens=["Kyoto in spring is lovely."]), Reply(tokens=["Kyoto trip"]))
    ask(tab, "Plan a trip to Kyoto")
    # The title is written after the reply and shown without a reload, in the list too.
    expect(heading).to_have_text("Kyoto trip")
    sidebar = tab.get_by_role("complementary", name="Conversations")
    expect(sidebar.get_by_role("link", name="Kyoto trip")).to_be_visible()
    expect(tab).to_have_title("Kyoto trip · Serika Web")

    # Rename in place: Esc cancels, Enter saves.
    heading.get_by_role("button").click()
    box = tab.get_by_role("textbox", name="Conversation title")
    box.fill("Never mind")
    box.press("Escape")
    expect(heading).to_have_text("Kyoto trip")
    heading.get_by_role("button").click()
    box.fill("Spring in Kyoto")
    box.press("Enter")
    expect(heading).to_have_text("Spring in Kyoto")
    expect(sidebar.get_by_role("link", name="Spring in Kyoto")).to_be_visible()
    assert Conversation.objects.get().title_source == "member"

    # Pin: on top of the list, under "Pinned".
    tab.get_by_text("More", exact=True).click()
    tab.get_by_role("button", name="Pin", exact=True).click()
    expect(sidebar.get_by_role("heading", name="Pinned")).to_be_visible()
    # Archive: out of the list, found again under "Archived".
    tab.get_by_text("More", exact=True).click()
    tab.get_by_role("button", name="Archive", exact=True).click()
    expect(tab.get_by_role("heading", name="Start a chat")).to_be_visible()
    expect(sidebar.get_by_role("link", name="Spring in Kyoto")).to_have_count(0)
    sidebar.get_by_role("link", name="Archived").click()
    tab.get_by_role("main").get_by_role("link", name="Spring in Kyoto").click()
    expect(heading).to_have_text("Spring in Kyoto")

    # Delete asks first: Cancel keeps it, Delete removes it.
    tab.get_by_text("More", exact=True).click()
    tab.get_by_role("button", name="Delete chat").click()
    dialog = tab.get_by_role("dialog", name="Delete this conversation?")
    dialog.get_by_role("button", name="Cancel").click()
    assert Conversation.objects.count() == 1
    tab.get_by_text("More", exact=True).click()
    tab.get_by_role("button", name="Delete chat").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(tab.get_by_role("heading", name="Start a chat")).to_be_visible()
    assert Conversation.objects.count() == 0
    assert page.problems == []

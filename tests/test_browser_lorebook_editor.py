"""In headless Chromium against a real daphne server: a member edits her own character with the
card editors (issue 14): a tag chip added and one removed, a greeting added, and in the lorebook
an entry added at a depth, moved up, and another removed; the database and the page agree."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from characters.import_export import import_card_file
from characters.lorebook_editor import NEW_ENTRY
from characters.models import Character, Visibility
from tests import live
from tests.card_corpus import lorebook_entry, to_json_bytes, v2_card

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def harbor_card() -> dict:
    """Aiko with a third lorebook entry: Archive, Mochi (the cat), Harbor."""
    card = v2_card()
    entries = card["data"]["character_book"]["entries"]
    entries[1]["name"] = "Mochi"
    entries.append(
        lorebook_entry(keys=["harbor"], content="Ships come at dawn.", name="Harbor", id=3)
    )
    return card


def test_a_member_edits_tags_greetings_and_the_lorebook_of_her_character(daphne_server, browser):
    from playwright.sync_api import expect

    page = browser.page
    mel = get_user_model().objects.create(
        username="mel", password=PBKDF2PasswordHasher().encode("mel-password", "melsalt123456789")
    )
    aiko, _ = import_card_file(
        to_json_bytes(harbor_card()), "aiko.json", mel, visibility=Visibility.OWNER
    )
    archive, cat, harbor = aiko.character_book["entries"]
    url = daphne_server.url

    live.log_in(page, url, "mel", "mel-password")
    expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()
    page.goto(f"{url}/characters/{aiko.pk}/edit/")

    # Tags: "female" removed by its chip's button, "cozy" typed and added with Enter.
    page.get_by_role("button", name="Remove tag female", exact=True).click()
    page.get_by_role("textbox", name="Add tag", exact=True).fill("cozy")
    page.get_by_role("textbox", name="Add tag", exact=True).press("Enter")
    expect(page.get_by_role("button", name="Remove tag cozy", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Remove tag female", exact=True)).to_have_count(0)

    # Greetings: a third one.
    page.get_by_role("button", name="Add greeting", exact=True).click()
    third = page.get_by_role("textbox", name="Alternate greeting 3", exact=True)
    expect(third).to_be_focused()
    third.fill("Hello again!")

    # The lorebook: three entries, no "Remove" boxes once the script runs, no blank entry.
    expect(page.get_by_role("group", name="Entry 3: Harbor", exact=True)).to_be_visible()
    expect(page.get_by_role("checkbox", name="Remove", exact=True)).to_have_count(0)
    expect(page.get_by_role("group", name="New entry", exact=True)).to_have_count(0)

    page.get_by_role("button", name="Add entry", exact=True).click()
    added = page.get_by_role("group", name="Entry 4", exact=True)
    expect(added.get_by_role("textbox", name="Keys", exact=True)).to_be_focused()
    added.get_by_role("textbox", name="Keys", exact=True).fill("tower, spire")
    added.get_by_role("textbox", name="Content", exact=True).fill("A tall tower.")
    expect(added.get_by_role("spinbutton", name="Depth", exact=True)).to_be_hidden()
    added.get_by_role("combobox", name="Position", exact=True).select_option(label="At depth")
    added.get_by_role("spinbutton", name="Depth", exact=True).fill("2")
    added.get_by_role("button", name="Move up", exact=True).click()

    moved = page.get_by_role("group", name="Entry 3", exact=True)
    expect(moved.get_by_role("textbox", name="Keys", exact=True)).to_have_value("tower, spire")
    expect(moved.get_by_role("button", name="Move up", exact=True)).to_be_focused()
    expect(page.get_by_role("group", name="Entry 4: Harbor", exact=True)).to_be_visible()

    first = page.get_by_role("group", name="Entry 1: Archive", exact=True)
    first.get_by_role("button", name="Remove entry", exact=True).click()
    expect(page.get_by_role("group", name="Entry 1: Archive", exact=True)).to_have_count(0)
    expect(page.get_by_role("group", name="Entry 1: Mochi", exact=True)).to_be_visible()
    expect(page.get_by_role("group", name="Entry 3: Harbor", exact=True)).to_be_visible()
    # The first entry cannot move further up, the last not further down.
    expect(
        page.get_by_role("group", name="Entry 1").get_by_role("button", name="Move up")
    ).to_be_disabled()

    page.get_by_role("button", name="Save", exact=True).click()

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    stored = Character.objects.get(pk=aiko.pk)
    assert stored.tags == ["library", "cozy"]
    assert stored.alternate_greetings == [
        "Welcome back!",
        "Shh, this is a library.",
        "Hello again!",
    ]
    new_entry = {
        **NEW_ENTRY,
        "keys": ["tower", "spire"],
        "content": "A tall tower.",
        "position": "after_char",
        "extensions": {"position": 4, "depth": 2},
    }
    assert stored.character_book["entries"] == [cat, new_entry, harbor]
    assert archive not in stored.character_book["entries"]

    # The editor shows what was saved.
    page.goto(f"{url}/characters/{aiko.pk}/edit/")
    entry = page.get_by_role("group", name="Entry 2", exact=True)
    expect(entry.get_by_role("textbox", name="Keys", exact=True)).to_have_value("tower, spire")
    expect(entry.get_by_role("combobox", name="Position", exact=True)).to_have_value("at_depth")
    expect(entry.get_by_role("spinbutton", name="Depth", exact=True)).to_have_value("2")
    assert browser.problems == []

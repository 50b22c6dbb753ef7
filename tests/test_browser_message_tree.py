"""The message tree in a real browser: regenerate and alternatives, edit and branch, continue,
delete, the Up arrow, and what each reply says about itself (model, tokens, time)."""

from __future__ import annotations

import re

import pytest

from chat.models import Conversation, Message
from tests import live
from tests.fake_upstream import Reply
from tests.test_browser_chat_view import make_alice

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def open_chat(page, url: str):
    from playwright.sync_api import expect

    live.log_in(page, url, "alice", "alice-password")
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")


def ask(page, text: str):
    """Send `text` from the message box; the reply's element once it is complete."""
    from playwright.sync_api import expect

    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".message.user").last).to_contain_text(text)
    reply = page.locator(".transcript > .message").last
    expect(reply).to_have_attribute("data-status", re.compile("complete|stopped|failed"))
    return reply


def shown(page) -> list[str]:
    """The text of every message shown, top to bottom."""
    return [text.strip() for text in page.locator(".message .body").all_inner_texts()]


def test_regenerate_then_browse_the_alternatives(daphne_server, upstream, character, browser):
    from playwright.sync_api import expect

    make_alice()
    page = browser.page
    open_chat(page, daphne_server.url)
    upstream.enqueue(Reply(tokens=["First ", "answer"]))
    reply = ask(page, "Hello there")
    expect(reply.locator(".body")).to_have_text("First answer")
    # A reply says which model wrote it, how many tokens and when.
    expect(reply.locator(".meta")).to_contain_text("openai/gpt-4o-mini")
    expect(reply.locator(".meta")).to_contain_text("2 tokens")
    expect(reply.locator(".meta time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))

    for answer in ["Second answer", "Third answer"]:
        upstream.enqueue(Reply(tokens=[answer]))
        page.locator(".transcript > .message").last.get_by_role("button", name="Regenerate").click()
        latest = page.locator(".transcript > .message").last
        expect(latest.locator(".body")).to_have_text(answer)
        expect(latest).to_have_attribute("data-status", "complete")
    latest = page.locator(".transcript > .message").last
    expect(latest.locator(".counter")).to_have_text("3 / 3")
    expect(latest.get_by_role("button", name="Next alternative")).to_be_disabled()

    latest.get_by_role("button", name="Previous alternative").click()
    latest = page.locator(".transcript > .message").last
    expect(latest.locator(".body")).to_have_text("Second answer")
    expect(latest.locator(".counter")).to_have_text("2 / 3")
    latest.get_by_role("button", name="Previous alternative").click()
    latest = page.locator(".transcript > .message").last
    expect(latest.locator(".body")).to_have_text("First answer")
    expect(latest.get_by_role("button", name="Previous alternative")).to_be_disabled()
    # The choice is the conversation's: a reload (or another tab) shows the same.
    page.reload()
    expect(page.locator(".transcript > .message").last.locator(".counter")).to_have_text("1 / 3")
    assert shown(page) == ["Hello alice, I am Serika!", "Hello there", "First answer"]

    # The next question follows the alternative shown, and only it reaches the upstream.
    upstream.enqueue(Reply(tokens=["Sure"]))
    ask(page, "Go on")
    assert upstream.requests[-1].json["messages"][-3:] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Go on"},
    ]
    assert browser.problems == []


def test_edit_and_send_makes_a_branch_and_the_old_one_stays_reachable(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    make_alice()
    page = browser.page
    open_chat(page, daphne_server.url)
    upstream.enqueue(Reply(tokens=["Five"]))
    ask(page, "What is 2+2?")
    question = page.locator(".message.user").last
    question.get_by_role("button", name="Edit").click()
    editor = question.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value("What is 2+2?")
    editor.fill("What is 2+2, exactly?")
    upstream.enqueue(Reply(tokens=["Four"]))
    question.get_by_role("button", name="Save and send").click()

    expect(page.locator(".transcript > .message").last.locator(".body")).to_have_text("Four")
    expect(page.locator(".transcript > .message").last).to_have_attribute("data-status", "complete")
    assert shown(page) == ["Hello alice, I am Serika!", "What is 2+2, exactly?", "Four"]
    assert upstream.requests[-1].json["messages"][-1] == {
        "role": "user",
        "content": "What is 2+2, exactly?",
    }
    edited = page.locator(".message.user").last
    expect(edited.locator(".counter")).to_have_text("2 / 2")
    edited.get_by_role("button", name="Previous alternative").click()
    expect(page.locator(".transcript > .message").last.locator(".body")).to_have_text("Five")
    assert shown(page) == ["Hello alice, I am Serika!", "What is 2+2?", "Five"]

    # Up in the empty message box edits the last question; Escape leaves it as it was.
    box = page.get_by_role("textbox", name="Message")
    box.focus()
    box.press("ArrowUp")
    editor = page.locator(".message.user").last.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("What is 2+2?")
    editor.press("Escape")
    expect(editor).to_have_count(0)
    assert browser.problems == []


def test_a_reply_is_corrected_in_place_and_continued(daphne_server, upstream, character, browser):
    from playwright.sync_api import expect

    make_alice()
    page = browser.page
    open_chat(page, daphne_server.url)
    upstream.enqueue(Reply(tokens=["Once upon", " a tme"], finish_reason="length"))
    reply = ask(page, "A story, please")
    expect(reply.locator(".notice")).to_contain_text("Cut off by the token limit.")

    reply.get_by_role("button", name="Edit").click()
    reply.get_by_role("textbox", name="Edit message").fill("Once upon a time")
    reply.get_by_role("button", name="Save").click()
    expect(reply.locator(".body")).to_have_text("Once upon a time")
    expect(reply.locator(".meta")).to_contain_text("edited")

    upstream.enqueue(Reply(tokens=[", there", " was a fox."], gap=0.2))
    reply.get_by_role("button", name="Continue").click()
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".body")).to_have_text("Once upon a time, there was a fox.")
    expect(reply.locator(".notice")).to_be_hidden()
    # The model was asked to carry on from the corrected text.
    assert upstream.requests[-1].json["messages"][-2] == {
        "role": "assistant",
        "content": "Once upon a time",
    }
    assert Message.objects.filter(role="assistant", parent__isnull=False).count() == 1
    assert browser.problems == []


def test_delete_asks_first_then_removes_the_message_and_what_follows(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    make_alice()
    page = browser.page
    open_chat(page, daphne_server.url)
    upstream.enqueue(Reply(tokens=["One"]))
    ask(page, "First")
    upstream.enqueue(Reply(tokens=["Two"]))
    ask(page, "Second")

    first_question = page.locator(".message.user").first
    first_question.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete this message?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert len(shown(page)) == 5

    first_question.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(".transcript > .message")).to_have_count(1)
    assert shown(page) == ["Hello alice, I am Serika!"]
    conversation = Conversation.objects.get()
    assert list(conversation.messages.values_list("content", flat=True)) == [
        "Hello alice, I am Serika!"
    ]
    page.reload()
    expect(page.locator(".transcript > .message")).to_have_count(1)
    assert browser.problems == []


def test_a_second_tab_follows_every_change(daphne_server, upstream, character, browser):
    from playwright.sync_api import expect

    make_alice()
    page = browser.page
    open_chat(page, daphne_server.url)
    upstream.enqueue(Reply(tokens=["A1"]))
    ask(page, "Q")
    other = page.context.new_page()
    other.goto(page.url)
    expect(other.locator("#chat")).to_have_attribute("data-connected", "true")

    upstream.enqueue(Reply(tokens=["A2"]))
    page.locator(".transcript > .message").last.get_by_role("button", name="Regenerate").click()
    expect(other.locator(".transcript > .message").last.locator(".body")).to_have_text("A2")
    expect(other.locator(".transcript > .message").last.locator(".counter")).to_have_text("2 / 2")
    page.locator(".transcript > .message").last.get_by_role(
        "button", name="Previous alternative"
    ).click()
    expect(other.locator(".transcript > .message").last.locator(".body")).to_have_text("A1")
    other.close()
    assert browser.problems == []

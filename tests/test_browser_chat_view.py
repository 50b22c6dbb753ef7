"""The chat view's client-side parts in a real browser: copying code blocks."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests import live
from tests.conftest import store_chain
from tests.fake_upstream import Reply

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_copy_code_and_copy_put_the_code_and_the_raw_message_on_the_clipboard(
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
    live.log_in(page, daphne_server.url, "alice", "alice-password", next_path="/")
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

    # "Copy" on a message copies its raw text, markdown as written: on a streamed reply, and
    # on the messages of a page rendered by the server.
    reply.get_by_role("button", name="Copy", exact=True).click()
    expect(reply.get_by_role("button", name="Copy", exact=True)).to_have_attribute(
        "data-copied", "true"
    )
    raw = "Here:\n\n```python\nprint('hi')\n```\n"
    assert page.evaluate("navigator.clipboard.readText()") == raw
    page.reload()
    question = page.locator(".message.user").last
    question.get_by_role("button", name="Copy", exact=True).click()
    expect(question.get_by_role("button", name="Copy", exact=True)).to_have_attribute(
        "data-copied", "true"
    )
    assert page.evaluate("navigator.clipboard.readText()") == "Show me code"
    page.locator(".message.assistant").last.get_by_role("button", name="Copy", exact=True).click()
    assert page.evaluate("navigator.clipboard.readText()") == raw


def make_alice():
    # Hashed as the server hashes (the test settings hash with MD5, which it does not accept).
    return get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )


def _end_in_view(page) -> bool:
    """Whether the transcript's last message ends inside the transcript's visible area."""
    return page.evaluate(
        """() => {
          const t = document.getElementById("transcript");
          const last = t.querySelector(".message:last-of-type");
          const box = t.getBoundingClientRect(), end = last.getBoundingClientRect().bottom;
          return end <= box.bottom + 2 && end >= box.top;
        }"""
    )


def test_a_streaming_reply_stays_in_view_until_the_member_scrolls_up_then_jump_to_latest(
    daphne_server, upstream, character, browser
):
    import time

    from playwright.sync_api import expect

    from chat import actions

    user = make_alice()
    conversation = actions.start_conversation(user, character)
    for i in range(30):  # long enough to scroll
        store_chain(
            conversation,
            {"role": "user", "content": f"Question {i}"},
            {"role": "assistant", "content": f"Answer {i}", "content_html": f"<p>Answer {i}</p>"},
        )
    lines = [f"Line {i} of a long story.\n\n" for i in range(80)]
    upstream.enqueue(Reply(tokens=lines, gap=0.1))  # ~8 s, growing by a paragraph each step
    page = browser.page
    live.log_in(page, daphne_server.url, "alice", "alice-password")
    page.goto(f"{daphne_server.url}/conversations/{conversation.pk}/")
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()

    box = page.get_by_role("textbox", name="Message")
    box.fill("Tell me a long story")
    box.press("Enter")
    streaming = page.locator(".message.assistant.status-streaming")
    expect(streaming).to_contain_text("Line 10")
    for _ in range(5):  # the end of the growing reply stays visible
        assert _end_in_view(page)
        time.sleep(0.2)

    # The member scrolls up: the view stays where they put it while the reply grows.
    page.locator("#transcript").hover()
    page.mouse.wheel(0, -1500)
    expect(jump).to_be_visible()
    held = page.evaluate("document.getElementById('transcript').scrollTop")
    expect(streaming).to_contain_text("Line 40")
    assert page.evaluate("document.getElementById('transcript').scrollTop") == held
    assert not _end_in_view(page)

    jump.click()
    expect(jump).to_be_hidden()
    expect(streaming).to_contain_text("Line 60")
    assert _end_in_view(page)
    reply = page.locator(".message.assistant").last
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    assert _end_in_view(page)
    assert browser.problems == []


def test_on_a_phone_the_conversations_button_opens_the_list_as_a_drawer(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    from chat import actions

    user = make_alice()
    older = actions.start_conversation(user, character)
    current = actions.start_conversation(user, character)
    page = browser.page
    page.set_viewport_size({"width": 390, "height": 844})
    live.log_in(page, daphne_server.url, "alice", "alice-password")
    page.goto(f"{daphne_server.url}/conversations/{current.pk}/")
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")

    # The top bar and the chat's header each stay one line at 390 px.
    for selector in (".topbar", ".chat-head"):
        height = page.locator(selector).evaluate("el => el.getBoundingClientRect().height")
        assert height < 60, (selector, height)
    drawer = page.get_by_role("complementary", name="Conversations")
    toggle = page.get_by_role("button", name="Conversations")
    expect(drawer).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    toggle.click()
    expect(drawer).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    assert page.evaluate("document.getElementById('sidebar').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert page.evaluate("document.activeElement.id") == "conversations-toggle"

    toggle.click()
    drawer.get_by_role("button", name="Close").click()
    expect(drawer).to_be_hidden()

    toggle.click()
    drawer.locator(f"a[href='/conversations/{older.pk}/']").click()
    expect(page).to_have_url(f"{daphne_server.url}/conversations/{older.pk}/")
    expect(drawer).to_be_hidden()

    # On a laptop the list is simply there, with no button.
    page.set_viewport_size({"width": 1280, "height": 800})
    expect(drawer).to_be_visible()
    expect(toggle).to_be_hidden()
    assert browser.problems == []

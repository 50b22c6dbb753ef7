"""Bringing people in, in headless Chromium against a real daphne server: staff make an
invitation on the Members page; the invitee opens the link in a browser of their own, makes an
account, lands in the chat and changes their password from the top bar. And a stranger signs up
under SIGNUP=approval, waits, and gets in once staff approve.

People: root is staff; dave is invited; erin signs up by herself.
With SERIKA_SCREENSHOT set, each page is also saved to test-artifacts/ (laptop and phone, light
and dark).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Group

from accounts.models import Invitation, PendingApproval
from tests import live
from tests.live import ARTIFACTS, BrowserPage

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
User = get_user_model()


@pytest.fixture
def live_server_env() -> dict[str, str]:
    """Approval mode: invitations skip the wait, strangers sign up and wait."""
    return {"SIGNUP": "approval"}


def staff_member(username: str):
    """An administrator, with a password hash the server (which has no test-only hashers) can
    check."""
    return User.objects.create(
        username=username,
        is_staff=True,
        is_superuser=True,
        password=PBKDF2PasswordHasher().encode(f"{username}-password", f"{username}salt12345678"),
    )


def look_at_every_size(page, name: str) -> None:
    """The page fits a laptop and a phone, light and dark (no sideways scrolling); saved as
    screenshots with SERIKA_SCREENSHOT."""
    for screen, size in SCREENS.items():
        page.set_viewport_size(size)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], (
                f"{name} scrolls sideways on a {screen}"
            )
            if os.environ.get("SERIKA_SCREENSHOT"):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(
                    path=str(ARTIFACTS / f"{name}-{screen}-{scheme}.png"), full_page=True
                )
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(SCREENS["laptop"])


def second_browser(browser: BrowserPage) -> tuple[Any, BrowserPage]:
    """A fresh context (no cookies) in the same Chromium, as another person's browser."""
    context = browser.page.context.browser.new_context(viewport=SCREENS["laptop"])
    context.set_default_timeout(live.BROWSER_TIMEOUT_MS)
    context.add_init_script(live.REPORT_CSP_VIOLATIONS)
    return context, BrowserPage(context.new_page())


def test_staff_invite_dave_who_joins_lands_in_the_chat_and_changes_his_password(
    live_server_env, daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    url = daphne_server.url
    staff_member("root")
    Group.objects.create(name="engineering")
    Group.objects.create(name="sales")
    page = browser.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)

    # Root makes the invitation on the Members page, reached from the top bar.
    live.log_in(page, url, "root", "root-password")
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Members").click()
    expect(page.get_by_role("heading", name="Members", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Invitations")).to_be_visible()
    page.get_by_label("Who it is for").fill("Dave from engineering")
    page.get_by_label("Valid for (days)").fill("3")
    page.get_by_role("checkbox", name="engineering").check()
    page.get_by_role("button", name="Create invitation", exact=True).click()

    link_field = page.get_by_role("textbox", name="Invitation link")
    expect(link_field).to_have_attribute("readonly", "")
    link = link_field.input_value()
    assert link.startswith(f"{url}/invite/")
    page.get_by_role("button", name="Copy link", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == link
    expect(page.get_by_role("row", name="Dave from engineering")).to_contain_text("Open")
    expect(page.get_by_role("button", name="Revoke", exact=True)).to_be_visible()
    look_at_every_size(page, "members")

    # Dave opens the link in his own browser and makes his account.
    context, dave_browser = second_browser(browser)
    try:
        dave_page = dave_browser.page
        dave_page.goto(link)
        expect(dave_page).to_have_url(f"{url}/invite/")
        expect(dave_page.get_by_role("heading", name="Join Serika Web")).to_be_visible()
        expect(dave_page.get_by_text("engineering", exact=True)).to_be_visible()
        look_at_every_size(dave_page, "invitation")
        dave_page.get_by_label("Username").fill("dave")
        dave_page.get_by_label("Password", exact=True).fill("a long sea view")
        dave_page.get_by_label("Password (again)").fill("a long sea view")
        dave_page.get_by_role("button", name="Create account", exact=True).click()

        # In the chat, logged in, in the invitation's group.
        expect(dave_page).to_have_url(f"{url}/")
        expect(dave_page.get_by_role("heading", name="Start a chat")).to_be_visible()
        account = dave_page.get_by_role("navigation", name="Account")
        expect(account).to_contain_text("dave")
        expect(account.get_by_role("link", name="Members")).to_have_count(0)
        dave = User.objects.get(username="dave")
        assert [g.name for g in dave.groups.all()] == ["engineering"]
        assert Invitation.objects.get().used_by == dave

        # The password change, from the member's menu in the top bar.
        account.get_by_text("dave", exact=True).click()
        account.get_by_role("link", name="Change password").click()
        expect(dave_page.get_by_role("heading", name="Change password")).to_be_visible()
        look_at_every_size(dave_page, "password-change")
        dave_page.get_by_label("Current password").fill("a long sea view")
        dave_page.get_by_label("New password", exact=True).fill("a green hill far away")
        dave_page.get_by_label("New password (again)").fill("a green hill far away")
        dave_page.get_by_role("button", name="Change password", exact=True).click()
        expect(dave_page.get_by_role("heading", name="Password changed")).to_be_visible()
        dave.refresh_from_db()
        # The server's hasher (this test process has only a fast test-only one).
        assert PBKDF2PasswordHasher().verify("a green hill far away", dave.password)
        assert dave_browser.problems == []
    finally:
        context.close()

    # Used: the same link now says so, and the Members page shows who used it.
    page.goto(link)
    expect(page.get_by_role("heading", name="This invitation was already used")).to_be_visible()
    page.goto(f"{url}/team/members/")
    expect(page.get_by_role("row", name="Dave from engineering")).to_contain_text("Used by dave")
    expect(page.get_by_role("button", name="Revoke", exact=True)).to_have_count(0)
    # Chromium reports the used link's 410 as a console error; that one is expected.
    assert [p for p in browser.problems if "status of 410 (Gone)" not in p] == []


def test_erin_signs_up_waits_for_approval_and_gets_in_once_staff_approve(
    live_server_env, daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    url = daphne_server.url
    staff_member("root")
    context, erin_browser = second_browser(browser)
    try:
        erin_page = erin_browser.page
        erin_page.goto(f"{url}/login/")
        erin_page.get_by_role("link", name="Create an account").click()
        expect(erin_page.get_by_role("heading", name="Create an account")).to_be_visible()
        look_at_every_size(erin_page, "signup")

        # A mistake first: the form says what is wrong and nothing is made.
        erin_page.get_by_label("Username").fill("erin")
        erin_page.get_by_label("Password", exact=True).fill("a long sea view")
        erin_page.get_by_label("Password (again)").fill("a long see view")
        erin_page.get_by_role("button", name="Create account", exact=True).click()
        expect(erin_page.get_by_text("The two password fields didn")).to_be_visible()
        assert not User.objects.filter(username="erin").exists()
        look_at_every_size(erin_page, "signup-error")

        erin_page.get_by_label("Password", exact=True).fill("a long sea view")
        erin_page.get_by_label("Password (again)").fill("a long sea view")
        erin_page.get_by_role("button", name="Create account", exact=True).click()
        waiting = "Your account is waiting for an administrator's approval."
        expect(erin_page.get_by_text(waiting)).to_be_visible()
        assert PendingApproval.objects.get().user.username == "erin"

        # Logging in says the same until root approves.
        live.log_in(erin_page, url, "erin", "a long sea view")
        expect(erin_page.get_by_text(waiting)).to_be_visible()

        page = browser.page
        live.log_in(page, url, "root", "root-password")
        page.goto(f"{url}/team/members/")
        waiting_list = page.get_by_role("region", name="Waiting for approval")
        expect(waiting_list).to_contain_text("erin")
        look_at_every_size(page, "members-waiting")
        waiting_list.get_by_role("button", name="Approve", exact=True).click()
        expect(page.get_by_text("erin may now log in.")).to_be_visible()
        expect(page.get_by_text("Nobody is waiting.")).to_be_visible()

        live.log_in(erin_page, url, "erin", "a long sea view")
        expect(erin_page).to_have_url(f"{url}/")
        expect(erin_page.get_by_role("heading", name="Start a chat")).to_be_visible()
        assert erin_browser.problems == []
    finally:
        context.close()
    assert browser.problems == []

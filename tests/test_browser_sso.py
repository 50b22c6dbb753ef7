"""Single sign-on in headless Chromium: the login page's "Sign in with …" button, the provider's
own form (a real OpenID provider on 127.0.0.1), and back in the app, logged in and chatting."""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from tests import live, oidc
from tests.live import ARTIFACTS
from tests.oidc import NAME

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser
oidc_provider = oidc.oidc_provider

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The provider's pages ask a CDN for their stylesheet; tests never leave the machine.
NOT_LOOPBACK = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")
SCREENS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def live_server_env(oidc_provider):
    """The servers' single sign-on settings (tests/live.py's `daphne_servers` reads them)."""
    return oidc_provider.server_env(OIDC_GROUPS_CLAIM="groups", OIDC_ADMIN_GROUPS="chat-admins")


def test_a_member_signs_in_with_the_provider_and_chats(
    live_server_env, daphne_server, upstream, oidc_provider, character, browser
):
    from playwright.sync_api import expect

    Group.objects.create(name="chat-admins")
    oidc_provider.set_user(
        "sub-erin",
        {"preferred_username": "erin", "name": "Erin Example", "groups": ["chat-admins"]},
    )
    page = browser.page
    page.route(NOT_LOOPBACK, lambda route: route.fulfill(status=200, body=""))

    page.goto(f"{daphne_server.url}/")
    expect(page).to_have_url(f"{daphne_server.url}/login/?next=/")
    sso_button = page.get_by_role("button", name=f"Sign in with {NAME}")
    # Both ways in, at every size and in both color schemes.
    for screen, size in SCREENS.items():
        page.set_viewport_size(size)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            expect(sso_button).to_be_in_viewport()
            expect(page.get_by_role("button", name="Log in")).to_be_in_viewport()
            assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
            if os.environ.get("SERIKA_SCREENSHOT"):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"login-sso-{screen}-{scheme}.png"))
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(SCREENS["laptop"])

    # Off to the provider (a form POST, redirected: the CSP's form-action allows the issuer).
    sso_button.click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(oidc_provider.url)}/oauth2/authorize\?"))
    page.get_by_placeholder("sub").fill("sub-erin")
    page.get_by_role("button", name="Authorize").click()

    # Back in the app, logged in as erin, staff through the provider's admin group.
    expect(page).to_have_url(f"{daphne_server.url}/")
    expect(page.get_by_role("heading", name="Start a chat")).to_be_visible()
    account = page.get_by_role("navigation", name="Account")
    expect(account).to_contain_text("erin")
    expect(account.get_by_role("link", name="Admin")).to_be_visible()
    erin = get_user_model().objects.get(username="erin")
    assert erin.is_staff
    assert erin.socialaccount_set.get().uid == "sub-erin"

    # The chat's websocket takes the SSO session.
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    expect(page.get_by_role("log", name="Transcript")).to_contain_text("Hello Erin, I am Serika!")

    assert browser.problems == []

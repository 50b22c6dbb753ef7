"""The usage page and a quota's refusal in a real browser (Chromium), on a laptop and a phone,
light and dark. Alice's daily quota is used up; Root is staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.models import Message
from tests import live
from usage.models import DailyUsage, Quota
from usage.views import utc_today

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def member(username: str, **fields):
    return get_user_model().objects.create(
        username=username,
        password=PBKDF2PasswordHasher().encode(f"{username}-password", f"{username}salt12345678"),
        **fields,
    )


def log_in(page, url: str, username: str, next_path: str = "/") -> None:
    live.log_in(page, url, username, f"{username}-password", next_path)


def test_a_used_up_quota_refuses_a_send_keeps_the_text_and_the_usage_page_shows_why(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    alice = member("alice")
    Quota.objects.create(user=alice, tokens_per_day=2_000)
    for days_ago in range(0, 30, 3):
        DailyUsage.objects.create(
            user=alice,
            day=utc_today() - timedelta(days=days_ago),
            character_pk=character.pk,
            character_name="Serika",
            model="openai/gpt-4o-mini",
            requests=2,
            prompt_tokens=1_500,
            completion_tokens=500,
            estimated_tokens=100 if days_ago % 2 else 0,
        )
    page = browser.page
    log_in(page, daphne_server.url, "alice")
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
    message_box = page.get_by_role("textbox", name="Message")
    message_box.fill("One more question?")
    message_box.press("Enter")
    expect(
        page.get_by_text("Your daily quota of 2,000 tokens is used up; it resets at 00:00 UTC.")
    ).to_be_visible()
    expect(message_box).to_have_value("One more question?")
    assert not Message.objects.filter(content="One more question?").exists()

    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Your usage")).to_be_visible()
    chart = page.get_by_role("img", name="Tokens per day, the last 30 days")
    expect(chart).to_be_visible()
    assert chart.evaluate("svg => svg.querySelectorAll('rect.bar').length") == 15  # 10 days
    expect(page.get_by_text("0 of 2,000 tokens left today")).to_be_visible()
    page.get_by_text("The figures as a table").click()
    today = utc_today()
    expect(page.get_by_role("row", name=f"{today.day} {today:%b %Y} 2,000 0")).to_be_visible()
    assert not browser.problems, browser.problems


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_the_usage_pages_fit_a_laptop_and_a_phone(
    daphne_server, character, browser, scheme, width, height
):
    from playwright.sync_api import expect

    root = member("root", is_staff=True, is_superuser=True)
    for days_ago in range(30):
        DailyUsage.objects.create(
            user=root,
            day=utc_today() - timedelta(days=days_ago),
            model="mistral/a-model-with-a-rather-long-name-3.2",
            prompt_tokens=1000 * days_ago,
            completion_tokens=100,
        )
    page = browser.page
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": width, "height": height})
    log_in(page, daphne_server.url, "root", "/usage/")
    expect(page.get_by_role("heading", name="Your usage")).to_be_visible()
    for path, heading in (("/usage/", "Your usage"), ("/usage/team/?by=model", "Team usage")):
        page.goto(f"{daphne_server.url}{path}")
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
        # Nothing wider than the screen: wide tables scroll in their own box.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.evaluate("document.querySelector('.usage-chart svg').clientWidth") > width / 2
    expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
    assert not browser.problems, browser.problems

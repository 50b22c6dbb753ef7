"""The "Chat settings" panel: the model list from the upstream's /models (cached, never waited
for), the server-side validation, and the settings that the next reply is asked with."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat import actions, model_catalog
from chat.models import Conversation
from tests import live
from tests.fake_upstream import DEFAULT_MODELS, Reply

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server
browser = live.browser


@pytest.fixture(autouse=True)
def fresh_catalog():
    model_catalog.forget()
    yield
    model_catalog.forget()


def settle(timeout: float = 10.0) -> None:
    """Wait until no background refresh runs (bounded)."""
    deadline = time.monotonic() + timeout
    while model_catalog._refreshing:
        assert time.monotonic() < deadline, "a refresh never ended"
        time.sleep(0.02)


def wait_for_listing(current: str = "", timeout: float = 10.0) -> list[str]:
    """Ask until the background refresh has answered (bounded)."""
    deadline = time.monotonic() + timeout
    first = model_catalog.available_models(current)
    while model_catalog._listed is None:  # the cache's own state: filled by the refresh
        assert time.monotonic() < deadline, "the models were never listed"
        time.sleep(0.02)
    return first


def test_a_page_never_waits_for_models_and_the_next_one_has_the_upstreams_list(upstream, settings):
    settings.SERIKA_MODELS = []
    upstream.models_delay = 1.0  # a slow /models
    started = time.monotonic()
    first = model_catalog.available_models("x/current")
    assert time.monotonic() - started < 0.5  # not waited for
    assert first == ["x/current", settings.SERIKA_DEFAULT_MODEL]
    wait_for_listing()
    assert model_catalog.available_models("fake/model-b") == sorted(DEFAULT_MODELS)
    assert model_catalog.available_models("x/current") == ["x/current", *sorted(DEFAULT_MODELS)]


def test_a_failing_models_keeps_the_last_list_and_is_asked_again_after_the_ttl(upstream, settings):
    settings.SERIKA_MODELS = []
    settings.SERIKA_MODELS_TTL = 0.2
    wait_for_listing()
    listed = model_catalog.available_models()
    upstream.models_status = 500
    upstream.models = ["fake/new"]
    time.sleep(0.3)
    asked = len([r for r in upstream.requests if r.path.endswith("/models")])
    assert model_catalog.available_models() == listed  # stale, kept; a refresh starts
    deadline = time.monotonic() + 10
    while len([r for r in upstream.requests if r.path.endswith("/models")]) == asked:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    assert model_catalog.available_models() == listed
    assert all(r.headers.get("authorization") == "Bearer test-key" for r in upstream.requests)


def test_serika_models_restricts_the_list_and_replaces_it_when_models_is_unavailable(
    upstream, settings
):
    settings.SERIKA_MODELS = ["fake/model-b", "not/listed", "fake/model-a"]
    upstream.models_status = 503
    assert model_catalog.available_models() == settings.SERIKA_MODELS  # before any answer
    settle()
    assert model_catalog.available_models() == settings.SERIKA_MODELS  # /models failed
    upstream.models_status = 200
    model_catalog.forget()
    wait_for_listing()
    assert model_catalog.available_models() == ["fake/model-b", "fake/model-a"]


@pytest.mark.django_db
def test_settings_are_validated_and_bad_input_changes_nothing(client, alice, bob, character):
    conversation = actions.start_conversation(alice, character)
    client.force_login(alice)
    url = f"/conversations/{conversation.pk}/settings/"
    model = conversation.model
    for bad in (
        {"model": model, "temperature": "3"},
        {"model": model, "temperature": "-0.1"},
        {"model": model, "max_tokens": "0"},
        {"model": model, "max_tokens": "many"},
        {"model": "not/offered"},
    ):
        response = client.post(url, bad, HTTP_ACCEPT="application/json")
        assert response.status_code == 400, bad
        assert response.json()["errors"]
    conversation.refresh_from_db()
    assert (conversation.model, conversation.temperature, conversation.max_tokens) == (
        model,
        None,
        None,
    )
    # Without the page's script: a readable page, still nothing changed.
    page = client.post(url, {"model": model, "temperature": "9"})
    assert page.status_code == 400 and b"Temperature" in page.content
    # Another member's conversation is not found, and not changed.
    client.force_login(bob)
    assert client.post(url, {"model": model, "temperature": "1"}).status_code == 404
    conversation.refresh_from_db()
    assert conversation.temperature is None


@pytest.mark.django_db
def test_empty_values_mean_not_sent_and_set_ones_are_stored(client, alice, character):
    conversation = actions.start_conversation(alice, character)
    client.force_login(alice)
    url = f"/conversations/{conversation.pk}/settings/"
    saved = client.post(
        url,
        {"model": conversation.model, "temperature": "0.7", "max_tokens": "256"},
        HTTP_ACCEPT="application/json",
    )
    assert saved.json() == {"model": conversation.model, "temperature": 0.7, "max_tokens": 256}
    cleared = client.post(url, {"model": conversation.model, "temperature": "", "max_tokens": ""})
    assert cleared.status_code == 302
    conversation.refresh_from_db()
    assert (conversation.temperature, conversation.max_tokens) == (None, None)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_panel_changes_the_model_and_temperature_that_the_upstream_receives(
    daphne_server, upstream, character, browser
):
    from playwright.sync_api import expect

    get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    upstream.enqueue(Reply(tokens=["Fine."]))
    page = browser.page
    live.log_in_and_open_a_chat(page, daphne_server.url, "alice", "alice-password")

    # The server lists the models in the background: the select has them on a later load.
    model = page.get_by_role("combobox", name="Model")
    deadline = time.monotonic() + 15
    while "fake/model-b" not in page.locator("#id_model option").all_inner_texts():
        assert time.monotonic() < deadline, "the upstream's models never appeared"
        time.sleep(0.2)
        page.reload()
    panel = page.get_by_role("form", name="Chat settings")
    expect(panel).to_be_hidden()
    toggle = page.get_by_role("button", name="Chat settings")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel).to_be_visible()
    model.select_option("fake/model-b")
    page.get_by_role("spinbutton", name="Temperature").fill("0.7")
    page.get_by_role("spinbutton", name="Max tokens").fill("300")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    expect(page.locator("#current-model")).to_have_text("fake/model-b")
    stored = Conversation.objects.get()
    assert (stored.model, stored.temperature, stored.max_tokens) == ("fake/model-b", 0.7, 300)

    # A value out of range is refused where it was typed (the server refuses it too, above).
    temperature = page.get_by_role("spinbutton", name="Temperature")
    temperature.fill("5")
    page.get_by_role("button", name="Save settings").click()
    assert temperature.evaluate("input => input.validity.rangeOverflow")
    expect(page.locator("#settings-status")).to_have_text("Saved")  # no new save
    stored.refresh_from_db()
    assert stored.temperature == 0.7

    page.get_by_role("spinbutton", name="Temperature").fill("0.7")
    box = page.get_by_role("textbox", name="Message")
    box.fill("Hello")
    box.press("Enter")
    expect(page.get_by_role("log", name="Transcript")).to_contain_text("Fine.")
    chat = [r for r in upstream.requests if r.path.endswith("/chat/completions")][-1]
    assert chat.json["model"] == "fake/model-b"
    assert chat.json["temperature"] == 0.7
    assert chat.json["max_tokens"] == 300
    assert browser.problems == []

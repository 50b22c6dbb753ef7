"""Rate limits (the `limits` library): frames that may start a reply per member a minute, card
files imported per member an hour; counted in memory, or in Redis (shared by every process)
when REDIS_URL is set. Alice floods; Bob is not held back by her.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from characters.models import Character
from chat import actions
from chat.models import Message
from tests.card_corpus import to_json_bytes, v2_card
from tests.fake_upstream import Reply
from usage import rate_limits


def card_file(name: str) -> SimpleUploadedFile:
    card = v2_card()
    card["data"]["name"] = name
    return SimpleUploadedFile(f"{name}.json", to_json_bytes(card), content_type="application/json")


@pytest.mark.django_db(transaction=True)
async def test_starting_replies_too_fast_is_refused_over_the_socket_and_stores_nothing(
    connect, upstream, alice, bob, settings
):
    settings.RATE_LIMIT_SENDS = "3/minute"
    upstream.default = Reply(tokens=["ok"])
    conversation = await sync_to_async(actions.start_conversation)(alice, None)
    ws = await connect(alice, conversation.pk)
    await ws.send({"type": "message.send", "content": "one"})
    await ws.done()
    await ws.send({"type": "message.retry"})  # a retry counts as much as a send
    await ws.done()
    await ws.send({"type": "message.send", "content": "three"})
    await ws.done()

    await ws.send({"type": "message.send", "content": "four"})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "rate_limited"
    assert error["message"].startswith("You are starting replies too fast: at most 3 a minute.")
    assert "Try again in" in error["message"]
    assert not await Message.objects.filter(content="four").aexists()

    # Bob's replies are counted apart from Alice's.
    bobs = await sync_to_async(actions.start_conversation)(bob, None)
    bob_ws = await connect(bob, bobs.pk)
    await bob_ws.send({"type": "message.send", "content": "hello"})
    assert (await bob_ws.done())["status"] == "complete"


@pytest.mark.django_db
def test_importing_too_many_cards_gets_a_readable_429_and_imports_nothing(client, alice, settings):
    settings.RATE_LIMIT_CARD_IMPORTS = "3/hour"
    client.force_login(alice)
    url = reverse("character_import")
    first = client.post(url, {"files": [card_file("One"), card_file("Two")]})
    assert first.status_code == 200
    assert Character.objects.filter(owner=alice).count() == 2

    refused = client.post(url, {"files": [card_file("Three"), card_file("Four")]})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    page = refused.content.decode()
    assert "Slow down" in page
    assert "You may import at most 3 cards an hour; you can import 1 more now." in page
    assert Character.objects.filter(owner=alice).count() == 2
    # The one left may still be used.
    assert client.post(url, {"files": [card_file("Three")]}).status_code == 302


@pytest.mark.django_db
def test_the_admins_import_page_is_limited_too(admin_client, settings):
    settings.RATE_LIMIT_CARD_IMPORTS = "1/hour"
    url = reverse("admin:characters_character_import")
    assert admin_client.post(url, {"files": [card_file("One")]}).status_code == 200
    refused = admin_client.post(url, {"files": [card_file("Two")]})
    assert refused.status_code == 429
    assert "none are left" in refused.content.decode()
    assert Character.objects.count() == 1


def test_a_limit_that_cannot_be_counted_lets_the_attempt_through(settings, caplog):
    """Redis away: chat goes on (it works without Redis), the limit is not applied, and the
    log says so."""
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    settings.RATE_LIMIT_SENDS = "1/minute"
    rate_limits.reset()
    started = time.monotonic()
    assert asyncio.run(rate_limits.check_send(1)) is None
    assert asyncio.run(rate_limits.check_send(1)) is None
    assert rate_limits.check_card_import(1, 5) is None
    assert time.monotonic() - started < 10
    assert "Send rate limit not applied" in caplog.text


def test_an_empty_limit_is_no_limit(settings):
    settings.RATE_LIMIT_SENDS = ""
    settings.RATE_LIMIT_CARD_IMPORTS = ""
    for _ in range(50):
        assert asyncio.run(rate_limits.check_send(1)) is None
    assert rate_limits.check_card_import(1, 10_000) is None

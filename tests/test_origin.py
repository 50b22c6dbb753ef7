"""The websocket Origin check: only pages of this site, at its own scheme, host and port."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice, character):
    from chat import actions

    return actions.start_conversation(alice, character)


async def test_a_page_of_the_site_itself_may_open_a_socket(connect, alice, conversation):
    ws = await connect(alice, conversation.pk, origin="http://127.0.0.1:8000")
    assert ws.connected is True


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another program on the same machine
        "https://127.0.0.1",  # another scheme, and the default port
        "https://127.0.0.1:8000",  # another scheme on the same port
        "http://127.0.0.1",  # port 80, not 8000
        "http://localhost:8000",  # an allowed host, but not the one this page was served from
        "https://evil.example",
        "null",  # sandboxed iframes and file: pages
        "http://127.0.0.1:8000/chat",  # not an origin at all
    ],
)
async def test_a_page_of_another_origin_is_refused_at_the_handshake(
    connect, alice, conversation, origin
):
    ws = await connect(alice, conversation.pk, origin=origin)
    assert ws.connected is False


async def test_a_handshake_without_an_origin_is_refused(connect, alice, conversation):
    # Browsers always send one; a script without it has no business with members' cookies.
    ws = await connect(alice, conversation.pk, origin=None)
    assert ws.connected is False


async def test_the_host_must_be_an_allowed_host_even_when_the_origin_matches_it(
    connect, alice, conversation
):
    ws = await connect(
        alice, conversation.pk, origin="http://evil.example:8000", host="evil.example:8000"
    )
    assert ws.connected is False


async def test_the_default_port_may_be_left_out_on_either_side(connect, alice, conversation):
    ws = await connect(alice, conversation.pk, origin="http://localhost:80", host="localhost")
    assert ws.connected is True


async def test_an_origin_in_csrf_trusted_origins_is_accepted(
    connect, alice, conversation, settings
):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    for origin in ("https://chat.example.com", "https://team.example.org"):
        ws = await connect(alice, conversation.pk, origin=origin)
        assert ws.connected is True, origin
    ws = await connect(alice, conversation.pk, origin="http://chat.example.com")
    assert ws.connected is False


async def test_x_forwarded_proto_counts_only_when_the_proxy_is_trusted(
    connect, alice, conversation, settings
):
    settings.ALLOWED_HOSTS = ["chat.example.com"]

    async def behind_tls(origin: str) -> bool:
        ws = await connect(
            alice,
            conversation.pk,
            origin=origin,
            host="chat.example.com",
            extra_headers=[(b"x-forwarded-proto", b"https")],
        )
        return ws.connected

    # Not trusted (USE_X_FORWARDED_PROTO unset): the socket's own scheme (ws) counts.
    assert await behind_tls("https://chat.example.com") is False
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await behind_tls("https://chat.example.com") is True
    # Behind TLS, a plain-HTTP page (which a network attacker can serve) is not this site.
    assert await behind_tls("http://chat.example.com") is False

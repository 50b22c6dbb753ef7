"""Members' passwords: changing one (for those who have one, while passwords are accepted), and
resetting a forgotten one by e-mail, only when an e-mail backend is configured (EMAIL_URL). The
reset's e-mail goes through Django's SMTP backend to a real SMTP server on 127.0.0.1 (aiosmtpd).

People: alice has a password and an e-mail address; bob has a password but no address; carol
signed in with single sign-on and has no password here.
"""

from __future__ import annotations

import email
import email.policy
import json
import re

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth import get_user_model
from django.test import Client

from tests import live
from tests.live import free_port

pytestmark = pytest.mark.django_db

User = get_user_model()
NEW = {"new_password1": "a brand new view", "new_password2": "a brand new view"}


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", email="alice@example.com", password="alice-password")


@pytest.fixture
def carol(db):
    """Carol signed in with the provider: no usable password."""
    user = User.objects.create_user("carol", email="carol@example.com")
    assert not user.has_usable_password()
    return user


def logged_in_as(client: Client, user) -> Client:
    client.force_login(user)
    return client


# --- Changing a password ----------------------------------------------------------------------
def test_a_member_changes_their_password_from_the_navigation(client, alice):
    logged_in_as(client, alice)
    home = client.get("/").content.decode()
    assert '<a href="/account/password/">Change password</a>' in home

    page = client.get("/account/password/").content.decode()
    assert "<h1>Change password</h1>" in page
    for label in ("Current password", "New password", "New password (again)"):
        assert f">{label}</label>" in page
    assert ">Change password</button>" in page

    response = client.post("/account/password/", {"old_password": "alice-password", **NEW})

    assert response["Location"] == "/account/password/changed/"
    assert "Your password is changed" in client.get(response["Location"]).content.decode()
    alice.refresh_from_db()
    assert alice.check_password("a brand new view")
    # Still logged in here; the old password no longer opens the account.
    assert client.get("/").status_code == 200
    other = Client()
    assert (
        other.post("/login/", {"username": "alice", "password": "alice-password"}).status_code
        == 200
    )
    response = other.post("/login/", {"username": "alice", "password": "a brand new view"})
    assert response["Location"] == "/"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"old_password": "a wrong guess", **NEW}, "Your old password was entered incorrectly."),
        (
            {"old_password": "alice-password", **NEW, "new_password2": "another view"},
            "The two password fields didn",
        ),
        (
            {"old_password": "alice-password", "new_password1": "abc", "new_password2": "abc"},
            "too short",
        ),
    ],
)
def test_a_wrong_change_says_why_and_keeps_the_password(client, alice, form, error):
    logged_in_as(client, alice)
    response = client.post("/account/password/", form)
    assert response.status_code == 200
    assert error in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password("alice-password")


def test_changing_a_password_needs_a_login(client):
    assert client.get("/account/password/")["Location"].startswith("/login/")
    assert client.post("/account/password/", NEW)["Location"].startswith("/login/")


def test_a_member_without_a_password_is_told_why_there_is_none_to_change(client, carol, settings):
    settings.OIDC_NAME = "Acme ID"
    logged_in_as(client, carol)
    assert "Change password" not in client.get("/").content.decode()
    page = client.get("/account/password/").content.decode()
    assert "You sign in with Acme ID, so your account here has no password" in page
    assert 'name="new_password1"' not in page

    response = client.post("/account/password/", {"old_password": "", **NEW})

    assert response.status_code == 403
    carol.refresh_from_db()
    assert not carol.has_usable_password()


def test_with_oidc_only_no_password_is_changed(client, alice, settings):
    settings.OIDC_ISSUER_URL = "https://id.example.com"
    settings.OIDC_NAME = "Acme ID"
    settings.OIDC_ONLY = True
    logged_in_as(client, alice)
    assert "Change password" not in client.get("/").content.decode()
    assert "Passwords are turned off" in client.get("/account/password/").content.decode()
    response = client.post("/account/password/", {"old_password": "alice-password", **NEW})
    assert response.status_code == 403
    alice.refresh_from_db()
    assert alice.check_password("alice-password")


# --- Resetting a forgotten password -----------------------------------------------------------
RESET_PATHS = [
    "/account/password/reset/",
    "/account/password/reset/sent/",
    "/account/password/reset/MQ/set-password/",
    "/account/password/reset/done/",
]


@pytest.mark.parametrize("path", RESET_PATHS)
def test_without_email_there_is_no_password_reset(client, alice, settings, mailoutbox, path):
    assert settings.EMAIL_URL == ""
    assert "Forgot your password?" not in client.get("/login/").content.decode()
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "alice@example.com"}).status_code == 404
    assert mailoutbox == []


class Mailbox:
    """What the SMTP server received: (envelope recipients, parsed message) per e-mail."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.rcpt_tos, message))
        return "250 Message accepted"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on 127.0.0.1, and the site's e-mail settings pointing at it as
    EMAIL_URL would make them (Django's SMTP backend, not the test outbox)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_URL = f"smtp://127.0.0.1:{port}"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 5
    settings.DEFAULT_FROM_EMAIL = "Serika Web <chat@example.com>"
    try:
        yield mailbox
    finally:
        controller.stop()


def test_a_member_resets_a_forgotten_password_through_the_emailed_link(client, alice, smtp_server):
    login_page = client.get("/login/").content.decode()
    assert '<a href="/account/password/reset/">Forgot your password?</a>' in login_page
    page = client.get("/account/password/reset/").content.decode()
    assert "<h1>Reset your password</h1>" in page
    assert ">Email</label>" in page

    response = client.post("/account/password/reset/", {"email": "ALICE@example.com"})

    assert response["Location"] == "/account/password/reset/sent/"
    assert "<h1>Check your e-mail</h1>" in client.get(response["Location"]).content.decode()
    [(recipients, message)] = smtp_server.received
    assert recipients == ["alice@example.com"]
    assert message["From"] == "Serika Web <chat@example.com>"
    assert message["Subject"] == "Your password on Serika Web"
    body = message.get_content()
    [link] = re.findall(r"http://testserver(/account/password/reset/\S+/\S+/)", body)

    # The link's token moves into the session; the page then asks for the new password.
    response = client.get(link)
    assert response["Location"].endswith("/set-password/")
    page = client.get(response["Location"]).content.decode()
    assert "<h1>Set a new password</h1>" in page
    assert ">New password (again)</label>" in page
    response = client.post(response["Location"], NEW)
    assert response["Location"] == "/account/password/reset/done/"
    assert "Your new password is set" in client.get(response["Location"]).content.decode()

    alice.refresh_from_db()
    assert alice.check_password("a brand new view")
    # The link works once: the new password invalidates its token.
    page = Client().get(link)
    assert page.status_code == 200
    assert "This link does not work any more" in page.content.decode()


@pytest.mark.parametrize("address", ["nobody@example.com", "bob@example.com", "carol@example.com"])
def test_the_reset_says_the_same_whether_or_not_an_account_has_the_address(
    client, alice, bob, carol, smtp_server, address
):
    """Nobody has it; bob has no address; carol has no password (single sign-on) to reset."""
    response = client.post("/account/password/reset/", {"email": address}, follow=True)
    assert "<h1>Check your e-mail</h1>" in response.content.decode()
    assert smtp_server.received == []
    carol.refresh_from_db()
    assert not carol.has_usable_password()


def test_a_waiting_account_gets_no_reset_link(client, smtp_server, settings):
    settings.SIGNUP = "approval"
    Client().post(
        "/signup/",
        {
            "username": "dave",
            "email": "dave@example.com",
            "password1": "a long sea view",
            "password2": "a long sea view",
        },
    )
    assert not User.objects.get(username="dave").is_active
    client.post("/account/password/reset/", {"email": "dave@example.com"})
    assert smtp_server.received == []


def test_a_malformed_address_says_so_and_sends_nothing(client, alice, smtp_server):
    response = client.post("/account/password/reset/", {"email": "not an address"})
    assert response.status_code == 200
    assert "Enter a valid email address." in response.content.decode()
    assert smtp_server.received == []


@pytest.mark.parametrize("path", RESET_PATHS)
def test_with_oidc_only_there_is_no_password_reset_even_with_email(
    client, alice, smtp_server, settings, path
):
    settings.OIDC_ISSUER_URL = "https://id.example.com"
    settings.OIDC_ONLY = True
    assert "Forgot your password?" not in client.get("/login/").content.decode()
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "alice@example.com"}).status_code == 404
    assert smtp_server.received == []


# --- EMAIL_URL ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp+tls://chat%40example.com:s3cr%2Ft@mail.example.com:587",
            ["mail.example.com", 587, "chat@example.com", "s3cr/t", True, None],
        ),
        (
            "smtp+ssl://chat:pw@mail.example.com:465",
            ["mail.example.com", 465, "chat", "pw", None, True],
        ),
        ("smtp://relay.internal:25", ["relay.internal", 25, None, None, None, None]),
    ],
)
def test_email_url_becomes_djangos_smtp_settings(url, expected):
    result = live.production_settings(
        {"EMAIL_URL": url},
        "EMAIL_BACKEND EMAIL_HOST EMAIL_PORT EMAIL_HOST_USER EMAIL_HOST_PASSWORD "
        "EMAIL_USE_TLS EMAIL_USE_SSL",
        unset_prefix="EMAIL",
    )
    assert result.returncode == 0, result.stderr
    backend, *values = json.loads(result.stdout)
    assert backend == "django.core.mail.backends.smtp.EmailBackend"
    assert values == expected


def test_a_wrong_email_url_stops_the_start():
    result = live.production_settings(
        {"EMAIL_URL": "smpt://mail.example.com"}, "EMAIL_HOST", unset_prefix="EMAIL"
    )
    assert result.returncode != 0
    assert "Invalid email schema smpt" in result.stderr


def test_reset_requests_from_one_address_are_limited_and_the_refused_one_sends_nothing(
    client, alice, smtp_server, settings
):
    settings.RATE_LIMIT_ACCOUNT_REQUESTS = "2/hour"
    for _ in range(2):
        assert client.post("/account/password/reset/", {"email": alice.email}).status_code == 302
    assert len(smtp_server.received) == 2

    refused = client.post("/account/password/reset/", {"email": alice.email})

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Too many sign-up or password reset requests from your address" in (
        refused.content.decode()
    )
    assert len(smtp_server.received) == 2
    # Opening the page is not a request: it still shows.
    assert client.get("/account/password/reset/").status_code == 200

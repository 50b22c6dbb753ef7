"""Login throttling: guessing passwords locks the account and the address, for a while."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

# The attacker and the members log in from different addresses.
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.20"


def log_in(client: Client, username: str, password: str, path: str = "/login/"):
    return client.post(path, {"username": username, "password": password})


def test_a_hundred_wrong_passwords_lock_the_account_after_a_handful(alice, caplog, settings):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    with caplog.at_level(logging.INFO):
        statuses = [log_in(attacker, "alice", f"guess-{i}").status_code for i in range(100)]

    limit = settings.AXES_FAILURE_LIMIT
    # Wrong passwords show the form again (200) until the limit, then the lockout page (429).
    assert statuses[: limit - 1] == [200] * (limit - 1)
    assert statuses[limit:] == [429] * (100 - limit)

    # Locked: even the right password is refused, from the attacker's address or any other.
    for client in (attacker, Client(REMOTE_ADDR=ELSEWHERE)):
        response = log_in(client, "alice", "alice-password")
        assert response.status_code == 429
        assert "_auth_user_id" not in client.session
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "Try again in 15 minutes" in page
    assert "ask an administrator" in page
    assert response["Retry-After"] == "900"

    # Failures are logged with the username, never the password.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "alice" in logged and "login failure" in logged.lower()
    assert "guess-" not in logged
    assert "alice-password" not in logged


def test_another_member_elsewhere_is_unaffected(alice, bob):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for i in range(20):
        log_in(attacker, "alice", f"guess-{i}")

    bob_client = Client(REMOTE_ADDR=ELSEWHERE)
    response = log_in(bob_client, "bob", "bob-password")
    assert response.status_code == 302
    assert bob_client.session["_auth_user_id"] == str(bob.pk)


def test_the_attackers_address_is_locked_for_every_account(alice, bob):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for i in range(20):
        log_in(attacker, "alice", f"guess-{i}")
    assert log_in(attacker, "bob", "bob-password").status_code == 429


def test_the_admin_login_is_throttled_too(admin_user):
    attacker = Client(REMOTE_ADDR=ATTACKER)
    for i in range(20):
        log_in(attacker, "admin", f"guess-{i}", path="/admin/login/")
    response = log_in(attacker, "admin", "password", path="/admin/login/")
    assert response.status_code == 429
    assert "_auth_user_id" not in attacker.session


def test_an_admin_unlocks_an_account_with_axes_reset_username(alice):
    from django.core.management import call_command

    for i in range(20):
        log_in(Client(REMOTE_ADDR=ATTACKER), "alice", f"guess-{i}")
    member = Client(REMOTE_ADDR=ELSEWHERE)
    assert log_in(member, "alice", "alice-password").status_code == 429

    call_command("axes_reset_username", "alice")
    assert log_in(member, "alice", "alice-password").status_code == 302


def test_a_successful_login_forgets_earlier_failures(alice, settings):
    member = Client(REMOTE_ADDR=ELSEWHERE)
    for _ in range(3):
        for i in range(settings.AXES_FAILURE_LIMIT - 1):
            log_in(member, "alice", f"typo-{i}")
        assert log_in(member, "alice", "alice-password").status_code == 302
        member.logout()

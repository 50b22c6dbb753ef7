"""Sign-up by the SIGNUP rule: `invite` (the default: only with an invitation), `open` (anyone, at
/signup/), `approval` (anyone, pending until staff approve on the Members page) and `closed`.

People: dave and erin sign up by themselves; root is staff and approves or rejects them; alice
is a member, who may not.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.models import PendingApproval
from tests import live

pytestmark = pytest.mark.django_db

User = get_user_model()
DAVE = {"username": "dave", "password1": "a long sea view", "password2": "a long sea view"}


@pytest.fixture
def staff_client(db) -> Client:
    """Root is staff."""
    client = Client()
    client.force_login(User.objects.create_user("root", password="root-password", is_staff=True))
    return client


def log_in(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- invite (the default) and closed ----------------------------------------------------------
@pytest.mark.parametrize("mode", ["invite", "closed"])
def test_without_open_signup_there_is_no_signup_page_and_no_link_to_it(client, settings, mode):
    settings.SIGNUP = mode
    assert "Create an account" not in client.get("/login/").content.decode()
    assert client.get("/signup/").status_code == 404
    assert client.post("/signup/", DAVE).status_code == 404
    assert not User.objects.exists()


def test_the_default_is_invitations_only(settings):
    assert settings.SIGNUP == "invite"


# --- open ---------------------------------------------------------------------------------------
def test_with_open_signup_anyone_makes_an_account_and_lands_in_the_chat(client, settings):
    settings.SIGNUP = "open"
    login_page = client.get("/login/").content.decode()
    assert '<a href="/signup/">Create an account</a>' in login_page

    page = client.get("/signup/").content.decode()
    assert "<h1>Create an account</h1>" in page
    for label in ("Username", "Password", "Password (again)"):
        assert f">{label}</label>" in page
    assert ">Create account</button>" in page

    response = client.post("/signup/", DAVE)

    assert response.status_code == 302
    assert response["Location"] == "/"
    dave = User.objects.get(username="dave")
    assert dave.is_active and not dave.is_staff
    assert client.session["_auth_user_id"] == str(dave.pk)
    assert not PendingApproval.objects.exists()


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({**DAVE, "password2": "another sea view"}, "The two password fields didn"),
        ({**DAVE, "password1": "12345678901", "password2": "12345678901"}, "entirely numeric"),
        ({**DAVE, "password1": "dave", "password2": "dave"}, "too short"),
        ({**DAVE, "username": "ALICE"}, "A user with that username already exists."),
        ({**DAVE, "username": "x" * 151}, "at most 150 characters"),
    ],
)
def test_bad_input_on_the_signup_page_says_why_and_makes_nothing(
    client, settings, alice, form, error
):
    settings.SIGNUP = "open"
    response = client.post("/signup/", form)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]
    assert not logged_in(client)


def test_someone_logged_in_is_sent_to_the_chat_from_the_signup_page(client, settings, alice):
    settings.SIGNUP = "open"
    client.force_login(alice)
    assert client.get("/signup/")["Location"] == "/"


def test_with_oidc_only_the_signup_page_offers_only_single_sign_on(client, settings):
    settings.SIGNUP = "open"
    settings.OIDC_ISSUER_URL = "https://id.example.com"
    settings.OIDC_NAME = "Acme ID"
    settings.OIDC_ONLY = True
    page = client.get("/signup/").content.decode()
    assert "Sign in with Acme ID" in page
    assert 'name="password1"' not in page
    # The login page has the same button; no second way to the same place.
    assert "Create an account" not in client.get("/login/").content.decode()

    response = client.post("/signup/", DAVE)

    assert response.status_code == 403
    assert not User.objects.exists()


def test_with_email_configured_the_signup_form_asks_for_an_optional_address(client, settings):
    settings.SIGNUP = "open"
    settings.EMAIL_URL = "smtp://127.0.0.1:9"
    assert "Email (optional)" in client.get("/signup/").content.decode()
    client.post("/signup/", {**DAVE, "email": "dave@example.com"})
    assert User.objects.get(username="dave").email == "dave@example.com"
    client.logout()
    client.post("/signup/", {**DAVE, "username": "erin"})
    assert User.objects.get(username="erin").email == ""


# --- approval -----------------------------------------------------------------------------------
def test_with_approval_a_new_account_waits_and_cannot_log_in(client, settings):
    settings.SIGNUP = "approval"

    response = client.post("/signup/", DAVE)

    assert response.status_code == 200
    assert "Your account is waiting for an administrator's approval." in response.content.decode()
    assert not logged_in(client)
    dave = User.objects.get(username="dave")
    assert not dave.is_active
    assert PendingApproval.objects.get().user == dave

    # The right password: the same message, not "didn't match"; still not logged in.
    response = log_in(client, "dave", "a long sea view")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Your account is waiting for an administrator's approval." in page
    assert "didn't match" not in page
    assert not logged_in(client)
    # A wrong password: the usual error, which says nothing about the account.
    page = log_in(client, "dave", "a wrong guess").content.decode()
    assert "didn't match" in page
    assert "waiting" not in page
    assert not logged_in(client)


def test_a_deactivated_member_is_not_told_they_are_waiting_for_approval(client, alice):
    alice.is_active = False
    alice.save()
    page = log_in(client, "alice", "alice-password").content.decode()
    assert "didn't match" in page
    assert "waiting" not in page


def test_a_locked_out_pending_member_is_not_told_the_password_is_right(client, settings):
    settings.SIGNUP = "approval"
    client.post("/signup/", DAVE)
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "dave", f"guess-{n}")
    response = log_in(client, "dave", "a long sea view")
    assert response.status_code == 429
    assert "waiting" not in response.content.decode()


def test_a_pending_member_who_keeps_checking_with_the_right_password_is_not_locked_out(
    client, settings
):
    settings.SIGNUP = "approval"
    client.post("/signup/", DAVE)
    log_in(client, "dave", "a wrong guess")  # a typo first: it counts, and is then forgiven
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        response = log_in(client, "dave", "a long sea view")
        assert response.status_code == 200
        assert "Your account is waiting for an administrator's approval." in (
            response.content.decode()
        )
    # Wrong passwords still count from zero: the limit's worth locks the name out.
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "dave", f"guess-{n}")
    assert log_in(client, "dave", "a long sea view").status_code == 429


def test_staff_approve_a_waiting_account_on_the_members_page(client, settings, staff_client):
    settings.SIGNUP = "approval"
    client.post("/signup/", DAVE)
    dave = User.objects.get(username="dave")

    page = staff_client.get("/team/members/").content.decode()
    assert "Waiting for approval" in page
    assert f'action="/team/members/{dave.pk}/approve/"' in page
    assert ">Approve</button>" in page and ">Reject</button>" in page

    response = staff_client.post(f"/team/members/{dave.pk}/approve/", follow=True)

    assert "dave may now log in." in response.content.decode()
    dave.refresh_from_db()
    assert dave.is_active
    assert not PendingApproval.objects.exists()
    assert log_in(client, "dave", "a long sea view")["Location"] == "/"
    # Approving again finds nobody waiting.
    response = staff_client.post(f"/team/members/{dave.pk}/approve/", follow=True)
    assert "not waiting for approval" in response.content.decode()


def test_staff_reject_a_waiting_account_which_is_deleted(client, settings, staff_client):
    settings.SIGNUP = "approval"
    client.post("/signup/", DAVE)
    dave = User.objects.get(username="dave")

    response = staff_client.post(f"/team/members/{dave.pk}/reject/", follow=True)

    assert "dave&#x27;s account was rejected and deleted." in response.content.decode()
    assert not User.objects.filter(username="dave").exists()
    assert not PendingApproval.objects.exists()
    assert "didn't match" in log_in(client, "dave", "a long sea view").content.decode()


def test_approve_and_reject_touch_only_accounts_that_are_waiting(staff_client, alice):
    alice.is_active = False  # deactivated by an administrator, not waiting
    alice.save()
    for action in ("approve", "reject"):
        response = staff_client.post(f"/team/members/{alice.pk}/{action}/", follow=True)
        assert "not waiting for approval" in response.content.decode()
    alice.refresh_from_db()
    assert not alice.is_active


def test_members_cannot_approve_or_reject(client, settings, alice):
    settings.SIGNUP = "approval"
    Client().post("/signup/", DAVE)
    dave = User.objects.get(username="dave")
    client.force_login(alice)
    for action in ("approve", "reject"):
        assert client.post(f"/team/members/{dave.pk}/{action}/").status_code == 404
    assert client.get(f"/team/members/{dave.pk}/approve/").status_code == 404
    dave.refresh_from_db()
    assert not dave.is_active
    assert PendingApproval.objects.filter(user=dave).exists()


def test_with_approval_an_invitation_skips_the_wait(client, settings, staff_client):
    from accounts import signup

    settings.SIGNUP = "approval"
    root = User.objects.get(username="root")
    _, token = signup.create_invitation(created_by=root)
    client.get(f"/invite/{token}/")
    assert client.post("/invite/", DAVE)["Location"] == "/"
    assert User.objects.get(username="dave").is_active
    assert not PendingApproval.objects.exists()


# --- The settings -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIGNUP": "everyone"}, "SIGNUP must be closed, invite, open or approval"),
        ({"INVITATION_DAYS": "0"}, "INVITATION_DAYS must be 1 to 365"),
    ],
)
def test_a_wrong_signup_setting_stops_the_start(env, message):
    result = live.production_settings(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_sign_ups_from_one_address_are_limited_and_the_refused_one_makes_no_account(
    client, settings
):
    settings.SIGNUP = "open"
    settings.RATE_LIMIT_ACCOUNT_REQUESTS = "1/hour"
    # A form with errors counts too: each attempt may create an account.
    client.post("/signup/", {**DAVE, "password2": "something else"})

    refused = client.post("/signup/", DAVE)

    assert refused.status_code == 429
    assert "Too many sign-up or password reset requests" in refused.content.decode()
    assert not User.objects.filter(username="dave").exists()

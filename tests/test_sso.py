"""Single sign-on with OpenID Connect, against a real provider on 127.0.0.1 (tests/oidc.py):
members are their provider `sub`, never an email address; groups, staff and refusals follow
the provider's groups claim at every sign-in; OIDC_ONLY turns passwords off.

People: carol signs in with the provider; alice is a local member (password, made in the
admin) whose username and email address carol's provider account also claims.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.socialaccount.models import SocialAccount, SocialApp
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.checks import run_checks
from django.test import Client
from django.utils import timezone

from accounts import signup
from accounts.checks import OIDC_ISSUER_NOT_HTTPS
from accounts.groups import claim_at, group_names, may_sign_in
from accounts.models import Invitation, PendingApproval
from characters.models import Character, Visibility
from chat import actions
from chat.access import session_user
from tests import live, oidc
from tests.fake_upstream import Reply
from tests.oidc import NAME, PROVIDER_ID

oidc_provider = oidc.oidc_provider

pytestmark = pytest.mark.django_db

User = get_user_model()
LOGIN_URL = f"/accounts/oidc/{PROVIDER_ID}/login/"
CAROL = {
    "preferred_username": "carol",
    "email": "carol@example.com",
    "email_verified": True,
    "given_name": "Carol",
    "family_name": "Lee",
}


@pytest.fixture
def sso(settings, oidc_provider):
    """Single sign-on on, with the provider; call it again to change OIDC_* settings.

    With SIGNUP=open, so that a first sign-in makes an account: most tests here are about
    signing in itself. The default (invitations only) and the other rules have their own tests
    ("Who may join", below)."""

    def configure(**overrides):
        for name, value in oidc_provider.settings(**overrides).items():
            setattr(settings, name, value)

    settings.SIGNUP = "open"
    configure()
    return configure


def start_sign_in(client: Client, next_url: str | None = None) -> str:
    """Press "Sign in with …": the provider's authorize URL we are sent to."""
    response = client.post(LOGIN_URL, {"next": next_url} if next_url else {})
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(django_settings.OIDC_ISSUER_URL)
    return response["Location"]


def sign_in(client: Client, provider, sub: str, next_url: str | None = None):
    """The whole round trip: our button, the provider's form as `sub`, our callback (where
    allauth swaps the code for tokens over HTTP)."""
    callback = provider.authorize(start_sign_in(client, next_url), sub)
    return client.get(callback)


def logged_in_user(client: Client):
    return session_user(client.session.session_key)


# --- Signing in -------------------------------------------------------------------------------
def test_a_first_sign_in_makes_a_member_bound_to_the_providers_sub(client, sso, oidc_provider):
    oidc_provider.set_user("sub-carol", CAROL)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 302
    assert response["Location"] == "/"
    carol = User.objects.get(username="carol")
    account = SocialAccount.objects.get(user=carol)
    assert (account.provider, account.uid) == (PROVIDER_ID, "sub-carol")
    assert (carol.email, carol.first_name, carol.last_name) == ("carol@example.com", "Carol", "Lee")
    # No password: the password login can never open this account.
    assert not carol.has_usable_password()
    assert not carol.is_staff
    # The session names a backend the project lists, so pages and the chat socket
    # (chat/access.py's session_user, through auth.get_user) both find carol.
    assert client.session["_auth_user_backend"] in django_settings.AUTHENTICATION_BACKENDS
    assert logged_in_user(client) == carol
    assert client.get("/").status_code == 200


def test_an_issuer_url_ending_in_a_slash_works_too(client, sso, oidc_provider):
    sso(OIDC_ISSUER_URL=f"{oidc_provider.url}/")
    oidc_provider.set_user("sub-carol", CAROL)
    assert sign_in(client, oidc_provider, "sub-carol")["Location"] == "/"
    assert logged_in_user(client).username == "carol"


def test_a_provider_added_in_the_database_is_ignored(client, sso):
    SocialApp.objects.create(
        provider="openid_connect",
        provider_id="rogue",
        name="Rogue",
        client_id="x",
        secret="y",
        settings={"server_url": "http://127.0.0.1:9"},
    )
    assert client.post("/accounts/oidc/rogue/login/").status_code == 404


def test_the_sign_in_asks_for_the_configured_scopes_with_pkce(client, sso):
    query = parse_qs(urlsplit(start_sign_in(client)).query)
    assert set(query["scope"][0].split()) == {"openid", "profile", "email"}
    assert query["client_id"] == ["serika-web"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [f"http://testserver{LOGIN_URL}callback/"]


def test_a_sign_in_goes_back_to_the_page_asked_for(client, sso, oidc_provider, character):
    oidc_provider.set_user("sub-carol", CAROL)
    response = sign_in(client, oidc_provider, "sub-carol", next_url="/characters/")
    assert response["Location"] == "/characters/"
    # Somewhere else is not "back".
    client.logout()
    response = sign_in(client, oidc_provider, "sub-carol", next_url="https://evil.example/")
    assert response["Location"] == "/"


def test_a_second_sign_in_with_a_new_email_and_username_is_the_same_member(
    client, sso, oidc_provider
):
    oidc_provider.set_user("sub-carol", CAROL)
    sign_in(client, oidc_provider, "sub-carol")
    carol = User.objects.get(username="carol")
    client.logout()

    oidc_provider.set_user(
        "sub-carol",
        {**CAROL, "preferred_username": "carol.lee", "email": "c.lee@example.org", "name": "C L"},
    )
    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 302
    assert logged_in_user(client) == carol
    assert User.objects.count() == 1
    carol.refresh_from_db()
    # The address follows the provider; the username, once chosen, stays.
    assert carol.email == "c.lee@example.org"
    assert carol.username == "carol"
    assert SocialAccount.objects.get().extra_data["userinfo"]["email"] == "c.lee@example.org"


def test_a_local_member_with_the_same_email_and_username_is_not_taken_over(
    client, sso, oidc_provider
):
    alice = User.objects.create_user("alice", email="alice@example.com", password="alice-password")
    # Whoever controls this provider account claims alice's name and (verified) address.
    oidc_provider.set_user(
        "sub-mallory",
        {"preferred_username": "Alice", "email": "alice@example.com", "email_verified": True},
    )

    response = sign_in(client, oidc_provider, "sub-mallory")

    assert response.status_code == 302
    newcomer = logged_in_user(client)
    assert newcomer.pk != alice.pk
    # A username of its own, not alice's in another letter case.
    assert newcomer.username.lower() != "alice"
    assert newcomer.username.startswith("alice")
    assert SocialAccount.objects.get(uid="sub-mallory").user == newcomer
    alice.refresh_from_db()
    assert alice.check_password("alice-password")
    assert not SocialAccount.objects.filter(user=alice).exists()
    # And alice's password still logs alice in.
    other = Client()
    assert (
        other.post("/login/", {"username": "alice", "password": "alice-password"}).status_code
        == 302
    )
    assert logged_in_user(other) == alice


def test_a_member_logged_in_with_a_password_who_signs_in_becomes_the_sso_member(
    client, sso, oidc_provider, alice
):
    client.force_login(alice)
    oidc_provider.set_user("sub-carol", CAROL)
    sign_in(client, oidc_provider, "sub-carol")
    # Never linked to alice: the session is carol's now, alice has no provider identity.
    assert logged_in_user(client).username == "carol"
    assert not SocialAccount.objects.filter(user=alice).exists()


def test_linking_a_provider_account_to_a_logged_in_member_is_refused(
    client, sso, oidc_provider, alice
):
    client.force_login(alice)
    oidc_provider.set_user("sub-carol", CAROL)
    response = client.post(LOGIN_URL, {"process": "connect"})
    callback = oidc_provider.authorize(response["Location"], "sub-carol")
    response = client.get(callback)
    assert response.status_code == 400
    assert "not linking accounts" in response.content.decode()
    assert not SocialAccount.objects.exists()


def test_a_deactivated_member_cannot_sign_in(client, sso, oidc_provider):
    oidc_provider.set_user("sub-carol", CAROL)
    sign_in(client, oidc_provider, "sub-carol")
    User.objects.filter(username="carol").update(is_active=False)
    client.logout()

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 403
    assert "deactivated" in response.content.decode()
    assert logged_in_user(client).is_anonymous


def test_a_sign_in_cancelled_at_the_provider_says_so(client, sso, oidc_provider):
    callback = oidc_provider.deny(start_sign_in(client))
    response = client.get(callback)
    assert "Sign-in cancelled" in response.content.decode()
    assert logged_in_user(client).is_anonymous
    assert not User.objects.exists()


def test_a_forged_callback_is_refused(client, sso):
    response = client.get(f"{LOGIN_URL}callback/?code=made-up&state=made-up")
    assert response.status_code == 401
    assert "Sign-in failed" in response.content.decode()
    assert logged_in_user(client).is_anonymous


# --- Groups ----------------------------------------------------------------------------------
def test_groups_follow_the_claim_at_every_sign_in(client, sso, oidc_provider, character):
    sso(OIDC_GROUPS_CLAIM="groups")
    engineering = Group.objects.create(name="engineering")
    sales = Group.objects.create(name="sales")
    reviewers = Group.objects.create(name="reviewers")
    character.visibility = Visibility.GROUPS
    character.save()
    character.groups.add(engineering)

    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["engineering", "design"]})
    sign_in(client, oidc_provider, "sub-carol")
    carol = User.objects.get(username="carol")
    assert set(carol.groups.all()) == {engineering}
    # A name with no group here makes none: groups are made in the admin.
    assert not Group.objects.filter(name="design").exists()
    assert Character.objects.visible_to(carol).get() == character

    # An administrator adds carol to a group by hand; the provider moves her to sales.
    carol.groups.add(reviewers)
    client.logout()
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["sales"]})
    sign_in(client, oidc_provider, "sub-carol")

    assert set(carol.groups.all()) == {sales, reviewers}
    assert not Character.objects.visible_to(carol).exists()

    # A provider that leaves the claim out (a member of no group) takes sign-in's groups away.
    client.logout()
    oidc_provider.set_user("sub-carol", CAROL)
    sign_in(client, oidc_provider, "sub-carol")
    assert set(carol.groups.all()) == {reviewers}


def test_a_group_given_by_hand_stays_when_the_claim_drops_it(client, sso, oidc_provider):
    sso(OIDC_GROUPS_CLAIM="groups")
    engineering = Group.objects.create(name="engineering")
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": []})
    sign_in(client, oidc_provider, "sub-carol")
    carol = User.objects.get(username="carol")
    carol.groups.add(engineering)  # by hand, in the admin

    for groups in (["engineering"], []):
        client.logout()
        oidc_provider.set_user("sub-carol", {**CAROL, "groups": groups})
        sign_in(client, oidc_provider, "sub-carol")
        assert set(carol.groups.all()) == {engineering}


def test_groups_can_come_from_a_dotted_claim_path(client, sso, oidc_provider):
    sso(OIDC_GROUPS_CLAIM="realm_access.roles")
    engineering = Group.objects.create(name="engineering")
    oidc_provider.set_user(
        "sub-carol", {**CAROL, "realm_access": {"roles": ["engineering", "offline_access"]}}
    )
    sign_in(client, oidc_provider, "sub-carol")
    assert set(User.objects.get(username="carol").groups.all()) == {engineering}


def test_only_members_of_the_allowed_groups_may_sign_in_and_nothing_of_others_is_saved(
    client, sso, oidc_provider
):
    sso(OIDC_GROUPS_CLAIM="groups", OIDC_ALLOWED_GROUPS=["chat-users"])
    oidc_provider.set_user("sub-dave", {"preferred_username": "dave", "groups": ["finance"]})

    response = sign_in(client, oidc_provider, "sub-dave")

    assert response.status_code == 403
    page = response.content.decode()
    assert "You may not use this site" in page
    assert f"Your {NAME} account is not in a group that may use this site" in page
    assert logged_in_user(client).is_anonymous
    assert not User.objects.exists()
    assert not SocialAccount.objects.exists()

    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-users"]})
    assert sign_in(client, oidc_provider, "sub-carol").status_code == 302
    assert logged_in_user(client).username == "carol"


def test_a_member_who_leaves_the_allowed_groups_is_refused_next_time(client, sso, oidc_provider):
    sso(OIDC_GROUPS_CLAIM="groups", OIDC_ALLOWED_GROUPS=["chat-users"])
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-users"]})
    sign_in(client, oidc_provider, "sub-carol")
    client.logout()

    oidc_provider.set_user("sub-carol", {**CAROL, "groups": []})
    assert sign_in(client, oidc_provider, "sub-carol").status_code == 403
    assert logged_in_user(client).is_anonymous


def test_the_admin_groups_make_staff_and_take_it_away(client, sso, oidc_provider):
    sso(
        OIDC_GROUPS_CLAIM="groups",
        OIDC_ALLOWED_GROUPS=["chat-users"],
        OIDC_ADMIN_GROUPS=["chat-admins"],
    )
    # An admin group is enough to be let in.
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-admins"]})
    sign_in(client, oidc_provider, "sub-carol")
    carol = User.objects.get(username="carol")
    assert carol.is_staff
    assert client.get("/admin/").status_code == 200

    client.logout()
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-users"]})
    sign_in(client, oidc_provider, "sub-carol")
    carol.refresh_from_db()
    assert not carol.is_staff
    assert client.get("/admin/").status_code == 302


def test_without_admin_groups_staff_given_by_hand_stays(client, sso, oidc_provider):
    sso(OIDC_GROUPS_CLAIM="groups")
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-admins"]})
    sign_in(client, oidc_provider, "sub-carol")
    User.objects.filter(username="carol").update(is_staff=True)
    client.logout()
    sign_in(client, oidc_provider, "sub-carol")
    assert User.objects.get(username="carol").is_staff


# --- Who may join (SIGNUP) --------------------------------------------------------------------
def open_invitation_link(client: Client, **options) -> Invitation:
    """An administrator's invitation, whose link `client` opens (keeping it in its session)."""
    root = User.objects.filter(username="root").first() or User.objects.create_superuser(
        "root", password="root-password"
    )
    invitation, token = signup.create_invitation(created_by=root, **options)
    assert client.get(f"/invite/{token}/")["Location"] == "/invite/"
    return invitation


def test_by_default_a_first_sign_in_needs_an_invitation_and_nothing_is_saved(
    client, settings, sso, oidc_provider
):
    settings.SIGNUP = "invite"
    oidc_provider.set_user("sub-carol", CAROL)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 403
    page = response.content.decode()
    assert "You need an invitation" in page
    assert "Ask an administrator for an invitation link" in page
    assert logged_in_user(client).is_anonymous
    assert not User.objects.exists()
    assert not SocialAccount.objects.exists()


def test_an_invitation_opened_before_signing_in_makes_the_account_and_gives_its_groups(
    client, settings, sso, oidc_provider
):
    settings.SIGNUP = "invite"
    engineering = Group.objects.create(name="engineering")
    invitation = open_invitation_link(client, label="Carol", groups=[engineering])
    # The invitation page offers the provider's button beside the password form.
    page = client.get("/invite/").content.decode()
    assert f"Sign in with {NAME}" in page and f'action="{LOGIN_URL}"' in page
    oidc_provider.set_user("sub-carol", CAROL)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 302
    assert response["Location"] == "/"
    carol = User.objects.get(username="carol")
    assert logged_in_user(client) == carol
    assert set(carol.groups.all()) == {engineering}
    invitation.refresh_from_db()
    assert invitation.used_by == carol
    assert signup.SESSION_KEY not in client.session
    # Used: the link opens nothing any more, and the next newcomer needs one of their own.
    assert Client().get(f"/invite/{'x' * 43}/").status_code == 404
    client.logout()
    oidc_provider.set_user("sub-dave", {"preferred_username": "dave"})
    assert sign_in(client, oidc_provider, "sub-dave").status_code == 403
    assert not User.objects.filter(username="dave").exists()


def test_an_invitation_used_meanwhile_does_not_let_a_first_sign_in_through(
    client, settings, sso, oidc_provider, alice
):
    settings.SIGNUP = "invite"
    invitation = open_invitation_link(client)
    Invitation.objects.filter(pk=invitation.pk).update(used_at=timezone.now(), used_by=alice)
    oidc_provider.set_user("sub-carol", CAROL)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 403
    assert not User.objects.filter(username="carol").exists()
    invitation.refresh_from_db()
    assert invitation.used_by == alice


def test_an_invitation_taken_between_the_check_and_the_account_rolls_the_account_back(
    client, settings, sso, oidc_provider, alice, monkeypatch
):
    """Two people racing with one link: the conditional UPDATE in the account's transaction
    decides, and the loser's account is not kept. (The other person's use is simulated inside
    this test's own transaction, so it is rolled back with the account; tests/test_invitations.py
    races two real connections.)"""
    settings.SIGNUP = "invite"
    open_invitation_link(client)
    oidc_provider.set_user("sub-carol", CAROL)
    real_redeem = signup.redeem_invitation

    def someone_else_first(invitation_id, user):
        Invitation.objects.filter(pk=invitation_id).update(used_at=timezone.now(), used_by=alice)
        real_redeem(invitation_id, user)

    monkeypatch.setattr(signup, "redeem_invitation", someone_else_first)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 410
    assert "already used" in response.content.decode()
    assert not User.objects.filter(username="carol").exists()
    assert not SocialAccount.objects.exists()
    assert logged_in_user(client).is_anonymous
    assert signup.SESSION_KEY not in client.session


def test_a_returning_member_is_never_affected_by_the_rule(client, settings, sso, oidc_provider):
    oidc_provider.set_user("sub-carol", CAROL)
    sign_in(client, oidc_provider, "sub-carol")
    carol = User.objects.get(username="carol")
    for mode in ("closed", "invite", "approval"):
        settings.SIGNUP = mode
        client.logout()
        assert sign_in(client, oidc_provider, "sub-carol").status_code == 302
        assert logged_in_user(client) == carol
    assert not PendingApproval.objects.exists()


def test_closed_refuses_every_first_sign_in(client, settings, sso, oidc_provider):
    settings.SIGNUP = "closed"
    sso(OIDC_GROUPS_CLAIM="groups", OIDC_ALLOWED_GROUPS=["chat-users"])
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-users"]})

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 403
    assert "an administrator adds members" in response.content.decode()
    assert not User.objects.exists()


def test_with_invitations_only_the_allowed_groups_still_let_their_members_join(
    client, settings, sso, oidc_provider
):
    settings.SIGNUP = "invite"
    sso(OIDC_GROUPS_CLAIM="groups", OIDC_ALLOWED_GROUPS=["chat-users"])
    oidc_provider.set_user("sub-carol", {**CAROL, "groups": ["chat-users"]})
    assert sign_in(client, oidc_provider, "sub-carol").status_code == 302
    assert logged_in_user(client).username == "carol"


def test_with_invitations_only_members_of_the_admin_groups_join_as_staff(
    client, settings, sso, oidc_provider
):
    settings.SIGNUP = "invite"
    sso(OIDC_GROUPS_CLAIM="groups", OIDC_ADMIN_GROUPS=["chat-admins"])
    oidc_provider.set_user("sub-erin", {"preferred_username": "erin", "groups": ["chat-admins"]})
    oidc_provider.set_user("sub-dave", {"preferred_username": "dave", "groups": ["finance"]})

    assert sign_in(client, oidc_provider, "sub-erin").status_code == 302
    assert User.objects.get(username="erin").is_staff
    client.logout()
    assert sign_in(client, oidc_provider, "sub-dave").status_code == 403
    assert not User.objects.filter(username="dave").exists()


def test_open_signup_lets_any_first_sign_in_make_an_account(client, settings, sso, oidc_provider):
    settings.SIGNUP = "open"
    oidc_provider.set_user("sub-carol", CAROL)
    assert sign_in(client, oidc_provider, "sub-carol")["Location"] == "/"
    assert User.objects.get(username="carol").is_active


def test_with_approval_a_first_sign_in_waits_until_staff_approve_it(
    client, settings, sso, oidc_provider, admin_client
):
    settings.SIGNUP = "approval"
    oidc_provider.set_user("sub-carol", CAROL)

    response = sign_in(client, oidc_provider, "sub-carol")

    assert response.status_code == 200
    assert "Your account is waiting for an administrator's approval." in response.content.decode()
    assert logged_in_user(client).is_anonymous
    carol = User.objects.get(username="carol")
    assert not carol.is_active
    assert PendingApproval.objects.get().user == carol
    # Signing in again says the same, until staff approve the account on the Members page.
    response = sign_in(client, oidc_provider, "sub-carol")
    assert "waiting for an administrator" in response.content.decode()
    assert logged_in_user(client).is_anonymous
    assert "carol" in admin_client.get("/team/members/").content.decode()

    admin_client.post(f"/team/members/{carol.pk}/approve/")

    assert sign_in(client, oidc_provider, "sub-carol")["Location"] == "/"
    assert logged_in_user(client) == carol


def test_with_approval_an_invitation_skips_the_wait(client, settings, sso, oidc_provider):
    settings.SIGNUP = "approval"
    open_invitation_link(client)
    oidc_provider.set_user("sub-carol", CAROL)
    assert sign_in(client, oidc_provider, "sub-carol")["Location"] == "/"
    assert logged_in_user(client).is_active
    assert not PendingApproval.objects.exists()


# --- The login page and OIDC_ONLY ------------------------------------------------------------
def test_the_login_page_offers_both_ways_in(client, sso):
    page = client.get("/login/?next=/characters/").content.decode()
    assert f"Sign in with {NAME}" in page
    assert f'action="{LOGIN_URL}"' in page
    assert 'name="next" value="/characters/"' in page
    assert 'name="username"' in page and ">Log in</button>" in page


def test_without_sso_the_login_page_has_no_button(client):
    page = client.get("/login/").content.decode()
    assert "Sign in with" not in page
    assert 'name="username"' in page
    # And the sign-in URL leads nowhere.
    assert client.post(LOGIN_URL).status_code == 404


def test_oidc_only_shows_the_button_alone_and_refuses_passwords(client, sso, oidc_provider, alice):
    sso(OIDC_ONLY=True)

    page = client.get("/login/").content.decode()
    assert f"Sign in with {NAME}" in page
    assert 'name="password"' not in page

    response = client.post("/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 403
    assert "Logging in with a password is turned off" in response.content.decode()
    assert logged_in_user(client).is_anonymous
    # No password was checked, so nothing counts towards a lockout either.
    assert not AccessAttempt.objects.exists()

    # The admin's login too: a password is refused, and the page sends people to the button.
    admin_user = User.objects.create_superuser("admin", password="admin-password")
    response = client.post(
        "/admin/login/", {"username": admin_user.username, "password": "admin-password"}
    )
    assert response.status_code == 403
    assert logged_in_user(client).is_anonymous
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == "/login/?next=%2Fadmin%2F"

    # Signing in with the provider still works.
    oidc_provider.set_user("sub-carol", CAROL)
    assert sign_in(client, oidc_provider, "sub-carol").status_code == 302
    assert not logged_in_user(client).is_anonymous


def test_oidc_only_shows_the_admin_page_to_a_member_who_is_not_staff(client, sso, alice):
    sso(OIDC_ONLY=True)
    client.force_login(alice)
    response = client.get("/admin/", follow=True)
    assert response.status_code == 200
    assert "not authorized to access this page" in response.content.decode()


# --- The chat socket ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_member_who_signed_in_with_the_provider_chats_over_the_socket(
    connect, upstream, sso, oidc_provider, character
):
    oidc_provider.set_user("sub-carol", CAROL)
    client = Client()
    await sync_to_async(sign_in)(client, oidc_provider, "sub-carol")
    carol = await User.objects.aget(username="carol")
    conversation = await sync_to_async(actions.start_conversation)(carol, character)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value

    ws = await connect(
        None,
        conversation.pk,
        extra_headers=[(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode())],
    )

    assert ws.connected
    await ws.send({"type": "sync", "after": 0})
    sync = await ws.receive()
    assert sync["type"] == "conversation.sync"
    assert [m["content"] for m in sync["messages"]] == ["Hello Carol, I am Serika!"]
    # Every frame looks the session up again (chat/access.py): the SSO session holds.
    upstream.enqueue(Reply(tokens=["Hello ", "Carol!"]))
    await ws.send({"type": "message.send", "content": "Hi"})
    done = await ws.done()
    assert (done["status"], done["content"]) == ("complete", "Hello Carol!")


# --- The rules, without a provider ----------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "path", "names"),
    [
        ({"groups": ["a", "b"]}, "groups", {"a", "b"}),
        ({"groups": "a"}, "groups", {"a"}),
        ({"groups": ["a", 7, None, {"x": 1}, True, ""]}, "groups", {"a", "7"}),
        ({"realm_access": {"roles": ["r"]}}, "realm_access.roles", {"r"}),
        (
            {"resource_access": {"my.client": {"roles": ["c"]}}},
            "resource_access.my.client.roles",
            {"c"},
        ),
        ({"https://example.com/groups": ["u"]}, "https://example.com/groups", {"u"}),
        ({"realm_access": ["not a dict"]}, "realm_access.roles", set()),
        ({}, "groups", set()),
    ],
)
def test_group_names_are_read_from_a_claim_path(claims, path, names):
    assert group_names([claims], path) == names


def test_userinfo_wins_over_the_id_token_and_the_id_token_fills_in():
    assert group_names([{"groups": ["u"]}, {"groups": ["t"]}], "groups") == {"u"}
    assert group_names([{}, {"groups": ["t"]}], "groups") == {"t"}
    assert claim_at({"a": {"b": None}}, "a.b") is None


def test_who_may_sign_in():
    assert may_sign_in(set(), allowed=[], admins=[])
    assert may_sign_in({"users"}, allowed=["users"], admins=["admins"])
    assert may_sign_in({"admins"}, allowed=["users"], admins=["admins"])
    assert not may_sign_in({"finance"}, allowed=["users"], admins=["admins"])
    assert not may_sign_in(set(), allowed=["users"], admins=[])


def test_check_deploy_refuses_an_issuer_over_plain_http(settings):
    settings.OIDC_ISSUER_URL = "http://id.example.com/realms/team"
    errors = [
        e for e in run_checks(include_deployment_checks=True) if e.id == OIDC_ISSUER_NOT_HTTPS
    ]
    assert len(errors) == 1
    for url in ("https://id.example.com/realms/team", "http://127.0.0.1:8080", ""):
        settings.OIDC_ISSUER_URL = url
        assert not [
            e for e in run_checks(include_deployment_checks=True) if e.id == OIDC_ISSUER_NOT_HTTPS
        ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OIDC_ISSUER_URL": "https://id.example.com", "OIDC_CLIENT_ID": "x"},
            "set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET",
        ),
        ({"OIDC_ONLY": "true"}, "OIDC_ONLY needs OIDC_ISSUER_URL"),
        ({"OIDC_ADMIN_GROUPS": "admins"}, "need OIDC_GROUPS_CLAIM"),
        (
            {
                "OIDC_ISSUER_URL": "https://id.example.com",
                "OIDC_CLIENT_ID": "x",
                "OIDC_CLIENT_SECRET": "y",
                "OIDC_SCOPES": "email",
            },
            "must include openid",
        ),
    ],
)
def test_settings_that_cannot_work_stop_the_start(env, message):
    result = live.production_settings(env, unset_prefix="OIDC_")
    assert result.returncode != 0
    assert message in result.stderr


def test_scopes_may_be_separated_by_spaces():
    result = live.production_settings({"OIDC_SCOPES": "openid profile,email groups"}, "OIDC_SCOPES")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [["openid", "profile", "email", "groups"]]


def test_the_admin_shows_provider_identities_and_managed_memberships(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Social accounts" in page
    assert "Group memberships from single sign-on" in page
    # Configured from the environment only; tokens are not stored; emails identify nobody.
    assert "Social applications" not in page
    assert "Social application tokens" not in page
    assert "Email addresses" not in page
    assert admin_client.get("/admin/accounts/ssomembership/").status_code == 200
    assert admin_client.get("/admin/socialaccount/socialaccount/").status_code == 200

"""Invitations: staff make single-use links on the Members page; a link makes one account, in
the invitation's groups, and then never again; used, expired, revoked and unknown links say so
and change nothing.

People: root is an administrator and makes the invitations; charlie is staff without permissions
in the admin; dave is the newcomer a link is for; alice is a member who must not reach the
Members page; erin races dave for one link.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

from accounts import signup
from accounts.models import Invitation, token_hash
from characters.models import Character, Visibility

pytestmark = pytest.mark.django_db

User = get_user_model()
DAVE = {"username": "dave", "password1": "a long sea view", "password2": "a long sea view"}


@pytest.fixture
def root(db):
    """Root is an administrator (a superuser): the Members page is theirs, every group too."""
    return User.objects.create_user(
        "root", password="root-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def engineering(db) -> Group:
    return Group.objects.create(name="engineering")


def invite(root, **options) -> tuple[Invitation, str]:
    return signup.create_invitation(created_by=root, **options)


def join(client: Client, token: str, form: dict | None = None):
    """Open the link (which keeps the invitation in the session), then send the form."""
    response = client.get(f"/invite/{token}/")
    if response.status_code != 302:
        return response
    assert response["Location"] == "/invite/"
    return client.post("/invite/", form or DAVE)


def logged_in_username(client: Client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


# --- Making invitations ---------------------------------------------------------------------
def test_staff_make_an_invitation_and_see_its_link_once(staff_client, root, engineering, caplog):
    page = staff_client.get("/team/members/").content.decode()
    assert "<h1>Members</h1>" in page
    assert ">Create invitation</button>" in page
    assert 'value="7"' in page  # INVITATION_DAYS

    with caplog.at_level(logging.DEBUG):
        response = staff_client.post(
            "/team/members/", {"label": "Dave", "days": "3", "groups": [engineering.pk]}
        )

    assert response.status_code == 200
    page = response.content.decode()
    [link] = re.findall(r'id="invitation-link" value="([^"]+)" readonly', page)
    assert ">Invitation link</label>" in page and ">Copy link</button>" in page
    token = re.fullmatch(r"http://testserver/invite/([A-Za-z0-9_-]{43})/", link)[1]
    invitation = Invitation.objects.get()
    assert invitation.token_hash == token_hash(token)
    assert (invitation.label, invitation.created_by) == ("Dave", root)
    assert set(invitation.groups.all()) == {engineering}
    expected = timezone.now() + timedelta(days=3)
    assert abs(invitation.expires_at - expected) < timedelta(minutes=1)
    # The token is nowhere but in that one answer: not stored, not logged, not shown again.
    assert token not in str(Invitation.objects.values().get())
    assert not [r for r in caplog.records if token in r.getMessage()]
    assert f"invitation {invitation.pk} made by root for 'Dave'" in caplog.text
    again = staff_client.get("/team/members/").content.decode()
    assert token not in again
    assert "Invitation link" not in again
    assert "Dave" in again and "Open" in again and ">Revoke</button>" in again


def test_members_cannot_see_the_members_page_or_make_invitations(alice, client):
    # Anonymous: the login page, as for the team's usage page.
    assert client.get("/team/members/")["Location"].startswith("/login/")
    client.force_login(alice)
    assert client.get("/team/members/").status_code == 404
    assert client.post("/team/members/", {"label": "x", "days": "7"}).status_code == 404
    assert not Invitation.objects.exists()
    page = client.get("/").content.decode()
    assert 'href="/team/members/"' not in page


def test_the_navigation_links_the_members_page_for_staff(staff_client):
    page = staff_client.get("/").content.decode()
    assert '<a href="/team/members/">Members</a>' in page


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"days": "0"}, "greater than or equal to 1"),
        ({"days": "366"}, "less than or equal to 365"),
        ({"days": "soon"}, "Enter a whole number"),
        ({"days": "7", "label": "x" * 101}, "at most 100 characters"),
        ({"days": "7", "groups": ["999999"]}, "Select a valid choice"),
    ],
)
def test_bad_input_on_the_members_page_says_why_and_makes_nothing(staff_client, form, error):
    response = staff_client.post("/team/members/", form)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert "Invitation link" not in response.content.decode()
    assert not Invitation.objects.exists()


def test_staff_without_account_permissions_invite_only_into_their_own_groups(engineering):
    """A group can carry permissions: charlie may not grant more than he has."""
    sales = Group.objects.create(name="sales")
    charlie = User.objects.create_user("charlie", password="charlie-password", is_staff=True)
    charlie.groups.add(engineering)
    client = Client()
    client.force_login(charlie)

    page = client.get("/team/members/").content.decode()
    assert f'value="{engineering.pk}"' in page
    assert f'value="{sales.pk}"' not in page
    assert "All accounts" not in page  # the admin's user list is not his either

    response = client.post("/team/members/", {"days": "7", "groups": [sales.pk]})
    assert "Select a valid choice" in response.content.decode()
    assert not Invitation.objects.exists()
    client.post("/team/members/", {"days": "7", "groups": [engineering.pk]})
    assert set(Invitation.objects.get().groups.all()) == {engineering}


def test_the_members_page_lists_invitations_in_a_fixed_number_of_queries(
    staff_client, root, engineering, alice, django_assert_max_num_queries
):
    for n in range(12):
        invitation, _ = invite(root, label=f"n{n}", groups=[engineering])
        if n % 3 == 0:
            signup.revoke_invitation(invitation.pk, root)
    with django_assert_max_num_queries(12):
        page = staff_client.get("/team/members/").content.decode()
    assert page.count(">Revoke</button>") == 8
    assert page.count(">Revoked</span>") == 4


# --- Using a link ---------------------------------------------------------------------------
def test_a_link_makes_one_account_in_its_groups_logs_it_in_and_opens_the_chat(
    root, engineering, client, caplog
):
    invitation, token = invite(root, label="Dave", groups=[engineering])
    with caplog.at_level(logging.DEBUG):
        response = client.get(f"/invite/{token}/")
        # The token leaves the address at once: the page is /invite/, from the session.
        assert response.status_code == 302
        assert response["Location"] == "/invite/"
        page = client.get("/invite/").content.decode()
        assert "<h1>Join Serika Web</h1>" in page
        for label in ("Username", "Password", "Password (again)"):
            assert f">{label}</label>" in page
        assert ">Create account</button>" in page
        assert "<strong>engineering</strong>" in page
        assert "Sign in with" not in page  # no single sign-on configured

        response = client.post("/invite/", DAVE)

    assert response.status_code == 302
    assert response["Location"] == "/"
    dave = User.objects.get(username="dave")
    assert logged_in_username(client) == "dave"
    assert dave.is_active and not dave.is_staff
    assert dave.check_password("a long sea view")
    assert set(dave.groups.all()) == {engineering}
    invitation.refresh_from_db()
    assert invitation.used_by == dave
    assert invitation.state() == "used"
    assert signup.SESSION_KEY not in client.session
    assert client.get("/").status_code == 200
    assert not [r for r in caplog.records if token in r.getMessage()]


def test_the_new_member_sees_what_the_invitations_groups_see_and_nothing_more(
    root, engineering, client, character
):
    sales = Group.objects.create(name="sales")
    character.visibility = Visibility.GROUPS
    character.save()
    character.groups.add(sales)
    shared = Character.objects.create(name="Engineer", visibility=Visibility.GROUPS)
    shared.groups.add(engineering)
    _, token = invite(root, groups=[engineering])

    join(client, token)

    dave = User.objects.get(username="dave")
    assert list(Character.objects.visible_to(dave)) == [shared]


def test_a_group_deleted_after_the_invitation_was_made_is_simply_left_out(
    root, engineering, client
):
    sales = Group.objects.create(name="sales")
    _, token = invite(root, groups=[engineering, sales])
    sales.delete()
    assert join(client, token).status_code == 302
    assert set(User.objects.get(username="dave").groups.all()) == {engineering}


def test_a_link_used_twice_is_refused_the_second_time_and_changes_nothing(root, client):
    _, token = invite(root)
    join(client, token)

    second = Client()
    response = second.get(f"/invite/{token}/")
    assert response.status_code == 410
    assert "This invitation was already used" in response.content.decode()
    # Nor can the second browser send the form without having opened a working link.
    response = second.post("/invite/", {**DAVE, "username": "erin"})
    assert response.status_code == 404
    assert list(User.objects.values_list("username", flat=True).order_by("pk")) == [
        "root",
        "dave",
    ]


def test_an_expired_link_is_refused(root, client):
    invitation, token = invite(root)
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = client.get(f"/invite/{token}/")
    assert response.status_code == 410
    assert "This invitation has expired" in response.content.decode()
    assert signup.SESSION_KEY not in client.session
    assert not User.objects.filter(username="dave").exists()


def test_a_revoked_link_is_refused(root, staff_client, client):
    invitation, token = invite(root, label="Dave")

    response = staff_client.post(f"/team/members/invitations/{invitation.pk}/revoke/", follow=True)

    assert "Invitation revoked" in response.content.decode()
    response = client.get(f"/invite/{token}/")
    assert response.status_code == 410
    assert "This invitation was withdrawn" in response.content.decode()
    assert not User.objects.filter(username="dave").exists()
    # Revoking again (or a used one) changes nothing and says so.
    response = staff_client.post(f"/team/members/invitations/{invitation.pk}/revoke/", follow=True)
    assert "already used, revoked or expired" in response.content.decode()


def test_a_member_cannot_revoke_an_invitation(root, alice, client):
    invitation, _ = invite(root)
    client.force_login(alice)
    assert client.post(f"/team/members/invitations/{invitation.pk}/revoke/").status_code == 404
    invitation.refresh_from_db()
    assert invitation.state() == "open"


@pytest.mark.parametrize("token", ["x" * 43, "short", "a" * 300])
def test_an_unknown_link_is_a_404_that_says_so(root, client, token):
    invite(root)
    response = client.get(f"/invite/{token}/")
    assert response.status_code == 404
    assert "This invitation link is not valid" in response.content.decode()
    assert signup.SESSION_KEY not in client.session


def test_the_invitation_page_without_a_link_opened_is_a_404(client, db):
    assert client.get("/invite/").status_code == 404
    assert client.post("/invite/", DAVE).status_code == 404
    assert not User.objects.exists()


def test_a_link_that_expires_while_its_page_is_open_refuses_the_form(root, client):
    invitation, token = invite(root)
    client.get(f"/invite/{token}/")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())

    response = client.post("/invite/", DAVE)

    assert response.status_code == 410
    assert "expired" in response.content.decode()
    assert not User.objects.filter(username="dave").exists()


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({**DAVE, "password2": "another sea view"}, "The two password fields didn"),
        ({**DAVE, "password1": "password", "password2": "password"}, "too common"),
        ({**DAVE, "password1": "s3a", "password2": "s3a"}, "too short"),
        ({**DAVE, "username": "Alice"}, "A user with that username already exists."),
        ({**DAVE, "username": "dave smith"}, "Enter a valid username"),
        ({**DAVE, "username": ""}, "This field is required."),
    ],
)
def test_bad_input_on_the_invitation_page_says_why_and_keeps_the_link_open(
    root, alice, client, form, error
):
    invitation, token = invite(root)

    response = join(client, token, form)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not User.objects.exclude(username__in=["root", "alice"]).exists()
    invitation.refresh_from_db()
    assert invitation.state() == "open"
    # The link still works, with the mistake fixed.
    assert client.post("/invite/", DAVE)["Location"] == "/"


def test_someone_logged_in_is_told_the_invitation_is_for_someone_new(root, alice, client):
    invitation, token = invite(root)
    client.force_login(alice)
    client.get(f"/invite/{token}/")
    response = client.get("/invite/")
    assert response.status_code == 409
    assert "You are logged in as alice" in response.content.decode()
    assert client.post("/invite/", DAVE).status_code == 409
    invitation.refresh_from_db()
    assert invitation.state() == "open"


# --- SIGNUP=closed and OIDC_ONLY --------------------------------------------------------------
def test_closed_signup_refuses_links_and_the_members_page_makes_none(
    root, staff_client, client, settings
):
    invitation, token = invite(root)
    settings.SIGNUP = "closed"

    response = client.get(f"/invite/{token}/")
    assert response.status_code == 403
    assert "Joining is closed" in response.content.decode()
    assert client.post("/invite/", DAVE).status_code == 403

    page = staff_client.get("/team/members/").content.decode()
    assert "Invitations are turned off" in page
    assert ">Create invitation</button>" not in page
    staff_client.post("/team/members/", {"days": "7"})
    assert Invitation.objects.count() == 1
    invitation.refresh_from_db()
    assert invitation.state() == "open"
    assert not User.objects.filter(username="dave").exists()


def test_with_oidc_only_the_invitation_page_offers_only_single_sign_on(root, client, settings):
    settings.OIDC_ISSUER_URL = "https://id.example.com"
    settings.OIDC_NAME = "Acme ID"
    settings.OIDC_ONLY = True
    invitation, token = invite(root)

    client.get(f"/invite/{token}/")
    page = client.get("/invite/").content.decode()
    assert "Sign in with Acme ID" in page
    assert 'name="password1"' not in page

    response = client.post("/invite/", DAVE)
    assert response.status_code == 403
    assert "Making an account with a password is turned off" in response.content.decode()
    assert not User.objects.filter(username="dave").exists()
    invitation.refresh_from_db()
    assert invitation.state() == "open"


# --- Two people, one link -------------------------------------------------------------------
def in_thread(fn):
    """Run `fn` in a thread of its own (its own database connection), closing it after."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as exc:
            result["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.django_db(transaction=True)
def test_two_people_sending_one_links_form_at_once_get_exactly_one_account(root):
    """Dave and Erin both opened the link; their forms arrive together, on two connections."""
    _, token = invite(root)
    people = {"dave": Client(), "erin": Client()}
    for client in people.values():
        assert client.get(f"/invite/{token}/").status_code == 302
    start = threading.Barrier(2)

    def send(name):
        def run():
            start.wait(5)
            return people[name].post("/invite/", {**DAVE, "username": name}).status_code

        return run

    runs = [in_thread(send(name)) for name in people]
    for thread, _ in runs:
        thread.join(30)
    statuses = sorted(result.get("value") or repr(result.get("error")) for _, result in runs)

    assert statuses == [302, 410]
    made = User.objects.exclude(username="root")
    assert made.count() == 1
    assert Invitation.objects.get().used_by == made.get()


@pytest.mark.django_db(transaction=True)
def test_a_second_redemption_waits_for_the_first_then_finds_the_invitation_used(root):
    """The conditional UPDATE, step by step: while the first account's transaction holds the
    invitation, the second waits (PostgreSQL: the row lock; SQLite: the write lock); once the
    first commits, the second updates no row and its account is rolled back."""
    invitation, _ = invite(root)
    first_redeemed = threading.Event()
    let_first_commit = threading.Event()

    def first():
        with transaction.atomic():
            dave = User.objects.create_user("dave", password="a long sea view")
            signup.redeem_invitation(invitation.pk, dave)
            first_redeemed.set()
            assert let_first_commit.wait(10)
        return "joined"

    def second():
        assert first_redeemed.wait(10)
        try:
            with transaction.atomic():
                erin = User.objects.create_user("erin", password="a long sea view")
                signup.redeem_invitation(invitation.pk, erin)
        except signup.InvitationUnavailable:
            return "refused"
        return "joined"

    first_thread, first_result = in_thread(first)
    second_thread, second_result = in_thread(second)
    assert first_redeemed.wait(10)
    time.sleep(0.5)
    assert second_thread.is_alive(), "the second redemption did not wait for the first"
    let_first_commit.set()
    first_thread.join(30)
    second_thread.join(30)

    assert (first_result, second_result) == ({"value": "joined"}, {"value": "refused"})
    assert list(User.objects.exclude(username="root").values_list("username", flat=True)) == [
        "dave"
    ]
    invitation.refresh_from_db()
    assert invitation.used_by.username == "dave"


# --- The admin --------------------------------------------------------------------------------
def test_the_admin_lists_invitations_read_only_and_can_revoke_them(admin_client, admin_user):
    invitation, token = invite(admin_user, label="Dave")
    page = admin_client.get("/admin/accounts/invitation/").content.decode()
    assert f"Invitation {invitation.pk} for Dave" in page
    assert token not in page
    assert admin_client.get("/admin/accounts/invitation/add/").status_code == 403
    detail = admin_client.get(f"/admin/accounts/invitation/{invitation.pk}/change/")
    assert detail.status_code == 200
    assert token not in detail.content.decode()
    assert 'name="label"' not in detail.content.decode()  # read only

    admin_client.post(
        "/admin/accounts/invitation/",
        {"action": "revoke", "_selected_action": [invitation.pk]},
    )

    invitation.refresh_from_db()
    assert invitation.state() == "revoked"

"""The pages of people coming in: the login (Django's, throttled by django-axes, with the single
sign-on button beside it, and with OIDC_ONLY the button alone), sign-up and invitation pages,
the password change and reset pages, and the staff's Members page."""

from __future__ import annotations

import logging
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import forms, signup
from accounts.adapter import SESSION_BACKEND, problem_page
from accounts.models import Invitation
from serika_web.security import client_ip
from usage import rate_limits
from usage.views import staff_only

logger = logging.getLogger(__name__)


def sso_button() -> dict | None:
    """What the "Sign in with <name>" button needs, or None while single sign-on is off."""
    if not settings.OIDC_ISSUER_URL:
        return None
    return {
        "name": settings.OIDC_NAME,
        "url": reverse("openid_connect_login", kwargs={"provider_id": settings.OIDC_PROVIDER_ID}),
    }


def password_login_refused(request, next_url: str = ""):
    """The login page again (HTTP 403), saying that passwords are not accepted: no password is
    ever checked, so django-axes counts nothing either."""
    return render(
        request,
        "registration/login.html",
        {"sso": sso_button(), "password_login": False, "password_refused": True, "next": next_url},
        status=403,
    )


class LoginView(auth_views.LoginView):
    authentication_form = forms.LoginForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if settings.OIDC_ONLY:
            return password_login_refused(request, self.get_redirect_url())
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            sso=sso_button(),
            password_login=not settings.OIDC_ONLY,
            signup_link=signup.self_signup_open() and not settings.OIDC_ONLY,
            reset_link=password_reset_on(),
            **kwargs,
        )


def admin_login(request, extra_context=None):
    """The admin's login: as Django's while passwords are accepted; with OIDC_ONLY, a member
    who is not logged in is sent to the login page's button, and a password is refused."""
    if not settings.OIDC_ONLY:
        return admin.site.login(request, extra_context)
    next_url = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, "")
    if request.method == "POST":
        return password_login_refused(request, next_url)
    if request.user.is_authenticated:
        # Logged in but not staff: the admin's own page says so (sending them to our login
        # page would bounce straight back here).
        return admin.site.login(request, extra_context)
    query = urlencode({REDIRECT_FIELD_NAME: next_url or reverse("admin:index")})
    return redirect(f"{reverse('login')}?{query}")


# --- Sign-up and invitations ------------------------------------------------------------------
JOIN_TEMPLATE = "accounts/join.html"


def pending_page(request: HttpRequest, status: int = 200) -> HttpResponse:
    """What a member waiting for approval sees, after signing up and at every login."""
    return render(request, "accounts/pending.html", status=status)


# Why an invitation cannot be used, by its state: (status, heading, message).
DEAD_INVITATION = {
    "used": (
        410,
        "This invitation was already used",
        "Each invitation link works once, and this one has made an account already. If that "
        "was you, log in; otherwise ask an administrator for a new link.",
    ),
    "expired": (
        410,
        "This invitation has expired",
        "Invitation links work for a limited time. Ask an administrator for a new one.",
    ),
    "revoked": (
        410,
        "This invitation was withdrawn",
        "An administrator withdrew this invitation link. Ask them for a new one if you "
        "should have access.",
    ),
}


def _dead_invitation_page(request: HttpRequest, state: str) -> HttpResponse:
    status, heading, message = DEAD_INVITATION[state]
    return problem_page(request, heading, message, status)


def _unknown_invitation_page(request: HttpRequest) -> HttpResponse:
    return problem_page(
        request,
        "This invitation link is not valid",
        "No invitation has this link. Check that it was copied whole, or ask an administrator "
        "for a new one.",
        404,
    )


def _invitations_closed_page(request: HttpRequest) -> HttpResponse:
    return problem_page(
        request,
        "Joining is closed",
        "This site takes no new members by invitation at the moment: an administrator adds "
        "members directly. Ask one if you should have access.",
        403,
    )


def _join_page(request: HttpRequest, form, *, invitation: Invitation | None, status: int = 200):
    return render(
        request,
        JOIN_TEMPLATE,
        {
            "form": form,
            "invitation": invitation,
            "heading": "Join Serika Web" if invitation else "Create an account",
            "sso": sso_button(),
            "password_signup": not settings.OIDC_ONLY,
            "password_refused": status == 403,
        },
        status=status,
    )


def _create_account(request: HttpRequest, invitation: Invitation | None) -> HttpResponse:
    """The sign-up form's POST, with or without an invitation: the account, then the chat (or,
    pending, the waiting page)."""
    form = forms.SignupForm(request.POST)
    if not form.is_valid():
        return _join_page(request, form, invitation=invitation)
    try:
        user = signup.sign_up(form, invitation_id=invitation.pk if invitation else None)
    except signup.InvitationUnavailable:
        invitation.refresh_from_db()
        return _dead_invitation_page(request, invitation.state())
    except IntegrityError:
        # Someone took the username between the form's check and the insert.
        form.add_error("username", "A user with that username already exists.")
        return _join_page(request, form, invitation=invitation)
    if invitation is not None:
        signup.forget_invitation(request)
    if not user.is_active:
        return pending_page(request)
    login(request, user, backend=SESSION_BACKEND)
    return redirect("home")


def self_signup(request: HttpRequest) -> HttpResponse:
    """/signup/: anyone's account, with SIGNUP=open (or pending, with approval); else 404."""
    if not signup.self_signup_open():
        raise Http404("Sign-up is closed.")
    if request.user.is_authenticated:
        return redirect("home")
    if request.method == "POST":
        if settings.OIDC_ONLY:
            return _join_page(request, None, invitation=None, status=403)
        refusal = rate_limits.check_account_request(client_ip(request))
        if refusal is not None:
            return rate_limits.refused_page(request, refusal)
        return _create_account(request, None)
    return _join_page(request, forms.SignupForm(), invitation=None)


def open_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """An invitation link, /invite/<token>/: the invitation is kept in the session and the
    browser sent on to /invite/, so that the token appears in this one request only (not in
    the form's address, the history of the page that follows, or a Referer)."""
    if not signup.invitations_accepted():
        return _invitations_closed_page(request)
    invitation = Invitation.objects.find(token)
    if invitation is None:
        return _unknown_invitation_page(request)
    state = invitation.state()
    if state != "open":
        return _dead_invitation_page(request, state)
    signup.remember_invitation(request, invitation)
    return redirect("join")


def join(request: HttpRequest) -> HttpResponse:
    """/invite/: the page of the invitation this browser opened: a username and password, or
    the single sign-on button (whose first login uses the invitation from the session)."""
    if not signup.invitations_accepted():
        return _invitations_closed_page(request)
    invitation = signup.invitation_in_session(request)
    if invitation is None:
        return _unknown_invitation_page(request)
    state = invitation.state()
    if state != "open":
        signup.forget_invitation(request)
        return _dead_invitation_page(request, state)
    if request.user.is_authenticated:
        return problem_page(
            request,
            "You already have an account",
            f"You are logged in as {request.user.get_username()}. This invitation is for "
            "someone new: log out first, or pass the link on to them.",
            409,
        )
    if request.method == "POST":
        if settings.OIDC_ONLY:
            return _join_page(request, None, invitation=invitation, status=403)
        return _create_account(request, invitation)
    return _join_page(request, forms.SignupForm(), invitation=invitation)


# --- Passwords --------------------------------------------------------------------------------
def password_reset_on() -> bool:
    """Password resets need a way to send mail (EMAIL_URL), and passwords (not OIDC_ONLY)."""
    return bool(settings.EMAIL_URL) and not settings.OIDC_ONLY


def needs_password_reset(view):
    """The reset pages answer 404 while resets are off."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not password_reset_on():
            raise Http404("Password reset is not available on this site.")
        return view(request, *args, **kwargs)

    return wrapped


def limited_per_address(view):
    """POSTs over RATE_LIMIT_ACCOUNT_REQUESTS from one client address get HTTP 429: each reset
    request sends an e-mail."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            refusal = rate_limits.check_account_request(client_ip(request))
            if refusal is not None:
                return rate_limits.refused_page(request, refusal)
        return view(request, *args, **kwargs)

    return wrapped


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's, for members with a password while passwords are accepted; SSO members
    without one, and everyone under OIDC_ONLY, are told why there is nothing to change."""

    form_class = forms.PasswordChangeForm
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("password_change_done")

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and (
            settings.OIDC_ONLY or not request.user.has_usable_password()
        ):
            return render(
                request,
                "accounts/password_none.html",
                {"sso_name": settings.OIDC_NAME, "oidc_only": settings.OIDC_ONLY},
                status=403 if request.method == "POST" else 200,
            )
        return super().dispatch(request, *args, **kwargs)


password_change = PasswordChangeView.as_view()
password_change_done = login_required(
    auth_views.PasswordChangeDoneView.as_view(template_name="accounts/password_change_done.html")
)
password_reset = needs_password_reset(
    limited_per_address(
        auth_views.PasswordResetView.as_view(
            template_name="accounts/password_reset.html",
            email_template_name="accounts/password_reset_email.txt",
            subject_template_name="accounts/password_reset_subject.txt",
            success_url=reverse_lazy("password_reset_done"),
        )
    )
)
password_reset_done = needs_password_reset(
    auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_sent.html")
)
password_reset_confirm = needs_password_reset(
    auth_views.PasswordResetConfirmView.as_view(
        form_class=forms.SetPasswordForm,
        template_name="accounts/password_reset_confirm.html",
        success_url=reverse_lazy("password_reset_complete"),
    )
)
password_reset_complete = needs_password_reset(
    auth_views.PasswordResetCompleteView.as_view(
        template_name="accounts/password_reset_complete.html"
    )
)


# --- The Members page (staff) -------------------------------------------------------------------
MEMBERS_PAGE_INVITATIONS = 100


def _members_page(request: HttpRequest, form, *, link: str = "", status: int = 200):
    now = timezone.now()
    invitations = list(
        Invitation.objects.select_related("created_by", "used_by").prefetch_related("groups")[
            :MEMBERS_PAGE_INVITATIONS
        ]
    )
    return render(
        request,
        "accounts/members.html",
        {
            "form": form,
            "link": link,
            "invitations": [(invitation, invitation.state(now)) for invitation in invitations],
            "invitations_accepted": signup.invitations_accepted(),
            "signup_mode": settings.SIGNUP,
            "pending": list(signup.pending_members()),
        },
        status=status,
    )


@staff_only
def members(request: HttpRequest) -> HttpResponse:
    """Invitations (make one, see them all, revoke open ones) and accounts waiting for
    approval. A new link is shown once, in the answer to the POST that made it."""
    if request.method != "POST":
        return _members_page(request, forms.InvitationForm(user=request.user))
    if not signup.invitations_accepted():
        messages.error(request, "Invitations are turned off (SIGNUP=closed).")
        return redirect("members")
    form = forms.InvitationForm(request.POST, user=request.user)
    if not form.is_valid():
        return _members_page(request, form)
    _, token = signup.create_invitation(
        created_by=request.user,
        label=form.cleaned_data["label"],
        days=form.cleaned_data["days"],
        groups=form.cleaned_data["groups"],
    )
    link = request.build_absolute_uri(reverse("invitation", kwargs={"token": token}))
    return _members_page(request, forms.InvitationForm(user=request.user), link=link)


@staff_only
@require_POST
def revoke_invitation(request: HttpRequest, pk: int) -> HttpResponse:
    if signup.revoke_invitation(pk, request.user):
        messages.success(request, "Invitation revoked: its link no longer works.")
    else:
        messages.error(request, "That invitation was already used, revoked or expired.")
    return redirect("members")


@staff_only
@require_POST
def approve_member(request: HttpRequest, user_id: int) -> HttpResponse:
    user = signup.approve_member(user_id, request.user)
    if user is None:
        messages.error(request, "That account is not waiting for approval any more.")
    else:
        messages.success(request, f"{user.get_username()} may now log in.")
    return redirect("members")


@staff_only
@require_POST
def reject_member(request: HttpRequest, user_id: int) -> HttpResponse:
    username = signup.reject_member(user_id, request.user)
    if username is None:
        messages.error(request, "That account is not waiting for approval any more.")
    else:
        messages.success(request, f"{username}'s account was rejected and deleted.")
    return redirect("members")

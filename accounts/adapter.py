"""allauth's hooks: who may sign in with the provider, who may join with it (the SIGNUP rule,
accounts/signup.py), which username a new member gets, and the pages shown when a sign-in is
refused or fails.

Only allauth's OpenID Connect login and callback are served (accounts/urls.py); its own
password, sign-up and e-mail pages are not, so the password login stays Django's LoginView
behind django-axes.
"""

from __future__ import annotations

import logging

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base import AuthError, AuthProcess
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import render

from accounts import groups, signup
from accounts.models import PendingApproval

logger = logging.getLogger(__name__)

# The backend an SSO session names (`_auth_user_backend`): Django's own, which is listed in
# AUTHENTICATION_BACKENDS, so `auth.get_user` (pages and chat/access.py's `session_user` on the
# websocket) loads the member. allauth's AuthenticationBackend is not installed: it would let
# the password login also accept e-mail addresses.
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


def problem_page(request, heading: str, message: str, status: int):
    """The page of a sign-in that did not happen, with a way back to the login page."""
    return render(
        request,
        "accounts/sso_problem.html",
        {"heading": heading, "message": message, "sso_name": settings.OIDC_NAME},
        status=status,
    )


def claim_sets(sociallogin) -> list[dict]:
    """The provider's claims for this sign-in: userinfo first, then the ID token's."""
    extra = sociallogin.account.extra_data or {}
    return [extra.get("userinfo") or {}, extra.get("id_token") or {}]


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # allauth's own (password) sign-up is not served; members come from the admin or SSO.
        return False

    def login(self, request, user) -> None:
        user.backend = SESSION_BACKEND
        super().login(request, user)

    def respond_user_inactive(self, request, user):
        # allauth would redirect to its "account inactive" page, which is not served.
        if signup.is_pending(user):
            return render(request, "accounts/pending.html")
        return problem_page(
            request,
            "Your account is deactivated",
            "An administrator has deactivated your account on this site. Ask them to "
            "reactivate it.",
            status=403,
        )

    def add_message(self, *args, **kwargs) -> None:
        # No "Successfully signed in as …" banner: the password login shows none either.
        return None


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def list_apps(self, request, provider=None, client_id=None):
        # Configured from the environment only (SOCIALACCOUNT_PROVIDERS, built from OIDC_*):
        # provider apps added in the admin's database table are ignored.
        apps = super().list_apps(request, provider=provider, client_id=client_id)
        return [app for app in apps if app.pk is None]

    def pre_social_login(self, request, sociallogin) -> None:
        """Refuses, before anything of a new member is saved, a sign-in that is not a plain
        login (allauth's "connect" would tie the identity to whoever is logged in here), whose
        provider groups are not allowed, or that would make an account the SIGNUP rule keeps
        out (`signup.sso_admission`; returning members are never asked)."""
        if sociallogin.state.get("process", AuthProcess.LOGIN) != AuthProcess.LOGIN:
            raise ImmediateHttpResponse(
                problem_page(
                    request,
                    "Sign-in not completed",
                    "Only signing in is supported here, not linking accounts.",
                    status=400,
                )
            )
        names = provider_groups(sociallogin)
        if not groups.may_sign_in(names, settings.OIDC_ALLOWED_GROUPS, settings.OIDC_ADMIN_GROUPS):
            logger.warning(
                "single sign-on refused for sub %s: in none of OIDC_ALLOWED_GROUPS",
                sociallogin.account.uid,
            )
            raise ImmediateHttpResponse(
                problem_page(
                    request,
                    "You may not use this site",
                    f"Your {settings.OIDC_NAME} account is not in a group that may use this "
                    "site. If you should have access, ask an administrator to add you to one.",
                    status=403,
                )
            )
        if not sociallogin.is_existing and signup.sso_admission(request, names) is None:
            logger.info(
                "single sign-on: no account made for sub %s (SIGNUP)", sociallogin.account.uid
            )
            raise ImmediateHttpResponse(signup_refused_page(request))

    def is_open_for_signup(self, request, sociallogin) -> bool:
        # Asked by allauth before a first sign-in makes an account; pre_social_login has
        # already refused those the rule keeps out, with a page that says why.
        return signup.sso_admission(request, provider_groups(sociallogin)) is not None

    def save_user(self, request, sociallogin, form=None):
        """A first sign-in's account: with the invitation from the session redeemed in the
        same transaction (its groups given), or pending (inactive) under SIGNUP=approval."""
        admission = signup.sso_admission(request, provider_groups(sociallogin))
        if admission is None:
            raise ImmediateHttpResponse(signup_refused_page(request))
        try:
            with transaction.atomic():
                if admission.pending:
                    sociallogin.user.is_active = False
                user = super().save_user(request, sociallogin, form)
                if admission.invitation_id is not None:
                    signup.redeem_invitation(admission.invitation_id, user)
                if admission.pending:
                    PendingApproval.objects.create(user=user)
        except signup.InvitationUnavailable:
            signup.forget_invitation(request)
            raise ImmediateHttpResponse(
                problem_page(
                    request,
                    "This invitation was already used",
                    "Someone used this invitation link a moment ago. Ask an administrator for "
                    "a new one.",
                    status=410,
                )
            ) from None
        if admission.invitation_id is not None:
            signup.forget_invitation(request)
        how = (
            f"invitation {admission.invitation_id}"
            if admission.invitation_id is not None
            else ("waiting for approval" if admission.pending else "SIGNUP/groups")
        )
        logger.info("single sign-on: new member %s (%s)", user.get_username(), how)
        return user

    def is_auto_signup_allowed(self, request, sociallogin) -> bool:
        # Always: allauth's sign-up form, its fallback, is not served.
        return True

    def populate_user(self, request, sociallogin, data):
        user = super().populate_user(request, sociallogin, data)
        user.username = unique_username(data.get("username"), data.get("email"), data.get("name"))
        return user

    def on_authentication_error(
        self, request, provider, error=None, exception=None, extra_context=None
    ) -> None:
        if error == AuthError.CANCELLED:
            response = problem_page(
                request,
                "Sign-in cancelled",
                f"You cancelled signing in with {settings.OIDC_NAME}.",
                status=200,
            )
        else:
            logger.warning(
                "single sign-on failed (%s): %s", error, exception and repr(exception)[:500]
            )
            response = problem_page(
                request,
                "Sign-in failed",
                f"Signing in with {settings.OIDC_NAME} did not work. Try again; if it keeps "
                "failing, tell an administrator.",
                status=401,
            )
        raise ImmediateHttpResponse(response)


def provider_groups(sociallogin) -> set[str]:
    """The provider's group names for this sign-in (none without OIDC_GROUPS_CLAIM)."""
    if not settings.OIDC_GROUPS_CLAIM:
        return set()
    return groups.group_names(claim_sets(sociallogin), settings.OIDC_GROUPS_CLAIM)


def signup_refused_page(request):
    """A first single sign-on that the SIGNUP rule keeps out (HTTP 403), saving nothing."""
    if settings.SIGNUP == "closed":
        message = (
            "This site does not make accounts at sign-in: an administrator adds members. "
            "Ask one if you should have access."
        )
    else:
        message = (
            "New members join this site with an invitation. Ask an administrator for an "
            f"invitation link, open it, then sign in with {settings.OIDC_NAME} from there."
        )
    return problem_page(request, "You need an invitation", message, status=403)


def unique_username(preferred: str | None, email: str | None, name: str | None) -> str:
    """A username for a new SSO member that no account has, whatever its letter case.

    The provider's `preferred_username` when it is free and valid; otherwise allauth's
    generator, from the same name first (so "alice", taken by a local account, becomes
    "alice" plus random characters, never the local alice). The account is found by its
    `sub` from then on; the username is only what people see.
    """
    from allauth.account.adapter import get_adapter
    from allauth.utils import generate_unique_username

    adapter = get_adapter()
    if preferred:
        try:
            # Also refuses a name taken in another letter case ("Alice" beside "alice").
            return adapter.clean_username(preferred)
        except ValidationError:
            pass
    return generate_unique_username([preferred, email, name, "member"])

"""Who may join, and the verbs that bring people in: invitations (made, revoked, redeemed),
sign-ups, and the approval of pending accounts.

The rule (`SIGNUP`): `closed` lets nobody in by themselves (staff add members in the admin, and
invitation links are refused); `invite` (the default) only with an invitation; `open` anyone;
`approval` anyone, but the account waits for staff (`PendingApproval`). An invitation always
bypasses approval. Single sign-on's first logins follow the same rule (`sso_admission`).

Every write is one of the functions below; views and allauth's adapter call them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts.models import Invitation, PendingApproval, token_hash

logger = logging.getLogger(__name__)

# The session key of the invitation being used: set when its link is opened, read by the
# invitation page and by single sign-on's first login, removed once it is used.
SESSION_KEY = "serika_invitation"
# 32 random bytes: 43 URL-safe characters.
TOKEN_BYTES = 32


class InvitationUnavailable(Exception):
    """The invitation was used, revoked or expired meanwhile (two people raced with one link)."""


def self_signup_open() -> bool:
    """Whether anyone may make an account at /signup/ (pending or not)."""
    return settings.SIGNUP in {"open", "approval"}


def invitations_accepted() -> bool:
    return settings.SIGNUP != "closed"


# --- Invitations ----------------------------------------------------------------------------
def create_invitation(
    *, created_by, label: str = "", days: int | None = None, groups: Iterable[Group] = ()
) -> tuple[Invitation, str]:
    """A new invitation and its link's token. The token is returned once, here, and never
    stored or logged: only its hash is kept."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = timezone.now()
    days = days or settings.INVITATION_DAYS
    with transaction.atomic():
        invitation = Invitation.objects.create(
            token_hash=token_hash(token),
            label=label,
            created_by=created_by,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        invitation.groups.set(groups)
    logger.info(
        "invitation %s made by %s for %r, valid for %s days",
        invitation.pk,
        created_by.get_username(),
        label,
        days,
    )
    return invitation, token


def revoke_invitation(invitation_id: int, by) -> bool:
    """Revoke an open invitation; False when it is not open any more (used, revoked, expired)."""
    now = timezone.now()
    revoked = Invitation.objects.open(now).filter(pk=invitation_id).update(revoked_at=now) == 1
    if revoked:
        logger.info("invitation %s revoked by %s", invitation_id, by.get_username())
    return revoked


def redeem_invitation(invitation_id: int, user) -> None:
    """Mark the invitation used by `user`, who just got an account, and add them to its groups.

    Call inside the transaction that made the account: the claim is one conditional UPDATE (open
    invitations only), so of two people using one link at once exactly one updates the row (on
    PostgreSQL the second waits for the first's commit, then finds it used); the other gets
    `InvitationUnavailable`, which rolls their account back.
    """
    now = timezone.now()
    claimed = (
        Invitation.objects.open(now).filter(pk=invitation_id).update(used_at=now, used_by=user)
    )
    if claimed != 1:
        raise InvitationUnavailable(invitation_id)
    group_ids = Invitation.groups.through.objects.filter(invitation_id=invitation_id).values_list(
        "group_id", flat=True
    )
    user.groups.add(*group_ids)
    logger.info("invitation %s used by %s", invitation_id, user.get_username())


def remember_invitation(request, invitation: Invitation) -> None:
    request.session[SESSION_KEY] = invitation.pk


def invitation_in_session(request) -> Invitation | None:
    """The invitation whose link this browser opened (in whatever state), or None."""
    pk = request.session.get(SESSION_KEY)
    if not isinstance(pk, int):
        return None
    return Invitation.objects.filter(pk=pk).prefetch_related("groups").first()


def forget_invitation(request) -> None:
    request.session.pop(SESSION_KEY, None)


# --- Accounts -------------------------------------------------------------------------------
def sign_up(form, *, invitation_id: int | None = None):
    """Make the account of a valid sign-up form (`accounts.forms.SignupForm`).

    With an invitation, the invitation is redeemed in the same transaction (and its groups
    given); without one under SIGNUP=approval, the account is made inactive and pending.
    Raises `InvitationUnavailable` (nothing saved) when the invitation was taken meanwhile,
    and `IntegrityError` when someone took the username meanwhile.
    """
    pending = invitation_id is None and settings.SIGNUP == "approval"
    with transaction.atomic():
        user = form.save(commit=False)
        user.is_active = not pending
        user.save()
        if invitation_id is not None:
            redeem_invitation(invitation_id, user)
        if pending:
            PendingApproval.objects.create(user=user)
    how = (
        f"invitation {invitation_id}"
        if invitation_id is not None
        else ("sign-up, waiting for approval" if pending else "open sign-up")
    )
    logger.info("new member %s (%s)", user.get_username(), how)
    return user


def pending_members():
    """The accounts waiting for approval, oldest first."""
    return PendingApproval.objects.filter(user__is_active=False).select_related("user")


def is_pending(user) -> bool:
    return (
        not user.is_active
        and user.pk is not None
        and PendingApproval.objects.filter(user=user).exists()
    )


def _pending_row(user_id: int) -> PendingApproval | None:
    return (
        PendingApproval.objects.select_for_update()
        .select_related("user")
        .filter(user_id=user_id, user__is_active=False)
        .first()
    )


@transaction.atomic
def approve_member(user_id: int, by):
    """Activate a pending account; returns it, or None when it is not pending (any more)."""
    row = _pending_row(user_id)
    if row is None:
        return None
    user = row.user
    user.is_active = True
    user.save(update_fields=["is_active"])
    row.delete()
    logger.info("%s approved by %s", user.get_username(), by.get_username())
    return user


@transaction.atomic
def reject_member(user_id: int, by) -> str | None:
    """Delete a pending account; returns its username, or None when it is not pending."""
    row = _pending_row(user_id)
    if row is None:
        return None
    username = row.user.get_username()
    row.user.delete()
    logger.info("%s rejected (account deleted) by %s", username, by.get_username())
    return username


# --- Single sign-on -------------------------------------------------------------------------
@dataclass(frozen=True)
class Admission:
    """How a first single sign-on makes its account: with an invitation, or pending."""

    invitation_id: int | None = None
    pending: bool = False


def sso_admission(request, provider_groups: set[str]) -> Admission | None:
    """Whether a first single sign-on (a `sub` with no account yet) may make an account, and
    how; None: refused. Returning members are never asked.

    - `closed`: nobody;
    - an open invitation in the session (its link was opened in this browser): yes, active;
    - a member of OIDC_ADMIN_GROUPS: yes, active (they become staff, and a site with
      OIDC_ONLY has no other way to let its first administrator in);
    - `approval`: yes, pending; `open`: yes;
    - `invite` with OIDC_ALLOWED_GROUPS: yes, active: the provider's groups decide who may join
      (the groups were checked before, in `pre_social_login`);
    - otherwise (`invite` without allowed groups): no; the page says to ask for an invitation.
    """
    if settings.SIGNUP == "closed":
        return None
    invitation = invitation_in_session(request)
    if invitation is not None and invitation.state() == "open":
        return Admission(invitation_id=invitation.pk)
    if provider_groups & set(settings.OIDC_ADMIN_GROUPS):
        return Admission()
    if settings.SIGNUP == "approval":
        return Admission(pending=True)
    if settings.SIGNUP == "open" or settings.OIDC_ALLOWED_GROUPS:
        return Admission()
    return None

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone


class SsoMembership(models.Model):
    """A group membership that single sign-on gave, because the provider's groups claim named
    the group: sign-in takes it away again at the first login whose claim no longer names it.
    A membership given by hand in the admin has no row, and sign-in never removes it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_memberships"
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="+")

    class Meta:
        verbose_name = "group membership from single sign-on"
        verbose_name_plural = "group memberships from single sign-on"
        constraints = [
            models.UniqueConstraint(fields=["user", "group"], name="accounts_sso_membership_once")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.group} (from single sign-on)"


def token_hash(token: str) -> str:
    """What is stored of an invitation token: its SHA-256. The token is 32 random bytes, so a
    plain hash (no salt, no slow hash) is as good as a password hash would be, and lets a link be
    found by one indexed lookup."""
    return hashlib.sha256(token.encode()).hexdigest()


class InvitationQuerySet(models.QuerySet):
    def open(self, now=None) -> InvitationQuerySet:
        """Invitations that can still be used: not used, not revoked, not expired."""
        return self.filter(used_at=None, revoked_at=None, expires_at__gt=now or timezone.now())

    def find(self, token: str) -> Invitation | None:
        """The invitation of a link's token, in whatever state, or None."""
        if not token or len(token) > 200:
            return None
        return self.filter(token_hash=token_hash(token)).first()


class Invitation(models.Model):
    """A single-use link that lets one person make an account (accounts/signup.py redeems it).

    Only the token's hash is stored: the link is shown once, to the staff member who made it,
    and cannot be read back from the database, the admin or a backup."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    label = models.CharField(
        max_length=100, blank=True, help_text="Who the invitation is for (only staff see it)."
    )
    groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="+",
        help_text="The new member joins these groups.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Invitation {self.pk}" + (f" for {self.label}" if self.label else "")

    def state(self, now=None) -> str:
        """`used`, `revoked`, `expired` or `open`, in that order of precedence."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        return "open"


class PendingApproval(models.Model):
    """A member who signed up with SIGNUP=approval and waits for staff (Open WebUI's "pending"
    role). The account exists with `is_active=False`, so no backend logs it in and no session,
    page or socket lets it in; this row tells "waiting for approval" from "deactivated by an
    administrator" (also `is_active=False`, without a row). Approving activates the account and
    deletes the row; rejecting deletes the account. A row whose account is active (someone
    ticked "active" in the admin) no longer counts as pending."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pending_approval"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = "account waiting for approval"
        verbose_name_plural = "accounts waiting for approval"

    def __str__(self) -> str:
        return f"{self.user} (waiting for approval)"

"""The admin shows which provider identity (`sub`) each SSO member is bound to (allauth's
"Social accounts") and the group memberships sign-in manages; allauth's tables that nothing here
uses are left out of it."""

import logging

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialApp, SocialToken
from django.contrib import admin, messages
from django.utils import timezone

from accounts.models import Invitation, SsoMembership

logger = logging.getLogger(__name__)

# The provider is configured from the environment (OIDC_*), tokens are not stored, and e-mail
# addresses identify nobody here.
for model in (SocialApp, SocialToken, EmailAddress):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(SsoMembership)
class SsoMembershipAdmin(admin.ModelAdmin):
    """Which memberships sign-in manages (and will take away when the claim drops them)."""

    list_display = ["user", "group"]
    list_filter = ["group"]
    search_fields = ["user__username", "group__name"]
    list_select_related = ["user", "group"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations, to look at and revoke. They are made on the Members page (/team/members/),
    the only place that can show a new link: the database keeps only its token's hash."""

    list_display = ["__str__", "created_by", "created_at", "expires_at", "used_by", "revoked_at"]
    list_filter = ["created_at", "expires_at"]
    search_fields = ["label", "created_by__username", "used_by__username"]
    list_select_related = ["created_by", "used_by"]
    fields = [
        "label",
        "groups",
        "created_by",
        "created_at",
        "expires_at",
        "used_by",
        "used_at",
        "revoked_at",
    ]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # The change page shows the invitation read-only; revoking is the list's action.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Revoke the selected open invitations", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        count = queryset.open().update(revoked_at=timezone.now())
        logger.info("%s invitation(s) revoked in the admin by %s", count, request.user)
        messages.success(request, f"{count} invitation(s) revoked.")

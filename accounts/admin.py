"""The admin shows which provider identity (`sub`) each SSO member is bound to (allauth's
"Social accounts") and the group memberships sign-in manages; allauth's tables that nothing here
uses are left out of it."""

from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialApp, SocialToken
from django.contrib import admin

from accounts.models import SsoMembership

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

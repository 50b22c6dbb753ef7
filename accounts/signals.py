"""At every single sign-on, after the member is logged in: their groups, staff status and
profile follow the provider's claims."""

from __future__ import annotations

from allauth.account.signals import user_logged_in
from django.conf import settings
from django.dispatch import receiver

from accounts import groups
from accounts.adapter import claim_sets


@receiver(user_logged_in, dispatch_uid="accounts.sync_from_provider")
def sync_from_provider(sender, request, user, sociallogin=None, **kwargs) -> None:
    """One receiver for new and returning members alike (allauth sends `user_logged_in` with
    the `sociallogin` for both). An error here fails the request with a 500, and the session
    it would have started is not saved, so nobody is logged in with stale groups or staff."""
    if sociallogin is None:
        return
    claims = claim_sets(sociallogin)
    groups.sync_profile(user, {**claims[1], **claims[0]})
    if not settings.OIDC_GROUPS_CLAIM:
        return
    names = groups.group_names(claims, settings.OIDC_GROUPS_CLAIM)
    groups.sync_groups(user, names)
    if settings.OIDC_ADMIN_GROUPS:
        # Only SSO members get here: allauth's account linking is refused (accounts/adapter.py),
        # so a local account's staff status is never touched.
        groups.sync_staff(user, names, settings.OIDC_ADMIN_GROUPS)

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


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

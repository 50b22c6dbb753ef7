"""What a provider's claims mean here: group names, who may sign in, who is staff.

Plain functions over a claims dict and a user, called at every single sign-on (accounts/signals.py
and accounts/adapter.py) and testable without a provider.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from accounts.models import SsoMembership

logger = logging.getLogger(__name__)


def claim_at(claims: Any, path: str) -> Any:
    """The value at a dotted `path` in `claims` ("realm_access.roles"), or None.

    A key that itself holds dots ("https://example.com/groups", Keycloak's
    "resource_access.my.client.roles") is found too: the longest key that matches wins.
    """
    if not isinstance(claims, dict) or not path:
        return None
    if path in claims:
        return claims[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        key = ".".join(parts[:cut])
        if key in claims:
            found = claim_at(claims[key], ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def group_names(claim_sets: Iterable[dict], path: str) -> set[str]:
    """The group names at `path` in the first of `claim_sets` that has it (userinfo first, then
    the ID token). A missing claim is no groups: providers leave it out for a member of none.
    A single string is one name; anything but strings and numbers is ignored."""
    for claims in claim_sets:
        value = claim_at(claims, path)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        return {
            str(item)
            for item in values
            if isinstance(item, str | int) and not isinstance(item, bool) and str(item)
        }
    return set()


def may_sign_in(names: set[str], allowed: Iterable[str], admins: Iterable[str]) -> bool:
    """Whether a member of the provider groups `names` may sign in: anyone when no groups are
    required, else a member of an allowed group or of an admin group."""
    allowed = set(allowed)
    if not allowed:
        return True
    return bool(names & (allowed | set(admins)))


@transaction.atomic
def sync_groups(user, names: set[str]) -> tuple[set[str], set[str]]:
    """Make `user`'s memberships that sign-in manages match the provider's `names`.

    Adds `user` to every existing Django group named in `names` (a name without a group is
    ignored: groups are made in the admin, where they get characters) and remembers that
    sign-in gave it; removes `user` from each group sign-in gave earlier that `names` no longer
    holds. A membership given by hand in the admin is never removed here. Returns the names of
    the groups joined and left.
    """
    wanted = {group.pk: group.name for group in Group.objects.filter(name__in=names)}
    given = dict(SsoMembership.objects.filter(user=user).values_list("group_id", "group__name"))
    current = set(user.groups.values_list("pk", flat=True))

    joined = set(wanted) - current
    user.groups.add(*joined)
    # Remembered only for memberships sign-in made: one given by hand stays the admin's.
    SsoMembership.objects.bulk_create(
        [SsoMembership(user=user, group_id=pk) for pk in joined - set(given)],
        ignore_conflicts=True,
    )

    left = set(given) - set(wanted)
    user.groups.remove(*left)
    SsoMembership.objects.filter(user=user, group_id__in=left).delete()

    joined_names = {wanted[pk] for pk in joined}
    left_names = {given[pk] for pk in left}
    if joined_names or left_names:
        logger.info(
            "single sign-on: %s joined %s, left %s",
            user.get_username(),
            sorted(joined_names) or "no group",
            sorted(left_names) or "no group",
        )
    return joined_names, left_names


def sync_staff(user, names: set[str], admins: Iterable[str]) -> bool:
    """Staff exactly when `names` holds one of the `admins` groups; the caller makes sure the
    rule is on (OIDC_ADMIN_GROUPS set) and that `user` came from single sign-on. Returns
    whether it changed."""
    staff = bool(names & set(admins))
    if user.is_staff == staff:
        return False
    user.is_staff = staff
    user.save(update_fields=["is_staff"])
    logger.info(
        "single sign-on: %s %s staff", user.get_username(), "made" if staff else "is no longer"
    )
    return True


def sync_profile(user, claims: dict) -> None:
    """The member's email address and name as the provider now gives them (the username, once
    chosen, stays: it is how others and the admin know the member)."""
    name = str(claims.get("name") or "")
    email = str(claims.get("email") or "")
    try:
        validate_email(email)
    except ValidationError:
        email = ""
    fields = {
        "email": email,
        "first_name": claims.get("given_name") or name.partition(" ")[0],
        "last_name": claims.get("family_name") or name.partition(" ")[2],
    }
    changed = []
    for field, value in fields.items():
        max_length = user._meta.get_field(field).max_length
        value = str(value)[:max_length]
        if value and getattr(user, field) != value:
            setattr(user, field, value)
            changed.append(field)
    if changed:
        user.save(update_fields=changed)

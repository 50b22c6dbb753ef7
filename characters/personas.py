"""The member's own persona: who `{{user}}` is in prompts."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from characters.models import UserPersona


def _fallback_name(user) -> str:
    return user.get_short_name() or user.get_username()


def persona_for(user) -> tuple[str, str]:
    """(display name, self-description) of `user`, for `{{user}}` and the user-description part
    of a prompt. The name falls back to the user's short name, then the user name. One query,
    or none when `user` was loaded with `select_related("persona")`."""
    if get_user_model().persona.is_cached(user):
        persona = getattr(user, "persona", None)
    else:
        persona = UserPersona.objects.filter(user=user).only("display_name", "description").first()
    if persona is None:
        return _fallback_name(user), ""
    return persona.display_name.strip() or _fallback_name(user), persona.description

from django.conf import settings


def accounts(request) -> dict:
    """Whether the top bar offers "Change password": to members who have one (not SSO members
    without), while passwords are accepted (not OIDC_ONLY)."""
    user = getattr(request, "user", None)
    return {
        "password_change_offered": bool(
            user is not None
            and user.is_authenticated
            and user.has_usable_password()
            and not settings.OIDC_ONLY
        )
    }

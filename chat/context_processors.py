from django.conf import settings


def serika(request) -> dict:
    """Site-wide template values: whether an API key is configured (never the key itself)."""
    return {"serika_api_key_missing": not settings.SERIKA_API_KEY}

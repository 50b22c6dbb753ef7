"""Deployment check: single sign-on over plain HTTP would send the client secret and the
members' tokens in clear."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

OIDC_ISSUER_NOT_HTTPS = "serika.E010"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register("deployment", deploy=True)
def oidc_issuer_is_https(app_configs: Any = None, **kwargs: Any) -> list:
    url = settings.OIDC_ISSUER_URL
    if not url:
        return []
    parts = urlsplit(url)
    if parts.scheme == "https" or is_loopback(parts.hostname or ""):
        return []
    return [
        Error(
            f"OIDC_ISSUER_URL is not HTTPS ({url}): the client secret and the members' tokens "
            "would cross the network in clear.",
            hint="Use the provider's https:// issuer URL.",
            id=OIDC_ISSUER_NOT_HTTPS,
        )
    ]

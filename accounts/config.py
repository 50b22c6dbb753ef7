"""The allauth configuration built from the OIDC_* settings.

Plain functions without Django imports, so that serika_web/settings.py can call them (and the
tests, which point the same configuration at their own provider).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def openid_connect_providers(
    *,
    issuer_url: str,
    provider_id: str,
    name: str,
    client_id: str,
    secret: str,
    scopes: list[str],
    pkce: bool,
) -> dict:
    """`SOCIALACCOUNT_PROVIDERS` with one OpenID provider, or none when `issuer_url` is empty."""
    if not issuer_url:
        return {}
    app = {
        "provider_id": provider_id,
        "name": name,
        "client_id": client_id,
        "secret": secret,
        "settings": {
            # allauth appends /.well-known/openid-configuration and reads the endpoints (and
            # the issuer that ID tokens must name) there. Authentik's issuer ends in a slash.
            "server_url": issuer_url.rstrip("/"),
            "scope": scopes,
            "oauth_pkce_enabled": pkce,
            # The claims come from the userinfo endpoint (with the ID token's as a fallback):
            # some providers put groups only there.
            "fetch_userinfo": True,
        },
    }
    return {"openid_connect": {"APPS": [app]}}


def issuer_origin(issuer_url: str) -> str:
    """The scheme, host and port of the issuer: the SSO button's POST is redirected there,
    so the CSP's form-action must name it (Chromium checks a form's redirects too)."""
    parts = urlsplit(issuer_url)
    return f"{parts.scheme}://{parts.netloc}"

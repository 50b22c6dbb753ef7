"""A real OpenID provider on 127.0.0.1 for the single sign-on tests: oidc-provider-mock's
Flask app (discovery, authorize form, token, userinfo, JWKS; RS256 ID tokens) served by
werkzeug on a thread. allauth talks to it over real HTTP, unchanged.

Register the fixture in a test module with `oidc_provider = oidc.oidc_provider` (an assignment,
as for tests/live.py). The provider accepts any client id, secret and redirect URI. A person
is a `sub` with claims set by `provider.set_user(sub, {...})`: standard claims reach us only
with their scope (`profile`, `email`), others (`groups`, `realm_access`) always.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import oidc_provider_mock
import pytest
from werkzeug.serving import make_server

from accounts.config import openid_connect_providers

PROVIDER_ID = "sso"
NAME = "Acme ID"


class Provider:
    def __init__(self, port: int) -> None:
        # The issuer is the URL the provider is reached at: the ID tokens' `iss` must match.
        self.url = f"http://127.0.0.1:{port}"

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        """Replace the claims of `sub` (the `sub` itself is not a claim to set)."""
        response = httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=5)
        assert response.status_code == 204, response.text

    def authorize(self, authorize_url: str, sub: str) -> str:
        """Complete the provider's authorize form as `sub`; returns the callback URL (with the
        code and state) that the browser would be sent to."""
        response = httpx.post(authorize_url, data={"sub": sub}, timeout=5)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def deny(self, authorize_url: str) -> str:
        """Press the provider's Deny; returns the callback URL with the error."""
        response = httpx.post(authorize_url, data={"action": "deny"}, timeout=5)
        assert response.status_code == 302, response.text
        # oidc-provider-mock 0.3 leaves the state out of a denial, which RFC 6749 (4.1.2.1)
        # and real providers send back: add it as they would.
        state = parse_qs(urlsplit(authorize_url).query)["state"][0]
        return f"{response.headers['location']}&{urlencode({'state': state})}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The OIDC_* settings (and the allauth configuration made of them) for this provider,
        as serika_web/settings.py would make them from the environment."""
        values: dict[str, Any] = {
            "OIDC_ISSUER_URL": self.url,
            "OIDC_CLIENT_ID": "serika-web",
            "OIDC_CLIENT_SECRET": "serika-web-secret",
            "OIDC_SCOPES": ["openid", "profile", "email"],
            "OIDC_PKCE": True,
            "OIDC_NAME": NAME,
            "OIDC_PROVIDER_ID": PROVIDER_ID,
            "OIDC_GROUPS_CLAIM": "",
            "OIDC_ALLOWED_GROUPS": [],
            "OIDC_ADMIN_GROUPS": [],
            "OIDC_ONLY": False,
            **overrides,
        }
        values["SOCIALACCOUNT_PROVIDERS"] = openid_connect_providers(
            issuer_url=values["OIDC_ISSUER_URL"],
            provider_id=values["OIDC_PROVIDER_ID"],
            name=values["OIDC_NAME"],
            client_id=values["OIDC_CLIENT_ID"],
            secret=values["OIDC_CLIENT_SECRET"],
            scopes=values["OIDC_SCOPES"],
            pkce=values["OIDC_PKCE"],
        )
        return values

    def server_env(self, **overrides: str) -> dict[str, str]:
        """The same settings as environment variables, for a daphne server."""
        env = {
            "OIDC_ISSUER_URL": self.url,
            "OIDC_CLIENT_ID": "serika-web",
            "OIDC_CLIENT_SECRET": "serika-web-secret",
            "OIDC_NAME": NAME,
            "OIDC_PROVIDER_ID": PROVIDER_ID,
        }
        env.update(overrides)
        return env


@pytest.fixture(scope="module")
def oidc_provider() -> Iterator[Provider]:
    """The provider, on a free port of 127.0.0.1 for the module's tests."""
    server = make_server("127.0.0.1", 0, oidc_provider_mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield Provider(server.server_port)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()

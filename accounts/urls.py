"""Under /accounts/: allauth's OpenID Connect sign-in and callback, and nothing else of
allauth (its password, sign-up and e-mail pages would be a second, unthrottled login).

    POST /accounts/oidc/<OIDC_PROVIDER_ID>/login/           the button: off to the provider
    GET  /accounts/oidc/<OIDC_PROVIDER_ID>/login/callback/  back from it (register this URL)
"""

from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", include("allauth.socialaccount.providers.openid_connect.urls")),
    # allauth sends people to its login page by this name in a few corners; ours is the one.
    path(
        "login/",
        RedirectView.as_view(pattern_name="login", query_string=True),
        name="account_login",
    ),
]

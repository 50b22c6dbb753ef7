"""The login pages: Django's password login (throttled by django-axes) with the single sign-on
button beside it, and, with OIDC_ONLY, the button alone."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.urls import reverse


def sso_button() -> dict | None:
    """What the "Sign in with <name>" button needs, or None while single sign-on is off."""
    if not settings.OIDC_ISSUER_URL:
        return None
    return {
        "name": settings.OIDC_NAME,
        "url": reverse("openid_connect_login", kwargs={"provider_id": settings.OIDC_PROVIDER_ID}),
    }


def password_login_refused(request, next_url: str = ""):
    """The login page again (HTTP 403), saying that passwords are not accepted: no password is
    ever checked, so django-axes counts nothing either."""
    return render(
        request,
        "registration/login.html",
        {"sso": sso_button(), "password_login": False, "password_refused": True, "next": next_url},
        status=403,
    )


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if settings.OIDC_ONLY:
            return password_login_refused(request, self.get_redirect_url())
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            sso=sso_button(), password_login=not settings.OIDC_ONLY, **kwargs
        )


def admin_login(request, extra_context=None):
    """The admin's login: as Django's while passwords are accepted; with OIDC_ONLY, a member
    who is not logged in is sent to the login page's button, and a password is refused."""
    if not settings.OIDC_ONLY:
        return admin.site.login(request, extra_context)
    next_url = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME, "")
    if request.method == "POST":
        return password_login_refused(request, next_url)
    if request.user.is_authenticated:
        # Logged in but not staff: the admin's own page says so (sending them to our login
        # page would bounce straight back here).
        return admin.site.login(request, extra_context)
    query = urlencode({REDIRECT_FIELD_NAME: next_url or reverse("admin:index")})
    return redirect(f"{reverse('login')}?{query}")

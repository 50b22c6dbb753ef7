from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import views as accounts_views

# A database that cannot be reached in time is a 503 page, not a 500 (serika_web/errors.py).
handler500 = "serika_web.errors.server_error"

urlpatterns = [
    # Before the admin's own: refuses passwords there too with OIDC_ONLY.
    path("admin/login/", accounts_views.admin_login),
    path("admin/", admin.site.urls),
    # Django's LoginView (throttled by django-axes) with the single sign-on button.
    path("login/", accounts_views.LoginView.as_view(), name="login"),
    # Single sign-on: allauth's OpenID Connect sign-in and callback only (accounts/urls.py).
    path("accounts/", include("accounts.urls")),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("characters.urls")),
    path("", include("chat.urls")),
    path("", include("usage.urls")),
]

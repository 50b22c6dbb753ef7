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
    # Bringing people in (accounts/signup.py): sign-up, invitation links, the Members page.
    path("signup/", accounts_views.self_signup, name="signup"),
    path("invite/", accounts_views.join, name="join"),
    path("invite/<str:token>/", accounts_views.open_invitation, name="invitation"),
    path("team/members/", accounts_views.members, name="members"),
    path(
        "team/members/invitations/<int:pk>/revoke/",
        accounts_views.revoke_invitation,
        name="revoke_invitation",
    ),
    path(
        "team/members/<int:user_id>/approve/", accounts_views.approve_member, name="approve_member"
    ),
    path("team/members/<int:user_id>/reject/", accounts_views.reject_member, name="reject_member"),
    # Passwords: change (members with one), reset by e-mail (only with EMAIL_URL).
    path("account/password/", accounts_views.password_change, name="password_change"),
    path(
        "account/password/changed/",
        accounts_views.password_change_done,
        name="password_change_done",
    ),
    path("account/password/reset/", accounts_views.password_reset, name="password_reset"),
    path(
        "account/password/reset/sent/",
        accounts_views.password_reset_done,
        name="password_reset_done",
    ),
    path(
        "account/password/reset/<uidb64>/<token>/",
        accounts_views.password_reset_confirm,
        name="password_reset_confirm",
    ),
    path(
        "account/password/reset/done/",
        accounts_views.password_reset_complete,
        name="password_reset_complete",
    ),
    path("", include("characters.urls")),
    path("", include("chat.urls")),
    path("", include("usage.urls")),
]

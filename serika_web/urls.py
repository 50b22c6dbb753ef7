from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

# A database that cannot be reached in time is a 503 page, not a 500 (serika_web/errors.py).
handler500 = "serika_web.errors.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("characters.urls")),
    path("", include("chat.urls")),
]

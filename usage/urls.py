from django.urls import path

from usage import views

urlpatterns = [
    path("usage/", views.my_usage, name="usage"),
    path("usage/team/", views.team_usage, name="team_usage"),
    path("usage/team.csv", views.team_usage_csv, name="team_usage_csv"),
]

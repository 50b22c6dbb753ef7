from django.urls import path

from characters import views

urlpatterns = [
    path("characters/<int:pk>/avatar.png", views.avatar, name="character_avatar"),
]

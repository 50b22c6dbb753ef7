from django.urls import path

from characters import views

urlpatterns = [
    path("characters/", views.library, name="character_library"),
    path("characters/import/", views.import_cards, name="character_import"),
    path("characters/new/", views.create, name="character_create"),
    path("characters/<int:pk>/", views.detail, name="character_detail"),
    path("characters/<int:pk>/edit/", views.edit, name="character_edit"),
    path("characters/<int:pk>/delete/", views.delete, name="character_delete"),
    path("characters/<int:pk>/export.png", views.export, {"fmt": "png"}, name="character_png"),
    path("characters/<int:pk>/export.json", views.export, {"fmt": "json"}, name="character_json"),
    path("characters/<int:pk>/avatar.png", views.avatar, name="character_avatar"),
    path(
        "characters/<int:pk>/avatar-thumbnail.webp",
        views.avatar_thumbnail,
        name="character_avatar_thumbnail",
    ),
    path("persona/", views.persona, name="persona"),
]

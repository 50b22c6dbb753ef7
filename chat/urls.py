from django.urls import path

from chat import transfer_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("conversations/", views.conversations, name="conversations"),
    path("search/", views.search_conversations, name="search_conversations"),
    path("conversations/new/", views.start_conversation, name="start_conversation"),
    path("conversations/export/", transfer_views.export_conversations, name="export_conversations"),
    path("conversations/import/", transfer_views.import_chats, name="import_chats"),
    path(
        "conversations/import/characters/",
        transfer_views.choose_import_characters,
        name="choose_import_characters",
    ),
    path(
        "conversations/<int:pk>/export/",
        transfer_views.export_conversation,
        name="export_conversation",
    ),
    path("conversations/<int:pk>/", views.conversation, name="conversation"),
    path("conversations/<int:pk>/delete/", views.delete_conversation, name="delete_conversation"),
    path("conversations/<int:pk>/settings/", views.chat_settings, name="chat_settings"),
    path("conversations/<int:pk>/pin/", views.pin_conversation, name="pin_conversation"),
    path(
        "conversations/<int:pk>/archive/", views.archive_conversation, name="archive_conversation"
    ),
]

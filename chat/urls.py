from django.urls import path

from chat import views

urlpatterns = [
    path("", views.home, name="home"),
    path("conversations/new/", views.start_conversation, name="start_conversation"),
    path("conversations/<int:pk>/", views.conversation, name="conversation"),
    path("conversations/<int:pk>/delete/", views.delete_conversation, name="delete_conversation"),
    path("conversations/<int:pk>/settings/", views.chat_settings, name="chat_settings"),
]

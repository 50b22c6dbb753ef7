from django.contrib import admin

from chat.models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "character", "model", "updated_at"]
    list_select_related = ["owner", "character"]
    # Raw ids: a select would list every message of every conversation.
    raw_id_fields = ["owner", "current_leaf"]
    search_fields = ["title", "owner__username"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["pk", "conversation", "role", "status", "created_at"]
    list_filter = ["status", "role"]
    raw_id_fields = ["conversation", "parent"]
    readonly_fields = ["content_html", "generator_channel"]

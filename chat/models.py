"""Conversations and their messages."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user) -> ConversationQuerySet:
        """The conversations `user` owns: the only way views and sockets look conversations up."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        # The owner's persona comes along: every send needs it for the prompt.
        return self.filter(owner=user).select_related("character", "owner", "owner__persona")

    def listed(self) -> ConversationQuerySet:
        """In the list order: pinned ones first (latest pin first), then the most recent."""
        return self.filter(archived_at__isnull=True).order_by(
            models.F("pinned_at").desc(nulls_last=True), "-updated_at", "-pk"
        )


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    character = models.ForeignKey(
        "characters.Character",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="conversations",
    )

    class TitleSource(models.TextChoices):
        DEFAULT = "", "The character's name"
        AUTO = "auto", "Written by the model"
        MEMBER = "member", "Set by the member"

    title = models.CharField(max_length=200, blank=True)
    # An automatic title is asked for once, only while the title is the default; a member's
    # own title is never replaced.
    title_source = models.CharField(
        max_length=8, choices=TitleSource.choices, default=TitleSource.DEFAULT, blank=True
    )
    pinned_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=200)
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The end of the branch the conversation shows: its path from the root is what the page
    # shows and what the next reply's prompt holds (chat/tree.py).
    current_leaf = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["owner", "-updated_at"], name="conversation_owner_recent")]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        FAILED = "failed"
        TRUNCATED = "truncated"
        INTERRUPTED = "interrupted"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # Messages form a tree: siblings (same parent) are alternatives of one another, e.g. the
    # regenerated replies to one question, or an edited question and the original. Roots are
    # the opening greetings. A parent is always older than its children.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # The sanitized rendering, stored once a message's text is final so pages never re-render.
    content_html = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    # Machine-readable reason (e.g. "rate_limited", "stalled") and the sentence users see.
    error_code = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Which of the character's greetings an opening message shows (an index into
    # `actions.greetings_of(character)`: 0 is first_mes). Null for every other message.
    greeting_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # Said to the user about how the prompt was built, e.g. that older turns were left out.
    prompt_note = models.CharField(max_length=300, blank=True)
    # The channel of the task generating this reply, so Stop and resync reach it from any process.
    generator_channel = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the member last corrected the text in place (assistant messages); null if never.
    edited_at = models.DateTimeField(null=True, blank=True)
    # Set explicitly by every write; a streaming reply whose process stopped marking it goes stale.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conversation_order"),
            models.Index(fields=["status", "updated_at"], name="message_status_updated"),
        ]
        constraints = [
            # One generation per conversation, enforced by the database so that two workers
            # racing to start a reply cannot both succeed.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="one_streaming_reply_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk} ({self.status})"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

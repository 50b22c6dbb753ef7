"""Characters (personas) that members chat with; curated by staff in the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from chat.prompt import PromptCharacter


class CharacterQuerySet(models.QuerySet):
    def visible_to(self, user) -> CharacterQuerySet:
        """The characters `user` may see and chat with."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(is_active=True)


class Character(models.Model):
    """A persona. Field names follow the Character Card V2/V3 `data` object."""

    name = models.CharField(max_length=200)
    avatar = models.ImageField(upload_to="avatars/", blank=True)
    description = models.TextField(blank=True)
    personality = models.TextField(blank=True)
    scenario = models.TextField(blank=True)
    system_prompt = models.TextField(
        blank=True, help_text="Replaces the default system prompt; {{original}} inserts it."
    )
    first_mes = models.TextField(
        "greeting", blank=True, help_text="Opens every new chat as the character's first message."
    )
    serika_character_id = models.CharField(
        "Serika character id",
        max_length=200,
        blank=True,
        help_text="Sent as character_id: the Serika API then adopts its server-side persona.",
    )
    default_model = models.CharField(
        max_length=200, blank=True, help_text="Empty: the site default (SERIKA_DEFAULT_MODEL)."
    )
    is_active = models.BooleanField(default=True, help_text="Inactive characters are hidden.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CharacterQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def model_name(self) -> str:
        """The upstream model new chats with this character use."""
        return self.default_model or settings.SERIKA_DEFAULT_MODEL

    def as_prompt_character(self) -> PromptCharacter:
        """The prompt-relevant fields, for `chat.prompt.build_prompt`."""
        return PromptCharacter(
            name=self.name,
            description=self.description,
            personality=self.personality,
            scenario=self.scenario,
            system_prompt=self.system_prompt,
        )

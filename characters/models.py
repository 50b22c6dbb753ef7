"""Characters (personas) that members chat with; curated by staff in the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from characters.cards import Card
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
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="characters",
        help_text="Who imported or created it; empty for site-wide characters.",
    )
    # The rest of the Character Card V2/V3 `data` fields.
    nickname = models.CharField(
        max_length=200, blank=True, help_text="Used for {{char}} instead of the name when set."
    )
    mes_example = models.TextField(
        "example dialogue", blank=True, help_text="Blocks separated by <START> lines."
    )
    creator_notes = models.TextField(blank=True, help_text="Shown to people, never in prompts.")
    post_history_instructions = models.TextField(
        blank=True, help_text="Sent after the chat history; {{original}} inserts the default."
    )
    alternate_greetings = models.JSONField(
        default=list, blank=True, help_text="A JSON list of strings."
    )
    group_only_greetings = models.JSONField(
        default=list, blank=True, help_text="A JSON list of strings (group chats only)."
    )
    tags = models.JSONField(default=list, blank=True, help_text="A JSON list of strings.")
    creator = models.CharField(max_length=200, blank=True)
    character_version = models.CharField(max_length=200, blank=True)
    character_book = models.JSONField(
        "lorebook", null=True, blank=True, help_text="The card's character_book object (JSON)."
    )
    extensions = models.JSONField(
        default=dict, blank=True, help_text="Card extensions (JSON); unknown keys are kept."
    )
    card_extra = models.JSONField(
        default=dict,
        blank=True,
        help_text="Card data without a column (spec, V3 extras, unknown keys), kept for export.",
    )
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
            nickname=self.nickname,
            description=self.description,
            personality=self.personality,
            scenario=self.scenario,
            system_prompt=self.system_prompt,
            post_history_instructions=self.post_history_instructions,
            mes_example=self.mes_example,
            character_book=self.character_book,
        )

    def to_card(self) -> Card:
        """This character as a `Card`: exactly the card it was imported from, plus edits."""
        from characters.import_export import character_to_card

        return character_to_card(self)

    @classmethod
    def from_card(cls, card: Card, owner=None) -> Character:
        """A new, unsaved character holding every field of `card`, owned by `owner`."""
        from characters.import_export import character_from_card

        return character_from_card(card, owner)

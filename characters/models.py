"""Characters (personas) that members chat with; curated by staff in the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q

from cardspec.cards import Card
from cardspec.prompt import PromptCharacter
from serika_web.rendering import render_card_text


class Visibility(models.TextChoices):
    EVERYONE = "everyone", "Everyone"
    GROUPS = "groups", "Members of the chosen groups"
    OWNER = "owner", "Only its owner"


class PromptMode(models.TextChoices):
    LOCAL = "local", "Send our prompt; also send character_id when set"
    UPSTREAM = "upstream", "Upstream persona only: send character_id and no local persona prompt"


class CharacterQuerySet(models.QuerySet):
    def visible_to(self, user) -> CharacterQuerySet:
        """The characters `user` may see and chat with: the one lookup for views and sockets.

        Active characters that are visible to everyone, shared with a group `user` belongs to,
        or owned by `user`. The rule is the same for staff and superusers: a member's private
        character stays private on the member pages; staff curate every character in the admin,
        which has its own (permission-checked) queryset. Anonymous and inactive users see none.
        One query, whatever the number of groups (an EXISTS subquery, no join fan-out).
        """
        if not user.is_authenticated or not user.is_active:
            return self.none()
        in_a_group = Character.groups.through.objects.filter(
            character_id=OuterRef("pk"), group__user=user
        )
        return self.filter(
            Q(visibility=Visibility.EVERYONE)
            | Q(owner=user)
            | (Q(visibility=Visibility.GROUPS) & Exists(in_a_group)),
            is_active=True,
        )


class Character(models.Model):
    """A persona. Field names follow the Character Card V2/V3 `data` object."""

    name = models.CharField(max_length=200)
    avatar = models.ImageField(upload_to="avatars/", blank=True)
    # The list thumbnail (library, home, chat header): a small WebP of the avatar, made when a
    # card is imported, else on the first list that shows it (`avatar_thumbnail_of` names the
    # avatar file it was made from; any other avatar means it is out of date).
    avatar_thumbnail = models.ImageField(
        upload_to="avatars/thumbnails/", blank=True, editable=False
    )
    avatar_thumbnail_of = models.CharField(max_length=100, blank=True, editable=False)
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
    visibility = models.CharField(
        max_length=10,
        choices=Visibility.choices,
        default=Visibility.EVERYONE,
        help_text="Who may see and chat with it. The owner always may (while it is active).",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="characters",
        help_text='With "Members of the chosen groups": the groups that see it.',
    )
    prompt_mode = models.CharField(
        max_length=10,
        choices=PromptMode.choices,
        default=PromptMode.LOCAL,
        help_text="Without a Serika character id, our prompt is always sent. With one: "
        '"local" sends our persona prompt and the character_id (the upstream persona and our '
        'prompt both apply; ours comes as the system message); "upstream" sends only the '
        "character_id and the chat history, so the server-side persona alone speaks.",
    )
    context_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Context budget in tokens for this character's chats; empty = the site default.",
    )
    # The rest of the Character Card V2/V3 `data` fields.
    nickname = models.CharField(
        max_length=200, blank=True, help_text="Used for {{char}} instead of the name when set."
    )
    mes_example = models.TextField(
        "example dialogue", blank=True, help_text="Blocks separated by <START> lines."
    )
    creator_notes = models.TextField(blank=True, help_text="Shown to people, never in prompts.")
    # creator_notes as the character's page shows it, rendered once on save: rendering on every
    # view cost seconds of CPU for a huge or pathological field.
    creator_notes_html = models.TextField(blank=True, editable=False)
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

    def save(self, *args, **kwargs) -> None:
        """Save, with `creator_notes_html` rendered from `creator_notes` (sanitized)."""
        self.creator_notes_html = render_card_text(self.creator_notes)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "creator_notes" in update_fields:
            kwargs["update_fields"] = {*update_fields, "creator_notes_html"}
        super().save(*args, **kwargs)

    @property
    def model_name(self) -> str:
        """The upstream model new chats with this character use."""
        return self.default_model or settings.SERIKA_DEFAULT_MODEL

    def as_prompt_character(self) -> PromptCharacter:
        """The prompt-relevant fields, for `cardspec.prompt.build_prompt`; the character's note is
        SillyTavern's `extensions.depth_prompt`, passed as stored (the prompt reads it)."""
        extensions = self.extensions if isinstance(self.extensions, dict) else {}
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
            depth_prompt=extensions.get("depth_prompt"),
        )

    def to_card(self) -> Card:
        """This character as a `Card`: exactly the card it was imported from, plus edits."""
        from characters.import_export import character_to_card

        return character_to_card(self)

    def is_visible_to(self, user) -> bool:
        """`visible_to`'s rule applied to this row as loaded, for a check on every send: it
        queries only for group membership, and only for a character shared with groups."""
        if not user.is_authenticated or not user.is_active or not self.is_active:
            return False
        if self.visibility == Visibility.EVERYONE or self.owner_id == user.pk:
            return True
        return self.visibility == Visibility.GROUPS and self.groups.filter(user=user).exists()

    @classmethod
    def from_card(cls, card: Card, owner=None) -> Character:
        """A new, unsaved character holding every field of `card`, owned by `owner`."""
        from characters.import_export import character_from_card

        return character_from_card(card, owner)


class UserPersona(models.Model):
    """How a member appears to characters: the name used for {{user}} and a self-description."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="persona"
    )
    display_name = models.CharField(
        max_length=100, blank=True, help_text="Used for {{user}}; empty = your user name."
    )
    description = models.TextField(
        blank=True, max_length=4000, help_text="Sent to characters as a description of you."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.display_name or str(self.user)

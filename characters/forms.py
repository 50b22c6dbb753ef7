"""Forms for characters (admin and member pages) and for the member's own persona."""

from __future__ import annotations

from django import forms
from django.core.files.base import ContentFile

from cardspec.cards import CardError, normalize_character_book
from cardspec.images import AvatarError, normalize_avatar
from cardspec.values import json_object, text_list
from characters.import_export import check_character_card
from characters.models import Character, UserPersona

MAX_IMPORT_FILES = 50


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".png,.json,.charx"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data]
        files = [file for file in files if file]
        if not files:
            raise forms.ValidationError("Choose at least one card file.")
        if len(files) > MAX_IMPORT_FILES:
            raise forms.ValidationError(f"At most {MAX_IMPORT_FILES} files at a time.")
        return files


class ImportCardsForm(forms.Form):
    files = MultipleFileField(label="Card files")


def _json_textarea(rows: int = 6) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": 80, "class": "vLargeTextField"})


class CharacterForm(forms.ModelForm):
    """Every field a staff member edits in the admin, each checked as the card spec wants."""

    class Meta:
        model = Character
        fields = [
            "name", "nickname", "avatar", "is_active", "owner", "visibility", "groups", "tags",
            "description", "personality", "scenario", "first_mes", "alternate_greetings",
            "group_only_greetings", "mes_example", "system_prompt", "post_history_instructions",
            "character_book", "default_model", "serika_character_id", "prompt_mode",
            "context_tokens", "creator", "character_version", "creator_notes", "extensions",
            "card_extra",
        ]  # fmt: skip
        widgets = {
            "alternate_greetings": _json_textarea(),
            "group_only_greetings": _json_textarea(3),
            "tags": _json_textarea(2),
            "character_book": _json_textarea(16),
            "extensions": _json_textarea(8),
            "card_extra": _json_textarea(8),
        }

    # Fields that are not card data (relations, files, site settings): left out of the check.
    _NOT_CARD_FIELDS = ("avatar", "owner", "groups")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Site settings, not card data: a post that leaves them out (a scripted edit made
        # before they existed) keeps the character's current values instead of failing.
        for name in ("visibility", "prompt_mode"):
            if name in self.fields:
                self.fields[name].required = False

    def _kept(self, name):
        return self.cleaned_data.get(name) or getattr(self.instance, name)

    def clean_visibility(self):
        return self._kept("visibility")

    def clean_prompt_mode(self):
        return self._kept("prompt_mode")

    def clean_avatar(self):
        avatar = self.cleaned_data.get("avatar")
        if not avatar or not hasattr(avatar, "content_type"):
            return avatar  # unchanged or cleared
        try:
            png = normalize_avatar(avatar.read())
        except AvatarError as exc:
            raise forms.ValidationError(str(exc)) from exc
        # Client file names never become paths.
        return ContentFile(png, name="avatar.png")

    def _checked(self, name, check):
        value = self.cleaned_data.get(name)
        try:
            return check(value)
        except CardError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_tags(self):
        return self._checked("tags", lambda v: text_list(v, "tags"))

    def clean_alternate_greetings(self):
        return self._checked("alternate_greetings", lambda v: text_list(v, "alternate_greetings"))

    def clean_group_only_greetings(self):
        return self._checked("group_only_greetings", lambda v: text_list(v, "group_only_greetings"))

    def clean_extensions(self):
        return self._checked("extensions", lambda v: json_object(v, "extensions"))

    def clean_card_extra(self):
        return self._checked("card_extra", lambda v: json_object(v, "card_extra"))

    def clean_character_book(self):
        return self._checked("character_book", normalize_character_book)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # The instance's current values, overlaid with the form's: a member form edits a subset.
        probe = Character(
            **{
                field.attname: getattr(self.instance, field.attname)
                for field in Character._meta.concrete_fields
                if field.name not in self._NOT_CARD_FIELDS
            }
        )
        for name in self.Meta.fields:
            if name not in self._NOT_CARD_FIELDS and name in cleaned:
                setattr(probe, name, cleaned[name])
        try:
            check_character_card(probe)
        except CardError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


class TagsField(forms.CharField):
    """Tags as one comma-separated line (stored as the card's list of strings)."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(tag) for tag in value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        return [tag.strip() for tag in text.split(",") if tag.strip()]


class GreetingsField(forms.CharField):
    """Alternate greetings, one per block, blocks separated by a line holding only `---`."""

    SEPARATOR = "\n---\n"

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return self.SEPARATOR.join(str(greeting) for greeting in value)
        return value

    def to_python(self, value):
        text = super().to_python(value).replace("\r\n", "\n")
        blocks = [block.strip() for block in f"\n{text}\n".split(self.SEPARATOR)]
        return [block for block in blocks if block]


class MemberCharacterForm(CharacterForm):
    """What a member may edit on their own (always private) characters: the persona itself.

    Visibility, owner, model, upstream persona and lorebook stay with staff (the admin); fields
    the form leaves out keep their values, so an imported card still exports unchanged.
    """

    tags = TagsField(required=False, help_text="Separated by commas.")
    alternate_greetings = GreetingsField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Separate greetings with a line holding only ---.",
    )

    class Meta(CharacterForm.Meta):
        fields = [
            "name", "nickname", "avatar", "tags", "description", "personality", "scenario",
            "first_mes", "alternate_greetings", "mes_example", "system_prompt",
            "post_history_instructions", "creator_notes",
        ]  # fmt: skip
        widgets = {}


class PersonaForm(forms.ModelForm):
    class Meta:
        model = UserPersona
        fields = ["display_name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 6})}

"""Forms for characters (admin and member pages) and for the member's own persona."""

from __future__ import annotations

from django import forms
from django.core.files.base import ContentFile
from django.utils.html import escape

from cardspec.cards import CardError, normalize_character_book
from cardspec.images import AvatarError, normalize_avatar
from cardspec.macros import normalize_newlines
from cardspec.values import clean_json_value, json_object, text_list
from characters.editors import GreetingsField, LorebookField, TagsField
from characters.import_export import check_character_card
from characters.models import Character, UserPersona

MAX_IMPORT_FILES = 50


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".png,.json,.charx,.webp"}))
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
    """Every field a staff member edits in the admin, each checked as the card spec wants: tags,
    greetings and the lorebook with their own editors (`characters/editors.py`), checked by the
    import's rules; the card data without a structure (extensions, card_extra) as raw JSON."""

    tags = TagsField(label="Tags", required=False)
    alternate_greetings = GreetingsField(
        item_label="Alternate greeting",
        label="Alternate greetings",
        required=False,
        help_text="Offered instead of the greeting. Empty one to remove it.",
    )
    group_only_greetings = GreetingsField(
        item_label="Group-only greeting",
        label="Group-only greetings",
        required=False,
        help_text="Greetings for group chats only.",
    )
    character_book = LorebookField(
        label="Lorebook",
        required=False,
        help_text="Entries added to the prompt when their keys come up in the chat.",
    )

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
        widgets = {"extensions": _json_textarea(8), "card_extra": _json_textarea(8)}

    # Fields that are not card data (relations, files, site settings): left out of the check.
    _NOT_CARD_FIELDS = ("avatar", "owner", "groups")
    # Multi-line card text. A browser posts it back with \r\n line endings, and Django would
    # trim it: a field posted back as shown keeps the card's text exactly, an edited one is
    # stored with \n line endings, trimmed.
    _CARD_TEXTS = (
        "description", "personality", "scenario", "first_mes", "mes_example", "system_prompt",
        "post_history_instructions", "creator_notes",
    )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The admin shows help texts as HTML; ours are plain text ("<START> lines").
        for form_field in self.fields.values():
            form_field.help_text = escape(form_field.help_text)
        for name in self._CARD_TEXTS:
            if name in self.fields:
                self.fields[name].strip = False
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

    def _unless_unchanged(self, name):
        """The posted list, or the stored one when the page posted it back as shown: the plain
        tag line splits a tag holding a comma, browsers send greetings with CRLF line endings."""
        value = self.cleaned_data.get(name)
        stored = self.get_initial_for_field(self.fields[name], name)
        return stored if value == self.fields[name].as_posted(stored) else value

    def clean_tags(self):
        return self._checked("tags", lambda _: text_list(self._unless_unchanged("tags"), "tags"))

    def clean_alternate_greetings(self):
        name = "alternate_greetings"
        return self._checked(name, lambda _: text_list(self._unless_unchanged(name), name))

    def clean_group_only_greetings(self):
        name = "group_only_greetings"
        return self._checked(name, lambda _: text_list(self._unless_unchanged(name), name))

    def clean_extensions(self):
        return self._checked("extensions", lambda v: json_object(v, "extensions"))

    def clean_card_extra(self):
        return self._checked("card_extra", lambda v: json_object(v, "card_extra"))

    def clean_character_book(self):
        name = "character_book"
        if self.fields[name].widget.value_omitted_from_data(
            self.data, self.files, self.add_prefix(name)
        ):
            # A post without the editor (a script written before it existed) keeps the book.
            return self.instance.character_book
        # The import's rules: cleaned text (no NUL), then the lorebook's own checks.
        return self._checked(name, lambda book: normalize_character_book(clean_json_value(book)))

    def clean(self):
        cleaned = super().clean()
        for name in self._CARD_TEXTS:
            if isinstance(cleaned.get(name), str):
                posted = normalize_newlines(cleaned[name])
                stored = getattr(self.instance, name) or ""
                cleaned[name] = stored if posted == normalize_newlines(stored) else posted.strip()
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


class MemberCharacterForm(CharacterForm):
    """What a member may edit on their own (always private) characters: the persona itself,
    tags, greetings and the lorebook.

    Visibility, owner, model, upstream persona, group-only greetings and the card data without a
    structure stay with staff (the admin); fields the form leaves out keep their values, and the
    editors keep what they do not show, so an imported card still exports unchanged.
    """

    group_only_greetings = None  # removes the inherited field: staff's, as before
    character_book = LorebookField(
        label="Lorebook",
        required=False,
        help_text="Entries added to the prompt when their keys come up in the chat: "
        "add, remove and reorder them here.",
    )

    class Meta(CharacterForm.Meta):
        fields = [
            "name", "nickname", "avatar", "tags", "description", "personality", "scenario",
            "first_mes", "alternate_greetings", "mes_example", "system_prompt",
            "post_history_instructions", "character_book", "creator_notes",
        ]  # fmt: skip
        widgets = {}


class PersonaForm(forms.ModelForm):
    class Meta:
        model = UserPersona
        fields = ["display_name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 6})}

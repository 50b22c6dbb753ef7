from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.http import HttpResponse, HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse

from characters.card_values import json_object, text_list
from characters.cards import MAX_CARD_FILE_BYTES, CardError, normalize_character_book
from characters.images import AvatarError, normalize_avatar
from characters.import_export import (
    check_character_card,
    duplicate_character,
    export_card,
    export_zip,
    import_card_file,
)
from characters.models import Character

MAX_IMPORT_FILES = 50

# Inline templates: the admin pages extend Django's own admin templates.
_CHANGE_LIST_TEMPLATE = engines["django"].from_string(
    """{% extends "admin/change_list.html" %}
{% block object-tools-items %}
  <li><a href="{% url 'admin:characters_character_import' %}">Import cards</a></li>
  {{ block.super }}
{% endblock %}"""
)
_IMPORT_TEMPLATE = engines["django"].from_string(
    """{% extends "admin/base_site.html" %}
{% block breadcrumbs %}<div class="breadcrumbs">
  <a href="{% url 'admin:index' %}">Home</a> &rsaquo;
  <a href="{% url 'admin:characters_character_changelist' %}">Characters</a> &rsaquo; Import cards
</div>{% endblock %}
{% block content %}
<p>Character cards as PNG (V2 <code>chara</code> / V3 <code>ccv3</code>), JSON (V1/V2/V3) or
CHARX files. Each file becomes a new character; a file that cannot be read is reported and
nothing is saved for it.</p>
{% if results %}<ul class="import-results">
  {% for result in results %}<li class="{{ result.status }}"><strong>{{ result.filename }}</strong>:
    {% if result.character %}imported as
      <a href="{% url 'admin:characters_character_change' result.character.pk %}">{{ result.character.name }}</a>
    {% else %}{{ result.error }}{% endif %}
    {% for warning in result.warnings %}<br><em>{{ warning }}</em>{% endfor %}
  </li>{% endfor %}
</ul>{% endif %}
<form method="post" enctype="multipart/form-data">{% csrf_token %}
  {{ form.as_p }}
  <input type="submit" value="Import">
</form>
{% endblock %}"""
)


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
    class Meta:
        model = Character
        fields = [
            "name", "nickname", "avatar", "is_active", "owner", "tags",
            "description", "personality", "scenario", "first_mes", "alternate_greetings",
            "group_only_greetings", "mes_example", "system_prompt", "post_history_instructions",
            "character_book", "default_model", "serika_character_id", "creator",
            "character_version", "creator_notes", "extensions", "card_extra",
        ]  # fmt: skip
        widgets = {
            "alternate_greetings": _json_textarea(),
            "group_only_greetings": _json_textarea(3),
            "tags": _json_textarea(2),
            "character_book": _json_textarea(16),
            "extensions": _json_textarea(8),
            "card_extra": _json_textarea(8),
        }

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
        probe = Character(
            **{
                name: cleaned.get(name)
                for name in self.Meta.fields
                if name not in ("avatar", "owner") and name in cleaned
            }
        )
        try:
            check_character_card(probe)
        except CardError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return cleaned


def _download(content: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _export(queryset, fmt: str) -> HttpResponse:
    characters = list(queryset)
    if len(characters) == 1:
        return _download(*export_card(characters[0], fmt))
    return _download(export_zip(characters, fmt), "application/zip", f"characters-{fmt}.zip")


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    form = CharacterForm
    change_list_template = _CHANGE_LIST_TEMPLATE
    list_display = [
        "name", "tag_list", "owner", "default_model", "serika_character_id", "is_active",
        "updated_at",
    ]  # fmt: skip
    list_filter = ["is_active"]
    search_fields = ["name", "nickname", "tags"]
    raw_id_fields = ["owner"]
    actions = ["export_png", "export_json", "duplicate"]
    fieldsets = [
        (None, {"fields": ["name", "nickname", "avatar", "is_active", "owner", "tags"]}),
        (
            "Persona",
            {
                "fields": [
                    "description",
                    "personality",
                    "scenario",
                    "first_mes",
                    "alternate_greetings",
                    "group_only_greetings",
                    "mes_example",
                ]
            },
        ),
        (
            "Prompting",
            {
                "fields": [
                    "system_prompt",
                    "post_history_instructions",
                    "character_book",
                    "default_model",
                    "serika_character_id",
                ]
            },
        ),
        ("Card metadata", {"fields": ["creator", "character_version", "creator_notes"]}),
        (
            "Card data kept for export",
            {
                "classes": ["collapse"],
                "fields": ["extensions", "card_extra"],
                "description": "Card data this site does not use, written back on export. "
                "Our own keys use the serika_web/ prefix.",
            },
        ),
    ]

    @admin.display(description="tags")
    def tag_list(self, obj: Character) -> str:
        return ", ".join(str(tag) for tag in obj.tags or [])

    def get_urls(self):
        custom = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="characters_character_import",
            )
        ]
        return custom + super().get_urls()

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        results = []
        if request.method == "POST":
            form = ImportCardsForm(request.POST, request.FILES)
            if form.is_valid():
                results = [
                    self._import_one(request, upload) for upload in form.cleaned_data["files"]
                ]
                imported = sum(1 for result in results if result["character"])
                if imported:
                    self.message_user(request, f"Imported {imported} character(s).")
                if imported < len(results):
                    self.message_user(
                        request,
                        f"{len(results) - imported} file(s) could not be imported.",
                        messages.ERROR,
                    )
                form = ImportCardsForm()
        else:
            form = ImportCardsForm()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import character cards",
            "form": form,
            "results": results,
        }
        return TemplateResponse(request, _IMPORT_TEMPLATE, context)

    def _import_one(self, request, upload) -> dict:
        result = {"filename": upload.name, "character": None, "error": "", "warnings": []}
        if upload.size > MAX_CARD_FILE_BYTES:
            result["error"] = "The file is too large for a character card."
            result["status"] = "error"
            return result
        try:
            character, warnings = import_card_file(upload.read(), upload.name, request.user)
        except CardError as exc:
            result["error"] = str(exc)
            result["status"] = "error"
            return result
        self.log_addition(request, character, [{"added": {}}])
        result.update(character=character, warnings=warnings, status="success")
        return result

    @admin.action(description="Export selected characters as PNG cards")
    def export_png(self, request, queryset):
        return _export(queryset, "png")

    @admin.action(description="Export selected characters as JSON cards")
    def export_json(self, request, queryset):
        return _export(queryset, "json")

    @admin.action(description="Duplicate selected characters", permissions=["add"])
    def duplicate(self, request, queryset):
        copies = [duplicate_character(character) for character in queryset]
        for character in copies:
            self.log_addition(request, character, [{"added": {}}])
        self.message_user(request, f"Duplicated {len(copies)} character(s).")
        return HttpResponseRedirect(reverse("admin:characters_character_changelist"))

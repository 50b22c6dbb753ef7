from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse

from characters.forms import CharacterForm, ImportCardsForm
from characters.import_export import (
    UploadResult,
    duplicate_character,
    export_card,
    export_zip,
    import_upload,
)
from characters.models import Character, UserPersona
from usage import rate_limits

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
<p>Character cards as PNG (V2 <code>chara</code> / V3 <code>ccv3</code>), JSON (V1/V2/V3),
CHARX files or WebP cards as TavernAI saved them. Each file becomes a new character; a file that cannot be read is reported and
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
        "name", "tag_list", "owner", "visibility", "default_model", "serika_character_id",
        "is_active", "updated_at",
    ]  # fmt: skip
    list_select_related = ["owner"]
    list_filter = ["visibility", "is_active", "prompt_mode"]
    search_fields = ["name", "nickname", "tags"]
    raw_id_fields = ["owner"]
    filter_horizontal = ["groups"]
    actions = ["export_png", "export_json", "duplicate"]
    fieldsets = [
        (None, {"fields": ["name", "nickname", "avatar", "is_active", "tags"]}),
        (
            "Who sees it",
            {
                "fields": ["visibility", "groups", "owner"],
                "description": "Everyone; the members of the chosen groups; or only its owner. "
                "The owner always sees their own character. Staff see every character here, "
                "but on the member pages the same rule applies to them as to anyone.",
            },
        ),
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
                    "default_model",
                    "context_tokens",
                    "serika_character_id",
                    "prompt_mode",
                ]
            },
        ),
        ("Lorebook", {"fields": ["character_book"]}),
        ("Card metadata", {"fields": ["creator", "character_version", "creator_notes"]}),
        (
            "Card data kept for export",
            {
                "classes": ["collapse"],
                "fields": ["extensions", "card_extra"],
                "description": "Card data this site does not use, written back on export, as "
                "raw JSON. Our own keys use the serika_web/ prefix.",
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
                files = form.cleaned_data["files"]
                # Staff's imports count against the same limit as members' (a loop of uploads
                # costs the server the same).
                if refusal := rate_limits.check_card_import(request.user.pk, len(files)):
                    return rate_limits.refused_page(request, refusal)
                results = [self._import_one(request, upload) for upload in files]
                imported = sum(1 for result in results if result.character)
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

    def _import_one(self, request, upload) -> UploadResult:
        result = import_upload(upload, request.user)
        if result.character:
            self.log_addition(request, result.character, [{"added": {}}])
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


@admin.register(UserPersona)
class UserPersonaAdmin(admin.ModelAdmin):
    list_display = ["user", "display_name", "updated_at"]
    search_fields = ["user__username", "display_name"]
    raw_id_fields = ["user"]
    list_select_related = ["user"]

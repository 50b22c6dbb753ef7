from django import forms
from django.contrib import admin
from django.core.files.base import ContentFile

from characters.images import AvatarError, normalize_avatar
from characters.models import Character


class CharacterForm(forms.ModelForm):
    class Meta:
        model = Character
        fields = [
            "name", "avatar", "is_active", "description", "personality", "scenario",
            "first_mes", "system_prompt", "default_model", "serika_character_id",
        ]  # fmt: skip

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


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    form = CharacterForm
    list_display = ["name", "default_model", "serika_character_id", "is_active", "updated_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "avatar", "is_active"]}),
        ("Persona", {"fields": ["description", "personality", "scenario", "first_mes"]}),
        ("Prompting", {"fields": ["system_prompt", "default_model", "serika_character_id"]}),
    ]

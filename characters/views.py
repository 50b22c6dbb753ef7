"""Member pages for characters: the library, a character's page, import/create/edit/delete/export
of one's own characters, the member's persona, and avatars (served as images only).

Every lookup goes through `Character.objects.visible_to(user)`; a character that is not visible is
404, and one that is visible but not yours is 404 too on the owner-only pages.
"""

from __future__ import annotations

from collections import Counter

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db.models import Q
from django.db.models.functions import Substr
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cardspec.images import AvatarError, thumbnail_of_png
from cardspec.macros import card_text
from characters.forms import ImportCardsForm, MemberCharacterForm, PersonaForm
from characters.import_export import export_card, import_upload
from characters.models import Character, UserPersona, Visibility
from characters.personas import persona_for
from usage import rate_limits

SUMMARY_CHARS = 300  # of the description, read for the library's short text
MAX_LIBRARY_TAGS = 40  # the most used tags offered as filters
MAX_QUERY_CHARS = 100


def _members_may_import() -> bool:
    return settings.CHARACTERS_MEMBERS_MAY_IMPORT


def _require_member_editing() -> None:
    if not _members_may_import():
        raise PermissionDenied("An administrator has turned off member characters.")


def _own_character(user, pk) -> Character:
    """`user`'s own character `pk`: anyone else's (or none) is 404."""
    return get_object_or_404(Character.objects.visible_to(user).filter(owner=user), pk=pk)


def _has_tag(character: Character, tag: str) -> bool:
    wanted = tag.casefold()
    return any(isinstance(t, str) and t.casefold() == wanted for t in character.tags or [])


@require_GET
@login_required
def library(request: HttpRequest) -> HttpResponse:
    """Every character the member may chat with, searchable by name and filterable by tag."""
    query = request.GET.get("q", "").strip()[:MAX_QUERY_CHARS]
    tag = request.GET.get("tag", "").strip()[:MAX_QUERY_CHARS]
    visible = Character.objects.visible_to(request.user)
    found = visible.annotate(summary=Substr("description", 1, SUMMARY_CHARS)).only(
        "pk", "name", "nickname", "avatar", "tags", "owner_id", "visibility"
    )
    if query:
        found = found.filter(Q(name__icontains=query) | Q(nickname__icontains=query))
    characters = list(found)
    if tag:
        # Tag containment in a JSON list has no portable lookup (SQLite has none), so the
        # exact, case-insensitive match is done here on the rows already read.
        characters = [character for character in characters if _has_tag(character, tag)]
    user_name, _ = persona_for(request.user)
    for character in characters:
        character.summary_text = card_text(character.summary or "", character, user_name)
    counts = Counter(
        t
        for tags in visible.values_list("tags", flat=True)
        for t in tags or []
        if isinstance(t, str)
    )
    tags = sorted((t for t, _ in counts.most_common(MAX_LIBRARY_TAGS)), key=str.casefold)
    return render(
        request,
        "characters/library.html",
        {
            "characters": characters,
            "query": query,
            "tag": tag,
            "tags": tags,
            "may_import": _members_may_import(),
        },
    )


@require_GET
@login_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    character = get_object_or_404(Character.objects.visible_to(request.user), pk=pk)
    user_name, _ = persona_for(request.user)
    greetings = [
        card_text(text, character, user_name)
        for text in [character.first_mes, *(character.alternate_greetings or [])]
        if isinstance(text, str) and text.strip()
    ]
    return render(
        request,
        "characters/detail.html",
        {
            "character": character,
            "description": card_text(character.description, character, user_name),
            "scenario": card_text(character.scenario, character, user_name),
            # Rendered and sanitized when the character was saved (`Character.save`).
            "creator_notes_html": mark_safe(character.creator_notes_html),  # noqa: S308
            "greetings": greetings,
            "tags": [t for t in character.tags or [] if isinstance(t, str)],
            "is_owner": character.owner_id == request.user.pk,
            "may_edit": character.owner_id == request.user.pk and _members_may_import(),
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def import_cards(request: HttpRequest) -> HttpResponse:
    """Import card files as new characters private to the member."""
    _require_member_editing()
    results = []
    form = ImportCardsForm()
    if request.method == "POST":
        form = ImportCardsForm(request.POST, request.FILES)
        if form.is_valid():
            files = form.cleaned_data["files"]
            if refusal := rate_limits.check_card_import(request.user.pk, len(files)):
                return rate_limits.refused_page(request, refusal)
            results = [
                import_upload(upload, request.user, visibility=Visibility.OWNER) for upload in files
            ]
            imported = [result.character for result in results if result.character]
            if len(imported) == 1 and len(results) == 1:
                messages.success(request, f"Imported {imported[0].name}.")
                return redirect("character_detail", pk=imported[0].pk)
            form = ImportCardsForm()
    return render(request, "characters/import.html", {"form": form, "results": results})


@require_http_methods(["GET", "POST"])
@login_required
def create(request: HttpRequest) -> HttpResponse:
    _require_member_editing()
    character = Character(owner=request.user, visibility=Visibility.OWNER)
    form = MemberCharacterForm(request.POST or None, request.FILES or None, instance=character)
    if request.method == "POST" and form.is_valid():
        character = form.save()
        return redirect("character_detail", pk=character.pk)
    return render(request, "characters/form.html", {"form": form, "character": None})


@require_http_methods(["GET", "POST"])
@login_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    character = _own_character(request.user, pk)
    _require_member_editing()
    form = MemberCharacterForm(request.POST or None, request.FILES or None, instance=character)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Saved.")
        return redirect("character_detail", pk=character.pk)
    return render(request, "characters/form.html", {"form": form, "character": character})


@require_POST
@login_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Members may always delete their own characters; their chats stay, without a character."""
    character = _own_character(request.user, pk)
    name = character.name
    character.delete()
    messages.success(request, f"Deleted {name}.")
    return redirect("character_library")


@require_GET
@login_required
def export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The owner's character as a card file (PNG with V2 + V3 chunks, or V3 JSON)."""
    character = _own_character(request.user, pk)
    content, content_type, filename = export_card(character, fmt)
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_http_methods(["GET", "POST"])
@login_required
def persona(request: HttpRequest) -> HttpResponse:
    """The member's own persona: the name characters call them and what they know of them."""
    instance = UserPersona.objects.filter(user=request.user).first() or UserPersona(
        user=request.user
    )
    form = PersonaForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Your persona is saved.")
        return redirect("persona")
    name, _ = persona_for(request.user)
    return render(request, "characters/persona.html", {"form": form, "shown_name": name})


@require_GET
@login_required
def avatar(request: HttpRequest, pk: int) -> FileResponse:
    """The full avatar, as the card carried it (the character page shows it)."""
    character = get_object_or_404(
        Character.objects.visible_to(request.user).only("pk", "avatar"), pk=pk
    )
    if not character.avatar:
        raise Http404("No avatar.")
    # Avatars are re-encoded to PNG on upload, so the type is known; nosniff comes from
    # SecurityMiddleware, and the CSP sandbox stops anything that still tried to run.
    response = FileResponse(character.avatar.open("rb"), content_type="image/png")
    _image_headers(response)
    return response


@require_GET
@login_required
def avatar_thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    """The avatar's small WebP for lists (library, home, chat header)."""
    character = get_object_or_404(
        Character.objects.visible_to(request.user).only(
            "pk", "avatar", "avatar_thumbnail", "avatar_thumbnail_of"
        ),
        pk=pk,
    )
    if not character.avatar:
        raise Http404("No avatar.")
    response = HttpResponse(_current_thumbnail(character), content_type="image/webp")
    _image_headers(response)
    return response


def _image_headers(response: HttpResponseBase) -> None:
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"


def _current_thumbnail(character: Character) -> bytes:
    """The stored thumbnail of the current avatar, made and stored now if there is none yet.

    Imports store it with the avatar; an avatar uploaded in a form (or stored before thumbnails
    existed) gets it on the first list that shows it, from one decode of the stored PNG.
    """
    if character.avatar_thumbnail and character.avatar_thumbnail_of == character.avatar.name:
        try:
            with character.avatar_thumbnail.open("rb") as handle:
                return handle.read()
        except OSError:
            pass  # a lost file is made again below
    try:
        with character.avatar.open("rb") as handle:
            thumbnail = thumbnail_of_png(handle.read())
    except (OSError, AvatarError):
        raise Http404("The avatar cannot be read.") from None
    character.avatar_thumbnail.save("avatar.webp", ContentFile(thumbnail), save=False)
    # An UPDATE rather than save(): save() renders the creator notes again, and this must not
    # pair the thumbnail with an avatar that changed meanwhile.
    Character.objects.filter(pk=character.pk, avatar=character.avatar.name).update(
        avatar_thumbnail=character.avatar_thumbnail.name,
        avatar_thumbnail_of=character.avatar.name,
    )
    return thumbnail

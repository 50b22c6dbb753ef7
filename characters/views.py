"""Character avatars, served as images only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from characters.models import Character


@require_GET
@login_required
def avatar(request: HttpRequest, pk: int) -> FileResponse:
    character = get_object_or_404(Character.objects.visible_to(request.user), pk=pk)
    if not character.avatar:
        raise Http404("No avatar.")
    # Avatars are re-encoded to PNG on upload, so the type is known; nosniff comes from
    # SecurityMiddleware, and the CSP sandbox stops anything that still tried to run.
    response = FileResponse(character.avatar.open("rb"), content_type="image/png")
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response

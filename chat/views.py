"""Pages: home (characters and conversations) and the chat page. Thin: reads and one verb each."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from characters.card_macros import card_text
from characters.models import Character
from characters.personas import persona_for
from chat import actions, model_catalog
from chat.access import get_conversation_for_user
from chat.forms import ChatSettingsForm
from chat.models import Conversation, Message
from chat.rendering import message_html
from chat.tree import visible_path


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    conversations = Conversation.objects.for_user(request.user).order_by("-updated_at")[:100]
    characters = list(Character.objects.visible_to(request.user))
    user_name, _ = persona_for(request.user)
    for character in characters:
        # Macros filled in as on the character page, never the raw {{char}} of the card.
        character.description_text = card_text(character.description, character, user_name)
    return render(
        request, "chat/home.html", {"conversations": conversations, "characters": characters}
    )


@require_POST
@login_required
def start_conversation(request: HttpRequest) -> HttpResponse:
    character = None
    if request.POST.get("character"):
        character = get_object_or_404(
            Character.objects.visible_to(request.user), pk=request.POST["character"]
        )
    conversation = actions.start_conversation(request.user, character)
    return redirect("conversation", pk=conversation.pk)


@require_GET
@login_required
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conv = get_conversation_for_user(request.user, pk)
    _, messages = visible_path(conv)
    rendered = [(m, message_html(m), ",".join(map(str, m.siblings))) for m in messages]
    conversations = Conversation.objects.for_user(request.user).order_by("-updated_at")[:100]
    return render(
        request,
        "chat/conversation.html",
        {
            "conversation": conv,
            # Not "messages": that name belongs to django.contrib.messages in every template.
            "transcript": rendered,
            "conversations": conversations,
            "last_message_id": max((m.pk for m in messages), default=0),
            "streaming": any(m.status == Message.Status.STREAMING for m in messages),
            "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "settings_form": _settings_form(conv),
        },
    )


def _settings_form(conv: Conversation, data=None) -> ChatSettingsForm:
    initial = {
        "model": conv.model,
        "temperature": conv.temperature,
        "max_tokens": conv.max_tokens,
    }
    models = model_catalog.available_models(conv.model)
    return ChatSettingsForm(data, initial=initial, models=models)


@require_POST
@login_required
def chat_settings(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the "Chat settings" panel: JSON for the page's fetch, a redirect for a plain form."""
    conv = get_conversation_for_user(request.user, pk)
    form = _settings_form(conv, request.POST)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    if not form.is_valid():
        if wants_json:
            errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
            return JsonResponse({"errors": errors}, status=400)
        return render(
            request, "chat/settings_invalid.html", {"conversation": conv, "form": form}, status=400
        )
    data = form.cleaned_data
    actions.update_chat_settings(
        conv, model=data["model"], temperature=data["temperature"], max_tokens=data["max_tokens"]
    )
    if wants_json:
        return JsonResponse(
            {"model": conv.model, "temperature": conv.temperature, "max_tokens": conv.max_tokens}
        )
    return redirect("conversation", pk=conv.pk)


@require_POST
@login_required
def delete_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    get_conversation_for_user(request.user, pk).delete()
    return redirect("home")

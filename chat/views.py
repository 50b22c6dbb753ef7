"""Pages: home (characters and conversations) and the chat page. Thin: reads and one verb each."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from cardspec.macros import card_text
from characters.models import Character
from characters.personas import persona_for
from chat import actions, conversation_actions, conversation_list, model_catalog, search
from chat.access import get_conversation_for_user
from chat.forms import ChatSettingsForm
from chat.models import Conversation, Message
from chat.tree import load_tree, path_messages
from serika_web.rendering import message_html


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    characters = list(Character.objects.visible_to(request.user))
    user_name, _ = persona_for(request.user)
    for character in characters:
        # Macros filled in as on the character page, never the raw {{char}} of the card.
        character.description_text = card_text(character.description, character, user_name)
    return render(request, "chat/home.html", {**_sidebar(request), "characters": characters})


def _sidebar(request: HttpRequest) -> dict:
    groups, more = conversation_list.sidebar(request.user)
    return {"conversation_groups": groups, "more_conversations": more}


@require_GET
@login_required
def conversations(request: HttpRequest) -> HttpResponse:
    """Every conversation of the member, a page at a time: the list, or the archived ones;
    optionally with one character only."""
    archived = request.GET.get("archived") == "1"
    rows = Conversation.objects.for_user(request.user)
    rows = (
        rows.filter(archived_at__isnull=False).order_by("-archived_at", "-pk")
        if archived
        else rows.listed()
    )
    character_id = _id_param(request, "character")
    if character_id is not None:
        rows = rows.filter(character_id=character_id)
    page = Paginator(rows, conversation_list.PAGE_SIZE).get_page(request.GET.get("page"))
    characters = Character.objects.filter(
        pk__in=Conversation.objects.for_user(request.user).values("character_id")
    ).order_by("name")
    return render(
        request,
        "chat/conversations.html",
        {
            **_sidebar(request),
            "page": page,
            "groups": conversation_list.grouped(page) if not archived else [],
            "archived": archived,
            "characters": characters,
            "character_id": character_id,
        },
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


SEARCH_PAGE_SIZE = 50


@require_GET
@login_required
def search_conversations(request: HttpRequest) -> HttpResponse:
    """The member's conversations and messages that match `q`, newest first, a page at a time
    (`before`: the last message id of the previous page)."""
    text = request.GET.get("q", "").strip()
    before_id = _id_param(request, "before")
    hits = search.search(request.user, text, limit=SEARCH_PAGE_SIZE + 1, before=before_id)
    message_hits = [hit for hit in hits if hit.message is not None]
    more = len(message_hits) > SEARCH_PAGE_SIZE
    return render(
        request,
        "chat/search.html",
        {
            **_sidebar(request),
            "search_query": text,
            "searched": bool(search.parse(text)),
            "title_hits": [hit for hit in hits if hit.message is None],
            "message_hits": message_hits[:SEARCH_PAGE_SIZE],
            "older": message_hits[SEARCH_PAGE_SIZE - 1].message.pk if more else None,
            "first_page": before_id is None,
        },
    )


def _message_attributes(message: Message, found_id: int | None) -> str:
    """A message's data attributes for the chat page (`static/js/chat.js` reads them), built
    here in one call: as template tags they were a quarter of a long chat page's time."""
    attributes = [
        ("data-id", message.pk),
        ("data-parent", "" if message.parent_id is None else message.parent_id),
        ("data-status", message.status),
        ("data-content", message.content),
        ("data-siblings", ",".join(map(str, message.siblings))),
        ("data-created", message.created_at.isoformat()),
    ]
    if message.edited_at:
        attributes.append(("data-edited", message.edited_at.isoformat()))
    if message.role == Message.Role.ASSISTANT:
        attributes += [
            ("data-model", message.model),
            ("data-prompt-tokens", "" if message.prompt_tokens is None else message.prompt_tokens),
            (
                "data-completion-tokens",
                "" if message.completion_tokens is None else message.completion_tokens,
            ),
        ]
    if message.greeting_index is not None:
        attributes.append(("data-greeting", message.greeting_index))
    html = format_html_join(" ", '{}="{}"', attributes)
    if message.pk == found_id:
        html += mark_safe(' data-found tabindex="-1"')
    return html


def _id_param(request: HttpRequest, name: str) -> int | None:
    """Query parameter `name` as a database id, or None (absent, or not a plain number)."""
    value = request.GET.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


@require_GET
@login_required
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    """The chat page. With `?message=<id>` (a search hit) it shows the branch through that
    message, marked and scrolled to. When that is not the stored branch the page shows it at
    once and asks for it over its socket (`branch.switch`, as the alternative arrows do): the
    stored branch is what every tab shows and what the next message continues, so a tab must
    not quietly show another. The GET itself changes nothing."""
    conv = get_conversation_for_user(request.user, pk)
    tree = load_tree(conv.pk)
    leaf = tree.shown_leaf(conv.current_leaf_id)
    found_id = _id_param(request, "message")
    if found_id not in tree.parents:
        found_id = None  # not a message of this conversation (any more)
    switch_to = None
    if found_id is not None and (leaf is None or found_id not in tree.path_to(leaf)):
        leaf, switch_to = tree.latest_leaf(found_id), found_id
    messages = path_messages(tree, tree.path_to(leaf)) if leaf is not None else []
    rendered = [(m, message_html(m), _message_attributes(m, found_id)) for m in messages]
    return render(
        request,
        "chat/conversation.html",
        {
            **_sidebar(request),
            "conversation": conv,
            # Not "messages": that name belongs to django.contrib.messages in every template.
            "transcript": rendered,
            "streaming": any(m.status == Message.Status.STREAMING for m in messages),
            "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "settings_form": _settings_form(conv),
            "found_id": found_id,
            "switch_to": switch_to,
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
def pin_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conv = get_conversation_for_user(request.user, pk)
    conversation_actions.set_pinned(conv, request.POST.get("pinned") == "1")
    return redirect("conversation", pk=conv.pk)


@require_POST
@login_required
def archive_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conv = get_conversation_for_user(request.user, pk)
    archived = request.POST.get("archived") == "1"
    conversation_actions.set_archived(conv, archived)
    # Archived, it leaves the list: back to the list, where "Archived" finds it again.
    return redirect("home") if archived else redirect("conversation", pk=conv.pk)


@require_POST
@login_required
def delete_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    get_conversation_for_user(request.user, pk).delete()
    return redirect("home")

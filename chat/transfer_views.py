"""Export and import pages (issue 13): streamed downloads, and an upload in one or two steps.

Thin, like `chat/views.py`: the files are read and written by `chat.formats`, the database side
is `chat.transfer`, ownership is `chat.access`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from characters.models import Character
from chat import conversation_list, transfer
from chat.access import get_conversation_for_user
from chat.formats import (
    Chat,
    ChatFormatError,
    chatgpt,
    openwebui,
    ours,
    read_chat_file,
    sillytavern,
    write_markdown,
    write_ours,
    write_sillytavern,
)
from chat.formats.values import MIB, format_bytes
from chat.forms import ImportCharactersForm, ImportChatsForm

log = logging.getLogger(__name__)

# --- Export ------------------------------------------------------------------------------------

_CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}


@require_GET
@login_required
@never_cache
def export_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    """One conversation as our JSON (`json`), SillyTavern's JSONL (`jsonl`) or Markdown (`md`)."""
    conversation = get_conversation_for_user(request.user, pk)
    kind = request.GET.get("format", "json")
    if kind not in _CONTENT_TYPES:
        return HttpResponseBadRequest("Unknown export format.")
    chat = transfer.conversation_chat(conversation)
    if kind == "json":
        chunks = write_ours([chat], exported_at=timezone.now())
    elif kind == "jsonl":
        chunks = write_sillytavern(chat)
    else:
        chunks = write_markdown([chat])
    name = slugify(str(conversation)) or f"conversation-{conversation.pk}"
    return _download(request, chunks, f"{name}.{kind}", kind)


@require_GET
@login_required
@never_cache
def export_conversations(request: HttpRequest) -> HttpResponse:
    """Every conversation of the member, archived ones too, as our JSON or Markdown."""
    kind = request.GET.get("format", "json")
    if kind not in {"json", "md"}:
        return HttpResponseBadRequest("Unknown export format.")
    chats = transfer.member_chats(request.user)
    chunks = (
        write_ours(chats, exported_at=timezone.now()) if kind == "json" else write_markdown(chats)
    )
    day = timezone.localdate().isoformat()
    return _download(request, chunks, f"serika-web-chats-{day}.{kind}", kind)


def _download(request: HttpRequest, chunks: Iterator[bytes], filename: str, kind: str):
    response = StreamingHttpResponse(_streamed(request, chunks), content_type=_CONTENT_TYPES[kind])
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def _streamed(request: HttpRequest, chunks: Iterator[bytes]):
    """The chunks as the server can stream them.

    Under ASGI (daphne), Django reads a plain iterator whole into a list before sending the
    first byte ("StreamingHttpResponse must consume synchronous iterators"), which would hold
    every conversation in memory; there they come one at a time through the request's own
    database thread. The test client (WSGI) takes the plain iterator.
    """
    if isinstance(request, ASGIRequest):
        return _one_at_a_time(chunks)
    return chunks


async def _one_at_a_time(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # thread_sensitive: the chunks are read where the view's queries ran, on its connection.
    take = sync_to_async(next, thread_sensitive=True)
    done = object()
    try:
        while (chunk := await take(chunks, done)) is not done:
            yield chunk
    finally:
        # A download cut short leaves the generator (and its database cursor) mid-way.
        await sync_to_async(chunks.close, thread_sensitive=True)()


# --- Import ------------------------------------------------------------------------------------

_FORMAT_NAMES = {
    "serika": "a Serika Web",
    "sillytavern": "a SillyTavern",
    "chatgpt": "a ChatGPT",
    "openwebui": "an Open WebUI",
}
_LARGEST_FILE = max(ours.MAX_BYTES, sillytavern.MAX_BYTES, chatgpt.MAX_BYTES, openwebui.MAX_BYTES)
# What a multipart body adds to the file: its boundaries, headers and the CSRF token.
_FORM_OVERHEAD = 64 * 1024
# Uploads waiting for the member's choice of characters: kept at most this long, and at most
# this many per session (the newest).
PENDING_SECONDS = 3600
PENDING_PER_SESSION = 5
_PENDING_SESSION_KEY = "chat_imports"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
MAX_NOTES = 10  # readers' warnings shown after an import


def largest_upload() -> int:
    """The largest chat file accepted: the readers' caps, within what the server lets a
    request body be (HTTP_MAX_BODY_BYTES refuses bigger bodies before Django sees them)."""
    room = settings.HTTP_MAX_BODY_BYTES - _FORM_OVERHEAD
    if room >= MIB:
        room = room // MIB * MIB  # "31 MiB" reads better than "31.9 MiB", and costs < 1 MiB
    return min(_LARGEST_FILE, room)


@dataclass
class _Plan:
    """Which character each chat of a file gets: matched by name, or asked for."""

    chats: list[Chat]
    matched: list[Character | None] = field(default_factory=list)
    asked: list[int | None] = field(default_factory=list)  # per chat: index into `names`
    names: list[str] = field(default_factory=list)  # names that match no visible character
    chats_by_name: list[list[Chat]] = field(default_factory=list)


def _plan(chats: list[Chat], characters: list[Character]) -> _Plan:
    plan = _Plan(chats)
    asked_by_name: dict[str, int] = {}
    for chat in chats:
        character = transfer.match_character(chat, characters)
        name = transfer.character_name_of(chat)
        index = None
        # A chat without a character name (ChatGPT, Open WebUI) was with a plain assistant,
        # which is what a conversation without a character is: nothing to ask.
        if character is None and name:
            index = asked_by_name.setdefault(name.casefold(), len(plan.names))
            if index == len(plan.names):
                plan.names.append(name)
                plan.chats_by_name.append([])
            plan.chats_by_name[index].append(chat)
        plan.matched.append(character)
        plan.asked.append(index)
    return plan


@require_http_methods(["GET", "POST"])
@login_required
def import_chats(request: HttpRequest) -> HttpResponse:
    """Upload a chat file; import it at once when every character name matches one the member
    may see, else ask for the characters first (`choose_import_characters`)."""
    form = ImportChatsForm()
    if request.method == "POST":
        # Checked before anything reads request.POST or request.FILES, which parses the body.
        announced = request.META.get("CONTENT_LENGTH") or "0"
        if announced.isdigit() and int(announced) > largest_upload() + _FORM_OVERHEAD:
            return _import_page(request, form, status=413, error=_too_large())
        form = ImportChatsForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if upload.size > largest_upload():
                    raise ChatFormatError(_too_large())
                data = upload.read()
                found, chats = read_chat_file(data)
                if not chats:
                    raise ChatFormatError("The file holds no chats.")
            except ChatFormatError as error:
                form.add_error("file", str(error))
            else:
                plan = _plan(chats, characters := transfer.visible_characters(request.user))
                if not plan.names:
                    return _import(request, found, plan, plan.matched)
                token = _keep_pending(request, data, upload.name)
                return _characters_page(request, plan, characters, token, found, upload.name)
    return _import_page(request, form, status=400 if form.errors else 200)


@require_POST
@login_required
def choose_import_characters(request: HttpRequest) -> HttpResponse:
    """The second step: the member's characters for the unknown names, then the import."""
    token = request.POST.get("token", "")
    pending = _pending(request, token)
    if pending is None:
        messages.error(request, "That upload is no longer here: choose the file again.")
        return redirect("import_chats")
    data, filename = pending
    if "cancel" in request.POST:
        _forget_pending(request, token)
        messages.info(request, "Nothing was imported.")
        return redirect("import_chats")
    try:
        found, chats = read_chat_file(data)
    except ChatFormatError:  # it was read before; it cannot be refused now, but if it is:
        _forget_pending(request, token)
        messages.error(request, "That upload can no longer be read: choose the file again.")
        return redirect("import_chats")
    characters = transfer.visible_characters(request.user)
    plan = _plan(chats, characters)
    form = ImportCharactersForm(
        request.POST,
        names=plan.names,
        characters=characters,
        may_create=transfer.may_create_characters(request.user),
    )
    if not form.is_valid():
        return _characters_page(request, plan, characters, token, found, filename, form, 400)
    chosen = [
        plan.matched[number] if index is None else form.chosen(index)
        for number, index in enumerate(plan.asked)
    ]
    new_names = {
        plan.names[index]
        for index in range(len(plan.names))
        if form.chosen(index) == ImportCharactersForm.NEW
    }
    # Claimed before importing: of two submissions at once (a double click, two tabs), the
    # one that removes the file imports it, the other finds it gone.
    if not _forget_pending(request, token):
        messages.error(request, "That upload is no longer here: choose the file again.")
        return redirect("import_chats")
    with transaction.atomic():  # the new characters and the chats: all or nothing
        created = {name: transfer.new_character(request.user, name) for name in new_names}
        chosen = [
            created[plan.names[index]] if character == ImportCharactersForm.NEW else character
            for character, index in zip(chosen, plan.asked, strict=True)
        ]
        return _import(request, found, plan, chosen)


def _import(request, found: str, plan: _Plan, characters: list[Character | None]):
    conversations = transfer.import_chats(
        request.user, list(zip(plan.chats, characters, strict=True))
    )
    what = f"{_FORMAT_NAMES[found]} file"
    notes = [
        note if len(plan.chats) == 1 else f"{conversation}: {note}"
        for chat, conversation in zip(plan.chats, conversations, strict=True)
        for note in chat.warnings
    ]
    if len(conversations) == 1:
        messages.success(request, f"Imported “{conversations[0]}” from {what}.")
    else:
        messages.success(request, f"Imported {len(conversations)} chats from {what}.")
    for note in notes[:MAX_NOTES]:
        messages.info(request, note)
    if len(notes) > MAX_NOTES:
        messages.info(request, f"… and {len(notes) - MAX_NOTES} more notes like these.")
    if len(conversations) == 1:
        return redirect("conversation", pk=conversations[0].pk)
    return redirect("conversations")


def _sidebar(request: HttpRequest) -> dict:
    groups, more = conversation_list.sidebar(request.user)
    return {"conversation_groups": groups, "more_conversations": more}


def _too_large() -> str:
    return f"The file is larger than {format_bytes(largest_upload())}, the limit."


def _import_page(
    request: HttpRequest, form: ImportChatsForm, status: int = 200, error: str = ""
) -> HttpResponse:
    context = {
        **_sidebar(request),
        "form": form,
        "error": error,
        "largest": format_bytes(largest_upload()),
    }
    return render(request, "chat/import.html", context, status=status)


def _characters_page(
    request, plan, characters, token, found, filename, form=None, status=200
) -> HttpResponse:
    form = form or ImportCharactersForm(
        initial={"token": token},
        names=plan.names,
        characters=characters,
        may_create=transfer.may_create_characters(request.user),
    )
    groups = [
        (name, form[f"character_{index}"], plan.chats_by_name[index])
        for index, name in enumerate(plan.names)
    ]
    context = {
        **_sidebar(request),
        "form": form,
        "groups": groups,
        "what": f"{_FORMAT_NAMES[found]} file",
        "filename": filename,
        "chat_count": len(plan.chats),
    }
    return render(request, "chat/import_characters.html", context, status=status)


# Pending uploads: the file waits on disk (never in the session: it may be 32 MiB) under a
# random token that only the member's session knows, until the member chooses or gives up.


def _pending_dir() -> Path:
    return Path(settings.DATA_DIR) / "pending-chat-imports"


def _keep_pending(request: HttpRequest, data: bytes, filename: str) -> str:
    directory = _pending_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _drop_expired(directory)
    token = secrets.token_urlsafe(24)
    (directory / f"{token}.upload").write_bytes(data)
    pending = dict(request.session.get(_PENDING_SESSION_KEY, {}))
    pending[token] = filename[:200]
    for old in list(pending)[:-PENDING_PER_SESSION]:
        _delete_pending_file(old)
        del pending[old]
    request.session[_PENDING_SESSION_KEY] = pending
    return token


def _pending(request: HttpRequest, token: str) -> tuple[bytes, str] | None:
    """The pending upload `token` of this session: (data, filename), or None when gone."""
    pending = request.session.get(_PENDING_SESSION_KEY, {})
    if not _TOKEN.fullmatch(token) or token not in pending:
        return None
    try:
        return (_pending_dir() / f"{token}.upload").read_bytes(), pending[token]
    except FileNotFoundError:
        return None


def _forget_pending(request: HttpRequest, token: str) -> bool:
    """Drop the pending upload `token`; False when another request removed it first."""
    pending = dict(request.session.get(_PENDING_SESSION_KEY, {}))
    pending.pop(token, None)
    request.session[_PENDING_SESSION_KEY] = pending
    return _delete_pending_file(token)


def _delete_pending_file(token: str) -> bool:
    if not _TOKEN.fullmatch(token):
        return False
    try:
        (_pending_dir() / f"{token}.upload").unlink()
    except FileNotFoundError:
        return False
    return True


def _drop_expired(directory: Path) -> None:
    """Delete uploads abandoned at the second step (of any member) more than an hour ago."""
    oldest = time.time() - PENDING_SECONDS
    for path in directory.glob("*.upload"):
        try:
            if path.stat().st_mtime < oldest:
                path.unlink(missing_ok=True)
        except OSError:
            continue  # another process removed it meanwhile

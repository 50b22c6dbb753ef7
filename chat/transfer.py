"""Conversations to and from chat files: the database side of `chat/formats/` (issue 13).

Export turns conversations into neutral `Chat`s: the whole tree with its alternatives, the shown
leaf, the character's name and card reference, settings, times and usage. Everything of a
member streams (`member_chats`): conversations come from the database a chunk at a time and each
one's messages in one query, while the writer sends the previous chat on its way.

Import writes neutral chats as new conversations of the importing member (`import_chats`), all
of one file in one transaction. A file never sets ids, owners or another member's anything: rows
get new ids, the owner is the member, the character is one the member may see (`match_character`
or the member's own choice), and the rendered HTML is ours, made from the imported text as from
model text (`serika_web.rendering`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from characters.models import Character, Visibility
from characters.personas import persona_for
from chat import model_catalog
from chat.formats import CharacterRef, Chat, ChatMessage, ChatSettings
from chat.models import Conversation, Message
from serika_web.rendering import plain_paragraphs, render_message, sanitize

# Conversations fetched per round trip when exporting everything (each one's messages are a
# query of their own): a member with 10,000 conversations costs 100 of these, never all at once.
EXPORT_CHUNK_SIZE = 100
# The message fields an export reads: not `content_html`, which can be as large as the text.
_EXPORTED_FIELDS = (
    "id", "parent_id", "role", "content", "status", "created_at", "edited_at", "model",
    "prompt_tokens", "completion_tokens", "finish_reason", "greeting_index",
)  # fmt: skip

# Imported text is untrusted like model text, and markdown-it spends up to ~16 µs a character
# on hostile input (a file of "[" would take minutes to render at 32 MiB). A message longer than
# this is shown as plain paragraphs, as long card text is...
IMPORT_MARKDOWN_MAX_CHARS = 100_000
# ...and once one file's markdown has taken this many seconds, the rest of it is too: real
# chats (~1.6 µs a character) get about six million characters of markdown before that.
IMPORT_MARKDOWN_SECONDS = 10.0
# Rows written per INSERT/UPDATE when importing (SQLite caps the parameters of one query).
IMPORT_BATCH_SIZE = 500


# --- Export ------------------------------------------------------------------------------------


def conversation_chat(conversation: Conversation, user_name: str | None = None) -> Chat:
    """The conversation (with its character selected) as a neutral chat, its messages read in
    one query. `user_name` is the member's persona name (looked up when not given)."""
    if user_name is None:
        user_name = persona_for(conversation.owner)[0]
    messages = (
        Message.objects.filter(conversation_id=conversation.pk)
        .order_by("pk")
        .only(*_EXPORTED_FIELDS)
    )
    return _chat_of(conversation, messages, user_name)


def member_chats(user) -> Iterator[Chat]:
    """Every conversation of `user`, archived ones too, oldest first, one chat at a time."""
    user_name = persona_for(user)[0]
    conversations = Conversation.objects.for_user(user).order_by("created_at", "pk")
    for conversation in conversations.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        yield conversation_chat(conversation, user_name)


def _chat_of(conversation: Conversation, messages: Iterable[Message], user_name: str) -> Chat:
    keys: dict[int, str] = {}
    children: dict[int | None, list[int]] = {}
    chat_messages = []
    # Keys are the messages' places in the conversation, not their ids: ids mean nothing in
    # another database, and a file should not tell how many rows ours holds.
    for message in messages:
        key = keys[message.pk] = str(len(keys) + 1)
        children.setdefault(message.parent_id, []).append(message.pk)
        status = message.status
        if status == Message.Status.STREAMING:
            # A snapshot of a reply still being written: its text so far, unfinished.
            status = Message.Status.INTERRUPTED
        chat_messages.append(
            ChatMessage(
                key=key,
                parent=keys[message.parent_id] if message.parent_id is not None else None,
                role=message.role,
                content=message.content,
                created_at=message.created_at,
                status=status,
                model=message.model,
                prompt_tokens=message.prompt_tokens,
                completion_tokens=message.completion_tokens,
                finish_reason=message.finish_reason,
                edited_at=message.edited_at,
                greeting_index=message.greeting_index,
            )
        )
    character = conversation.character
    return Chat(
        title=conversation.title,
        character_name=character.name if character else "",
        character=CharacterRef(
            name=character.name,
            creator=character.creator,
            character_version=character.character_version,
        )
        if character
        else None,
        user_name=user_name,
        settings=ChatSettings(
            model=conversation.model,
            temperature=conversation.temperature,
            max_tokens=conversation.max_tokens,
        ),
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        messages=chat_messages,
        shown_leaf=_shown_key(conversation.current_leaf_id, children, keys),
    )


def _shown_key(
    current_leaf_id: int | None, children: dict[int | None, list[int]], keys: dict[int, str]
) -> str | None:
    """The shown leaf's key, by the rule of `chat.tree.Tree.shown_leaf` (the stored leaf, else
    the newest root's newest branch), written out so that no reader has to know the rule."""
    if current_leaf_id in keys:
        return keys[current_leaf_id]
    roots = children.get(None)
    if not roots:
        return None
    leaf = roots[-1]
    while children.get(leaf):
        leaf = children[leaf][-1]
    return keys[leaf]


# --- Import ------------------------------------------------------------------------------------


def may_create_characters(user) -> bool:
    """Whether an import may make `user` a character of their own (members may, unless
    `CHARACTERS_MEMBERS_MAY_IMPORT` is off; staff always may)."""
    return user.is_staff or settings.CHARACTERS_MEMBERS_MAY_IMPORT


def new_character(user, name: str) -> Character:
    """A character of `user`'s own, seen by nobody else, named as in an imported chat: the
    member fills in its card later (its page, Edit)."""
    return Character.objects.create(name=name[:200], owner=user, visibility=Visibility.OWNER)


def visible_characters(user) -> list[Character]:
    """The characters `user` may give an imported chat, by name (what matching and the
    member's choice need, not whole cards)."""
    return list(
        Character.objects.visible_to(user)
        .only("id", "name", "creator", "character_version", "owner_id", "default_model")
        .order_by("name", "pk")
    )


def character_name_of(chat: Chat) -> str:
    """The name a chat's character is matched by: the card's, else the name the chat showed."""
    name = chat.character.name if chat.character and chat.character.name else chat.character_name
    return " ".join(name.split())


def match_character(chat: Chat, characters: list[Character]) -> Character | None:
    """The visible character with the chat's character name (case and spacing aside), or None.

    When several have it, the one whose creator and version match the card reference wins,
    then the one with the creator, then the oldest."""
    name = character_name_of(chat).casefold()
    if not name:
        return None
    found = [c for c in characters if " ".join(c.name.split()).casefold() == name]
    if not found:
        return None
    card = chat.character or CharacterRef(name="")

    def closeness(character: Character) -> tuple[bool, bool, int]:
        same_creator = bool(card.creator) and character.creator == card.creator
        same_version = same_creator and character.character_version == card.character_version
        return (not same_version, not same_creator, character.pk)

    return min(found, key=closeness)


@dataclass
class _Rendering:
    """Markdown for imported replies within one file's time budget, plain paragraphs beyond."""

    spent: float = 0.0

    def html(self, role: str, content: str) -> str:
        if role == Message.Role.USER:
            return render_message(role, content)  # escaped: linear, whatever the text
        if len(content) > IMPORT_MARKDOWN_MAX_CHARS or self.spent >= IMPORT_MARKDOWN_SECONDS:
            return sanitize(plain_paragraphs(content))
        started = time.monotonic()
        html = render_message(role, content)
        self.spent += time.monotonic() - started
        return html


def import_chats(user, chats: list[tuple[Chat, Character | None]]) -> list[Conversation]:
    """Store each (chat, character) as a new conversation of `user`; all or none of them.

    `character` must be one `user` may see (the caller's `match_character` or choice) or None.
    Messages are stored parents first, so a parent's id is below its children's as in every
    conversation; the conversation shows the file's shown leaf. Nothing of the file becomes an
    id or an owner. Renders before the transaction opens, so the write lock is held only while
    rows are written.
    """
    rendering = _Rendering()
    prepared = []
    for chat, character in chats:
        chat.validate()  # parents first, keys unique, no cycle: the readers did; cheap to redo
        rows = [
            Message(
                role=message.role,
                content=message.content,
                content_html=rendering.html(message.role, message.content),
                status=message.status,
                finish_reason=message.finish_reason[:32],
                model=message.model[:200],
                prompt_tokens=message.prompt_tokens,
                completion_tokens=message.completion_tokens,
                # Which greeting of the character a root shows; meaningless anywhere else.
                greeting_index=message.greeting_index
                if message.parent is None and message.role == Message.Role.ASSISTANT
                else None,
                edited_at=message.edited_at,
            )
            for message in chat.messages
        ]
        prepared.append((chat, character, rows))
    with transaction.atomic():
        return [_store(user, chat, character, rows) for chat, character, rows in prepared]


def _store(user, chat: Chat, character: Character | None, rows: list[Message]) -> Conversation:
    now = timezone.now()
    title = " ".join(chat.title.split())[:200]
    # Without a title of its own, a chat is titled by its character, as a new one is: the
    # chosen character's name, else the name in the file (the member chose no character).
    default_title = character.name if character else character_name_of(chat)[:200]
    conversation = Conversation.objects.create(
        owner=user,
        character=character,
        title=title or default_title,
        # The file's title is the member's own: no automatic title replaces it.
        title_source=Conversation.TitleSource.MEMBER if title else Conversation.TitleSource.DEFAULT,
        model=_model_for(chat.settings.model, character),
        temperature=chat.settings.temperature,
        max_tokens=chat.settings.max_tokens,
    )
    for row in rows:
        row.conversation = conversation
    # Inserted in the file's order (parents first), so ids grow from parents to children; the
    # parents are linked by one UPDATE pass once every row has its id, instead of one INSERT
    # per level of a chain that may be 50,000 messages deep.
    Message.objects.bulk_create(rows, batch_size=IMPORT_BATCH_SIZE)
    by_key = {message.key: row for message, row in zip(chat.messages, rows, strict=True)}
    for message, row in zip(chat.messages, rows, strict=True):
        parent = by_key[message.parent] if message.parent is not None else None
        row.parent_id = parent.pk if parent is not None else None
        # The file's time, else its parent's (already set: parents come first), else the
        # chat's; `created_at` is filled in on insert, so it is written by the UPDATE.
        row.created_at = message.created_at or (
            parent.created_at if parent is not None else chat.created_at or now
        )
    _link(rows)
    leaf_key = chat.leaf_key()
    conversation.current_leaf = by_key[leaf_key] if leaf_key is not None else None
    conversation.created_at = chat.created_at or min((row.created_at for row in rows), default=now)
    conversation.updated_at = chat.updated_at or max(
        (row.created_at for row in rows), default=conversation.created_at
    )
    # An UPDATE, not save(): save() would stamp `updated_at` with now.
    Conversation.objects.filter(pk=conversation.pk).update(
        current_leaf=conversation.current_leaf,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )
    return conversation


def _link(rows: list[Message]) -> None:
    """Write the rows' `parent_id` and `created_at`: one UPDATE … FROM (VALUES …) per batch,
    which SQLite (3.33+) and PostgreSQL both run. The ORM's `bulk_update` builds a CASE
    expression per row in Python: a 50,000-message file took 25 s to import with it, 11 s
    with this (rendering and inserting included)."""
    table = connection.ops.quote_name(Message._meta.db_table)
    # PostgreSQL types a VALUES list from its text parameters unless told; SQLite needs no cast.
    row = (
        "(%s::bigint, %s::bigint, %s::timestamptz)"
        if connection.vendor == "postgresql"
        else "(%s, %s, %s)"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        for start in range(0, len(rows), IMPORT_BATCH_SIZE):
            batch = rows[start : start + IMPORT_BATCH_SIZE]
            values = ", ".join([row] * len(batch))
            cursor.execute(
                f"UPDATE {table} SET parent_id = v.column2, created_at = v.column3 "  # noqa: S608
                f"FROM (VALUES {values}) AS v WHERE {table}.id = v.column1",
                [item for r in batch for item in (r.pk, r.parent_id, adapt(r.created_at))],
            )


def _model_for(model: str, character: Character | None) -> str:
    """The model the imported conversation's next replies ask for: the file's when this site
    offers it (a ChatGPT export's "gpt-4o" may mean nothing to our upstream), else the
    character's, else the site default."""
    if model and model in model_catalog.available_models():
        return model
    return character.model_name if character else settings.SERIKA_DEFAULT_MODEL

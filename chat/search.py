"""Full-text search over a member's conversation titles and message text.

One small interface (`search`) over the database's own full-text search. The index is kept by
the database itself (migration 0005), so every write reaches it without any caller doing
anything: a reply finishing or flushing, an edit, a delete and the subtree it takes along, a
rename, an automatic title, an import's `bulk_create`, even a change made in the admin.

- SQLite (the embedded mode): two external-content FTS5 tables, `chat_message_fts` over
  `chat_message.content` and `chat_conversation_fts` over `chat_conversation.title`. They hold
  the index only (the text stays in its table) and triggers on those two tables keep them in
  step. Each trigger reads its own row only: a trigger or view that named another table would
  make Django's SQLite table rebuilds (a new column with a default, an altered field) fail.
  Such a rebuild drops the rebuilt table's triggers, so `ensure_index` puts them back after
  every `migrate` (and rebuilds the index then).
- PostgreSQL: a generated column `chat_message.search_vector`, `to_tsvector('simple', …)` of
  the text, computed by the database on every write, with a GIN index; titles have a GIN index
  over that expression, which a query written with exactly that expression is answered from.
  Nothing to keep in step. The words are stored rather than only indexed so that a search
  walking the newest messages first checks each one without computing its words again.

The `simple` configuration and FTS5's `unicode61` tokenizer both split on anything that is not
a letter or a digit and fold case, without stemming: chats are in every language, and an
English stemmer would mangle the others. (FTS5 also folds diacritics; PostgreSQL's `simple`
does not.) On PostgreSQL a message's first 100,000 characters are indexed: a `tsvector` must
stay under 1 MB, and a write whose text could not be indexed would fail.

Queries are plain words, never the engine's syntax: each word becomes a quoted phrase of its
letters and digits, so `"`, `*`, `NEAR`, `OR`, `:` or `&` are only text. Every word must match;
the last one also matches as a prefix (from 3 characters on), as it is being typed. Hits are
the newest first, titles before messages: that order lets both databases stop after one page
instead of ranking every match (a common word matches most of a million messages), and the
chat a member is looking for is usually a recent one.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from django.db import connection, connections
from django.db.models import (
    BigIntegerField,
    BooleanField,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    Subquery,
)
from django.db.models.expressions import RawSQL
from django.utils.safestring import SafeString, mark_safe

from chat.models import Conversation, Message

MAX_QUERY_CHARS = 300  # a longer query is cut: nobody types more, and it bounds the work
MAX_WORDS = 12
PREFIX_MIN_CHARS = 3  # "a*" would merge the posting lists of every word starting with "a"
TITLE_HITS = 10  # titles come first, on the first page only
RECENT_MESSAGES = 10_000  # see _newest_message_id
SNIPPET_CHARS = 220

# A word's letters and digits: what both tokenizers keep of it (`_` separates words too).
_PIECE = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Query:
    """A member's query as words (each a tuple of lowercase pieces: "don't" is ("don", "t"))."""

    words: tuple[tuple[str, ...], ...]
    raw_words: tuple[str, ...]  # as typed, for PostgreSQL's own parser (e-mail addresses, …)

    @property
    def prefix(self) -> bool:
        """Whether the last word also matches as the start of a longer one."""
        return bool(self.words) and len(self.words[-1][-1]) >= PREFIX_MIN_CHARS

    def __bool__(self) -> bool:
        return bool(self.words)


def parse(text: str) -> Query:
    words, raw = [], []
    # NUL separates words too (PostgreSQL refuses it in text).
    for word in text[:MAX_QUERY_CHARS].replace("\x00", " ").split():
        pieces = tuple(piece.lower() for piece in _PIECE.findall(word))
        if pieces:
            words.append(pieces)
            raw.append(word)
    return Query(tuple(words[:MAX_WORDS]), tuple(raw[:MAX_WORDS]))


@dataclass
class Hit:
    """A conversation whose title matched (`message` None), or one of its messages."""

    conversation: Conversation
    message: Message | None
    title: SafeString  # escaped, matches in <mark>
    snippet: SafeString  # the passage around the first match, escaped, matches in <mark>


def search(user, text: str, limit: int = 50, before: int | None = None) -> list[Hit]:
    """`user`'s conversations whose title matches `text` (the newest first, on the first page
    only: `before` None), then at most `limit` of their messages that match, newest first,
    older than message `before` when given. Three queries (four for a member not among the
    site's newest messages). Never anyone else's: each goes through
    `Conversation.objects.for_user`."""
    query = parse(text)
    owned = Conversation.objects.for_user(user)
    if not query or owned.query.is_empty():
        return []
    engine = _POSTGRESQL if connection.vendor == "postgresql" else _SQLITE
    hits = []
    if before is None:
        titled = (
            owned.filter(engine.title_condition(query))
            .select_related("character")
            .order_by("-updated_at", "-pk")[:TITLE_HITS]
        )
        hits = [Hit(c, None, highlight(str(c), query, whole=True), SafeString("")) for c in titled]
    newest = _newest_message_id(owned)
    if newest is None:
        return hits
    below = min(before, newest + 1) if before is not None else newest + 1
    ids_sql, ids_params = engine.message_ids(query, owned, limit, below)
    messages = (
        # The SQL is ours; the member's words are in its parameters only.
        Message.objects.filter(pk__in=RawSQL(ids_sql, ids_params), conversation__in=owned)  # noqa: S611
        .select_related("conversation", "conversation__character")
        .defer("content_html", "conversation__character__character_book")
        .order_by("-pk")
    )
    for message in messages:
        hits.append(
            Hit(
                message.conversation,
                message,
                highlight(str(message.conversation), query, whole=True),
                highlight(message.content, query),
            )
        )
    return hits


def _newest_message_id(owned) -> int | None:
    """The id of the member's newest message, where the walk through the matches (newest
    first) starts, rather than at everyone's newest: a member whose chats are all older than
    everyone else's would otherwise have every newer match of the others walked past first (a
    common word took over a second on a million messages).

    An active member has one among the site's newest messages: one query walks back through at
    most RECENT_MESSAGES of them. Anyone else gets a second query, one index probe per
    conversation (a member with 10,000 conversations: 50 ms on PostgreSQL, too slow to ask
    every time)."""
    site_newest = Message.objects.order_by("-pk").values("pk")[:1]
    recent = (
        # `+ 0`: walking back by id, not probing each conversation's range in the conversation
        # index (SQLite chose that: 10,000 probes for a member with 10,000 conversations).
        Message.objects.alias(
            floor=ExpressionWrapper(Subquery(site_newest) - RECENT_MESSAGES, BigIntegerField()),
            conversation_plus_0=F("conversation_id") + 0,
        )
        .filter(pk__gt=F("floor"), conversation_plus_0__in=owned.values("pk"))
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if recent is not None:
        return recent
    last_of_each = Message.objects.filter(conversation=OuterRef("pk")).order_by("-pk").values("pk")
    return owned.aggregate(newest=Max(Subquery(last_of_each[:1])))["newest"]


# --- the two engines ---------------------------------------------------------------------------
def _owned_ids(owned) -> tuple[str, tuple]:
    sql, params = owned.values("pk").query.sql_with_params()
    return sql, tuple(params)


class _SQLite:
    @staticmethod
    def match(query: Query) -> str:
        """The FTS5 query: every word a quoted phrase (its pieces hold no quote: only letters
        and digits), all of them required, the last one also a prefix."""
        phrases = ['"' + " ".join(pieces) + '"' for pieces in query.words]
        if query.prefix:
            phrases[-1] += "*"
        return " AND ".join(phrases)

    def title_condition(self, query: Query) -> Q:
        # A member's titles are few next to their messages: all matches, then the newest.
        return Q(
            pk__in=RawSQL(
                'SELECT "rowid" FROM "chat_conversation_fts" WHERE "chat_conversation_fts" '
                "MATCH %s",
                (self.match(query),),
            )
        )

    def message_ids(self, query: Query, owned, limit: int, before: int):
        owned_sql, owned_params = _owned_ids(owned)
        # The index first, newest match first (FTS5 walks its posting lists by descending rowid
        # and stops at the LIMIT), each match checked against the member's conversations. A
        # CROSS JOIN keeps SQLite from starting at the member's messages instead. (The
        # owned-ids query is Django's; every value is a parameter.)
        sql = (
            'SELECT "f"."rowid" FROM "chat_message_fts" "f" '  # noqa: S608
            'CROSS JOIN "chat_message" "m" ON "m"."id" = "f"."rowid" '
            'WHERE "f"."chat_message_fts" MATCH %s AND "f"."rowid" < %s '
            f'AND "m"."conversation_id" IN ({owned_sql}) '
            'ORDER BY "f"."rowid" DESC LIMIT %s'
        )
        return sql, (self.match(query), before, *owned_params, limit)


class _PostgreSQL:
    @staticmethod
    def tsquery(query: Query) -> tuple[str, tuple]:
        """The tsquery: every word must match, either as PostgreSQL's parser reads it (which
        keeps e-mail addresses, host names and numbers whole) or as its pieces in a row; the
        last word's last piece also as a prefix. The pieces are letters and digits only, so
        quoting them makes them lexemes, never operators."""
        parts, params = [], []
        for index, (raw, pieces) in enumerate(zip(query.raw_words, query.words, strict=True)):
            lexemes = " <-> ".join(f"'{piece}'" for piece in pieces)
            if index == len(query.words) - 1 and query.prefix:
                lexemes += ":*"
            parts.append(
                "(phraseto_tsquery('simple'::regconfig, %s) || to_tsquery('simple'::regconfig, %s))"
            )
            params += [raw, lexemes]
        return " && ".join(parts), tuple(params)

    def title_condition(self, query: Query) -> RawSQL:
        tsquery, params = self.tsquery(query)
        return RawSQL(  # noqa: S611 (our SQL; the words are parameters)
            f'to_tsvector(\'simple\'::regconfig, "chat_conversation"."title") @@ ({tsquery})',
            params,
            output_field=BooleanField(),
        )

    def message_ids(self, query: Query, owned, limit: int, before: int):
        owned_sql, owned_params = _owned_ids(owned)
        tsquery, params = self.tsquery(query)
        # (The owned-ids query is Django's; every value is a parameter.)
        sql = (
            'SELECT "m"."id" FROM "chat_message" "m" '  # noqa: S608
            f'WHERE "m"."search_vector" @@ ({tsquery}) AND "m"."id" < %s AND "m"."conversation_id" IN ({owned_sql}) '
            'ORDER BY "m"."id" DESC LIMIT %s'
        )
        return sql, (*params, before, *owned_params, limit)


_SQLITE = _SQLite()
_POSTGRESQL = _PostgreSQL()


# --- highlighting --------------------------------------------------------------------------------
def _fold(text: str) -> str:
    """`text` without diacritics, one character for one (so positions match the original):
    FTS5 matches "café" for "cafe", and the highlight should too."""
    if text.isascii():
        return text
    out = []
    for char in text:
        if char.isascii():
            out.append(char)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFD", char) if not unicodedata.combining(c)
        )
        out.append(base if len(base) == 1 else char)
    return "".join(out)


def _pattern(query: Query) -> re.Pattern[str]:
    pieces = {(piece, False) for pieces in query.words for piece in pieces}
    if query.prefix:
        pieces.add((query.words[-1][-1], True))
    alternatives = [
        re.escape(_fold(piece)) + (r"[^\W_]*" if prefix else r"(?![^\W_])")
        for piece, prefix in sorted(pieces, key=lambda p: -len(p[0]))
    ]
    return re.compile(r"(?<![^\W_])(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


def highlight(text: str, query: Query, *, whole: bool = False) -> SafeString:
    """The passage of `text` around its first match (all of it when `whole`), HTML-escaped,
    with each match in <mark>. Built from the plain text: nothing of it is ever markup."""
    pattern = _pattern(query) if query else None
    folded = _fold(text)
    start, end = 0, len(text)
    if not whole:
        first = pattern.search(folded) if pattern else None
        if first is not None and first.start() > SNIPPET_CHARS // 3:
            # Some context before the match, from the start of a word.
            start = first.start() - SNIPPET_CHARS // 3
            space = text.find(" ", start, first.start())
            start = space + 1 if space != -1 else start
        end = min(len(text), start + SNIPPET_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + SNIPPET_CHARS // 2, end)
            end = space if space != -1 else end
    out = ["…"] if start > 0 else []
    position = start
    if pattern:
        for found in pattern.finditer(folded, start, end):
            out.append(html.escape(text[position : found.start()]))
            out.append(f"<mark>{html.escape(text[found.start() : found.end()])}</mark>")
            position = found.end()
    out.append(html.escape(text[position:end]))
    if end < len(text):
        out.append("…")
    return mark_safe("".join(out))  # noqa: S308 (every piece of the text is escaped above)


# --- keeping SQLite's index --------------------------------------------------------------------
# The triggers of migration 0005, as SQLite stores them (a test checks they are the same). An
# external-content FTS5 table is told what to forget with the old text itself ('delete').
SQLITE_TRIGGERS = {
    "chat_message_fts_insert": (
        'CREATE TRIGGER "chat_message_fts_insert" AFTER INSERT ON "chat_message" BEGIN '
        'INSERT INTO "chat_message_fts"("rowid", "content") VALUES (new."id", new."content"); END'
    ),
    "chat_message_fts_update": (
        'CREATE TRIGGER "chat_message_fts_update" AFTER UPDATE OF "content" ON "chat_message" '
        'WHEN old."content" IS NOT new."content" BEGIN '
        'INSERT INTO "chat_message_fts"("chat_message_fts", "rowid", "content") '
        'VALUES (\'delete\', old."id", old."content"); '
        'INSERT INTO "chat_message_fts"("rowid", "content") VALUES (new."id", new."content"); END'
    ),
    "chat_message_fts_delete": (
        'CREATE TRIGGER "chat_message_fts_delete" AFTER DELETE ON "chat_message" BEGIN '
        'INSERT INTO "chat_message_fts"("chat_message_fts", "rowid", "content") '
        'VALUES (\'delete\', old."id", old."content"); END'
    ),
    "chat_conversation_fts_insert": (
        'CREATE TRIGGER "chat_conversation_fts_insert" AFTER INSERT ON "chat_conversation" BEGIN '
        'INSERT INTO "chat_conversation_fts"("rowid", "title") VALUES (new."id", new."title"); END'
    ),
    "chat_conversation_fts_update": (
        'CREATE TRIGGER "chat_conversation_fts_update" AFTER UPDATE OF "title" '
        'ON "chat_conversation" WHEN old."title" IS NOT new."title" BEGIN '
        'INSERT INTO "chat_conversation_fts"("chat_conversation_fts", "rowid", "title") '
        'VALUES (\'delete\', old."id", old."title"); '
        'INSERT INTO "chat_conversation_fts"("rowid", "title") VALUES (new."id", new."title"); END'
    ),
    "chat_conversation_fts_delete": (
        'CREATE TRIGGER "chat_conversation_fts_delete" AFTER DELETE ON "chat_conversation" BEGIN '
        'INSERT INTO "chat_conversation_fts"("chat_conversation_fts", "rowid", "title") '
        'VALUES (\'delete\', old."id", old."title"); END'
    ),
}
_INDEX_OF_TRIGGER = {name: name.rsplit("_", 1)[0] for name in SQLITE_TRIGGERS}


def ensure_index(using: str = "default", **kwargs) -> None:
    """After `migrate` (a `post_migrate` receiver): put back the triggers that a SQLite table
    rebuild dropped, and rebuild the index they kept, which may have missed writes meanwhile.
    Nothing to do on PostgreSQL, or before migration 0005 ran (or after it was reversed)."""
    db = connections[using]
    if db.vendor != "sqlite":
        return
    names = [*SQLITE_TRIGGERS, *set(_INDEX_OF_TRIGGER.values())]
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT name FROM sqlite_master WHERE name IN ({', '.join(['%s'] * len(names))})",  # noqa: S608
            names,
        )
        present = {row[0] for row in cursor.fetchall()}
        stale = set()
        for name, sql in SQLITE_TRIGGERS.items():
            index = _INDEX_OF_TRIGGER[name]
            if index in present and name not in present:
                cursor.execute(sql)
                stale.add(index)
        for index in sorted(stale):
            cursor.execute(f'INSERT INTO "{index}"("{index}") VALUES (\'rebuild\')')  # noqa: S608

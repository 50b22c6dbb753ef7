"""Full-text search over conversation titles and message text (chat/search.py).

SQLite: external-content FTS5 tables (the index only; the text stays in chat_message and
chat_conversation), kept in step by triggers that read their own row only, then filled from the
rows already there. PostgreSQL: a generated column of each message's words and GIN indexes, over
the expressions chat/search.py queries with.
The SQL is written out here, frozen; chat/search.py keeps the same trigger statements to put
them back after a SQLite table rebuild (tests/test_search.py checks they are equal).
"""

from django.db import migrations

SQLITE = [
    "CREATE VIRTUAL TABLE \"chat_message_fts\" USING fts5(content, content='chat_message', "
    "content_rowid='id', tokenize='unicode61', prefix='3')",
    "CREATE VIRTUAL TABLE \"chat_conversation_fts\" USING fts5(title, "
    "content='chat_conversation', content_rowid='id', tokenize='unicode61', prefix='3')",
    'CREATE TRIGGER "chat_message_fts_insert" AFTER INSERT ON "chat_message" BEGIN '
    'INSERT INTO "chat_message_fts"("rowid", "content") VALUES (new."id", new."content"); END',
    'CREATE TRIGGER "chat_message_fts_update" AFTER UPDATE OF "content" ON "chat_message" '
    'WHEN old."content" IS NOT new."content" BEGIN '
    'INSERT INTO "chat_message_fts"("chat_message_fts", "rowid", "content") '
    "VALUES ('delete', old.\"id\", old.\"content\"); "
    'INSERT INTO "chat_message_fts"("rowid", "content") VALUES (new."id", new."content"); END',
    'CREATE TRIGGER "chat_message_fts_delete" AFTER DELETE ON "chat_message" BEGIN '
    'INSERT INTO "chat_message_fts"("chat_message_fts", "rowid", "content") '
    "VALUES ('delete', old.\"id\", old.\"content\"); END",
    'CREATE TRIGGER "chat_conversation_fts_insert" AFTER INSERT ON "chat_conversation" BEGIN '
    'INSERT INTO "chat_conversation_fts"("rowid", "title") VALUES (new."id", new."title"); END',
    'CREATE TRIGGER "chat_conversation_fts_update" AFTER UPDATE OF "title" '
    'ON "chat_conversation" WHEN old."title" IS NOT new."title" BEGIN '
    'INSERT INTO "chat_conversation_fts"("chat_conversation_fts", "rowid", "title") '
    "VALUES ('delete', old.\"id\", old.\"title\"); "
    'INSERT INTO "chat_conversation_fts"("rowid", "title") VALUES (new."id", new."title"); END',
    'CREATE TRIGGER "chat_conversation_fts_delete" AFTER DELETE ON "chat_conversation" BEGIN '
    'INSERT INTO "chat_conversation_fts"("chat_conversation_fts", "rowid", "title") '
    "VALUES ('delete', old.\"id\", old.\"title\"); END",
    # The rows stored before this migration.
    "INSERT INTO \"chat_message_fts\"(\"chat_message_fts\") VALUES ('rebuild')",
    "INSERT INTO \"chat_conversation_fts\"(\"chat_conversation_fts\") VALUES ('rebuild')",
]
SQLITE_REVERSE = [
    'DROP TRIGGER IF EXISTS "chat_message_fts_insert"',
    'DROP TRIGGER IF EXISTS "chat_message_fts_update"',
    'DROP TRIGGER IF EXISTS "chat_message_fts_delete"',
    'DROP TRIGGER IF EXISTS "chat_conversation_fts_insert"',
    'DROP TRIGGER IF EXISTS "chat_conversation_fts_update"',
    'DROP TRIGGER IF EXISTS "chat_conversation_fts_delete"',
    'DROP TABLE IF EXISTS "chat_message_fts"',
    'DROP TABLE IF EXISTS "chat_conversation_fts"',
]
# PostgreSQL: a message's words are stored beside it (a generated column, unknown to the ORM,
# computed by the database on every write) with a GIN index over them. Stored rather than an
# expression index: a search that walks the newest messages first checks each one's words, and
# computing them again for each row would cost a tsvector per message walked. Its first 100,000
# characters: a tsvector must stay under 1 MB, and a write whose text could not be indexed
# would fail. (A later change of chat_message.content's type must drop and re-add the column.)
POSTGRESQL = [
    'ALTER TABLE "chat_message" ADD COLUMN "search_vector" tsvector GENERATED ALWAYS AS '
    "(to_tsvector('simple'::regconfig, left(\"content\", 100000))) STORED",
    'CREATE INDEX "chat_message_search" ON "chat_message" USING gin ("search_vector")',
    # The planner chooses between walking the newest messages and this index by how many
    # messages it expects to match. With the default statistics (the 1,000 commonest words) a
    # word it did not sample, or any prefix, is expected in 2,500 of a million messages, and
    # a rare word's search walked them all (1.6 s); with the 10,000 commonest, in a few hundred.
    'ALTER TABLE "chat_message" ALTER COLUMN "search_vector" SET STATISTICS 1000',
    'CREATE INDEX "chat_conversation_search" ON "chat_conversation" '
    "USING gin (to_tsvector('simple'::regconfig, \"title\"))",
]
POSTGRESQL_REVERSE = [
    'DROP INDEX IF EXISTS "chat_conversation_search"',
    'DROP INDEX IF EXISTS "chat_message_search"',
    'ALTER TABLE "chat_message" DROP COLUMN IF EXISTS "search_vector"',
]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor) -> None:
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_conversation_list"),
    ]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}),
        ),
    ]

"""Search's server time for a member with 10,000 conversations and 1,000,000 messages, on
SQLite (FTS5) and on PostgreSQL (GIN over to_tsvector): the search page (`/search/?q=…`) through
the Django test client (all middleware, the real template), median of several requests per
query, with its CPU time and query count. The target: 200 ms.

    python -m bench.search_bench                       # both databases, one after the other
    python -m bench.search_bench --db sqlite --keep    # keep the data set for the next run
    python -m bench.search_bench --conversations 1000 --messages 100000   # a quick look

Alice is the member measured: 10,000 conversations of 100 messages each, one branch, user
questions and longer replies in a Zipf-distributed vocabulary (a few words are in most
messages, most words in few). Bob, another member, has 100 conversations of 100 messages,
stored *before* Alice's: his messages are the oldest, the worst place for the "small member"
row below, whose search has to look past Alice's newer matches (SQLite walks the index
newest first). A rare word is planted in 20 of Alice's messages.

The data set is built once per database with bulk inserts through the real migrations and
triggers (SQLite: a few minutes; PostgreSQL: its search index is dropped for the load and
built again after it, from migration 0005's own statement), then reused while `--keep` leaves
it: the SQLite file in DIR (default: $TMPDIR/serika-search-bench), the PostgreSQL database
`serika_search_bench`. Each database is measured in its own process (Django's settings are
per process), bounded by `--timeout`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import median

TARGET_MS = 200
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_NAME = "serika_search_bench"
HOST = "127.0.0.1"
RARE = "quetzalcoatl"
# (label, query, who): the queries measured.
QUERIES = [
    ("common word", "river", "alice"),
    ("two common words", "river stone", "alice"),
    ("rare word", RARE, "alice"),
    ("prefix, 3 letters", "riv", "alice"),
    ("prefix, 5 letters", "rive", "alice"),
    ("no hit", "xylophonic", "alice"),
    ("common word, small member", "river", "bob"),
    ("rare word, small member", RARE, "bob"),
]
# The head of the vocabulary, most frequent first; the tail is made-up words.
HEAD = (  # noqa: SIM905 (a sentence reads better than 70 quoted words)
    "the and you that river stone was for with this have not but what all were when can said "
    "there use each which she how their will other about out many then them these some her "
    "would make like him into time has look two more write see number way could people than "
    "first water been call who oil its now find long down day did get come made may part"
).split()


# --- the data set ------------------------------------------------------------------------------
def vocabulary(rng: random.Random, size: int = 30_000) -> tuple[list[str], list[float]]:
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "quo", "dra", "ni", "pe", "sul"]
    syllables += ["ar", "bex", "cor", "dun", "el", "fi", "gor", "ha", "is", "ju", "ly", "mor"]
    words = list(HEAD)
    seen = set(words) | {RARE, "xylophonic"}
    while len(words) < size:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen and not word.startswith("riv"):
            seen.add(word)
            words.append(word)
    weights = [1 / (rank + 1) ** 1.05 for rank in range(len(words))]
    total = 0.0
    cumulative = []
    for weight in weights:
        total += weight
        cumulative.append(total)
    return words, cumulative


def sentences(rng: random.Random, count: int = 60_000) -> list[str]:
    words, cumulative = vocabulary(rng)
    out = []
    for _ in range(count):
        chosen = rng.choices(words, cum_weights=cumulative, k=rng.randint(5, 18))
        out.append(" ".join(chosen).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
    return out


def text(rng: random.Random, pool: list[str], role: str) -> str:
    count = rng.randint(1, 3) if role == "user" else rng.randint(3, 9)
    return " ".join(rng.choice(pool) for _ in range(count))


def build(conversations: int, per_conversation: int, log) -> dict:
    """Store Bob's 100 conversations, then Alice's, with bulk inserts; returns their ids."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from chat.models import Conversation, Message

    rng = random.Random(2026)
    pool = sentences(rng)
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    start = datetime.now(UTC) - timedelta(days=400)
    next_conversation, next_message = 1, 1
    total = (100 + conversations) * per_conversation
    rare_every = max(1, conversations * per_conversation // 20)
    began = time.monotonic()
    for owner, count in ((bob, 100), (alice, conversations)):
        for first in range(0, count, 200):
            with transaction.atomic():
                chunk = range(first, min(count, first + 200))
                convs = [
                    Conversation(
                        pk=next_conversation + i,
                        owner=owner,
                        title=" ".join(rng.choices(HEAD[4:], k=2)).capitalize()
                        + f" {rng.choice(pool).split()[0].lower()}",
                        model="bench-model",
                    )
                    for i in range(len(chunk))
                ]
                Conversation.objects.bulk_create(convs)
                rows = []
                for conv in convs:
                    parent = None
                    for j in range(per_conversation):
                        role = "user" if j % 2 == 0 else "assistant"
                        content = text(rng, pool, role)
                        if owner == alice and next_message % rare_every == 0:
                            content += f" A {RARE} flew past."
                        when = start + timedelta(seconds=next_message * 30)
                        rows.append(
                            Message(
                                pk=next_message,
                                conversation_id=conv.pk,
                                parent_id=parent,
                                role=role,
                                content=content,
                                model="bench-model" if role == "assistant" else "",
                                created_at=when,
                                updated_at=when,
                            )
                        )
                        parent = next_message
                        next_message += 1
                Message.objects.bulk_create(rows, batch_size=2000)
                next_conversation += len(convs)
            done = next_message - 1
            if first % 2000 == 0:
                rate = done / (time.monotonic() - began)
                log(f"  {done:,} / {total:,} messages ({rate:,.0f}/s)")
    # auto_now fields were set by bulk_create: spread the conversations over the year instead.
    with connection.cursor() as cursor:
        cursor.execute(
            'UPDATE "chat_conversation" SET "current_leaf_id" = "id" * %s, '
            '"updated_at" = (SELECT "created_at" FROM "chat_message" '
            'WHERE "chat_message"."id" = "chat_conversation"."id" * %s)',
            [per_conversation, per_conversation],
        )
    return {"alice": alice.pk, "bob": bob.pk, "built_seconds": round(time.monotonic() - began)}


def _postgres_index_statements() -> tuple[list[str], list[str]]:
    migration = importlib.import_module("chat.migrations.0005_search")
    return migration.POSTGRESQL, migration.POSTGRESQL_REVERSE


# --- measuring ---------------------------------------------------------------------------------
def measure(client, query: str, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = "/search/"
    response = client.get(url, {"q": query})  # not measured: warms caches
    assert response.status_code == 200, response.status_code
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url, {"q": query})
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    with CaptureQueriesContext(connection) as queries:
        client.get(url, {"q": query})
    body = response.content.decode()
    return {
        "server_ms_median": round(median(times) * 1000, 1),
        "server_ms_min": round(min(times) * 1000, 1),
        "server_ms_max": round(max(times) * 1000, 1),
        "cpu_ms_median": round(median(cpu) * 1000, 1),
        "queries": len(queries.captured_queries),
        "hits_shown": body.count('class="snippet"'),
        "titles_shown": body.count('class="hit-title"') - body.count('class="snippet"'),
        "met": median(times) * 1000 <= TARGET_MS,
    }


def run_one(db: str, args) -> dict:
    """Build (or reuse) `db`'s data set, then measure; in this process."""
    tmp = Path(args.dir)
    tmp.mkdir(parents=True, exist_ok=True)
    if db == "sqlite":
        url = f"sqlite:///{tmp / 'serika.sqlite3'}"
    else:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_NAME}"
        _ensure_pg_database(fresh=args.rebuild)
    if db == "sqlite" and args.rebuild:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp / 'serika.sqlite3'}{suffix}").unlink(missing_ok=True)
    os.environ.update(
        {
            "DATABASE_URL": url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + os.urandom(16).hex(),
            "SECURE_HTTPS": "false",
            "ALLOWED_HOSTS": HOST,
            "SERIKA_API_KEY": "bench",
            "DATA_DIR": str(tmp),
            "REDIS_URL": "",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ["DJANGO_SETTINGS_MODULE"] = "serika_web.settings"
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from chat.models import Message

    def log(line: str) -> None:
        print(f"[{db}] {line}", file=sys.stderr, flush=True)

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)  # pages use the manifest
    expected = (100 + args.conversations) * args.messages // args.conversations
    info: dict = {"database": db}
    if Message.objects.count() != expected:
        if Message.objects.exists():
            raise SystemExit(f"{db}: the data set has another size; run with --rebuild")
        log(f"building {args.conversations:,} conversations, {args.messages:,} messages…")
        create, drop = _postgres_index_statements()
        with connection.cursor() as cursor:
            if db == "postgresql":
                for sql in drop:
                    cursor.execute(sql)
        info.update(build(args.conversations, args.messages // args.conversations, log))
        with connection.cursor() as cursor:
            if db == "postgresql":
                log("building the search indexes…")
                began = time.monotonic()
                cursor.execute("SET maintenance_work_mem = '512MB'")
                for sql in create:
                    cursor.execute(sql)
                cursor.execute("ANALYZE")
                info["index_seconds"] = round(time.monotonic() - began)
            else:
                cursor.execute("INSERT INTO chat_message_fts(chat_message_fts) VALUES ('optimize')")
                cursor.execute("ANALYZE")
        log(f"built in {info['built_seconds'] + info.get('index_seconds', 0)} s")
    else:
        log("reusing the data set")
    info["messages"] = Message.objects.count()
    info["size_mb"] = _size_mb(db, connection, tmp)
    users = {u.username: u for u in User.objects.filter(username__in=["alice", "bob"])}
    clients = {}
    for name, user in users.items():
        clients[name] = Client(HTTP_HOST=HOST)
        clients[name].force_login(user)
    info["results"] = {}
    for label, query, who in QUERIES:
        result = measure(clients[who], query, args.runs)
        result["query"] = query
        info["results"][label] = result
        log(f"{label:28} {result['server_ms_median']:8.1f} ms  ({result['hits_shown']} hits)")
    return info


def _size_mb(db: str, connection, tmp: Path) -> float:
    if db == "sqlite":
        return round(sum(p.stat().st_size for p in tmp.glob("serika.sqlite3*")) / 2**20)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return round(cursor.fetchone()[0] / 2**20)


def _ensure_pg_database(fresh: bool) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_NAME]).fetchone()
        if exists and fresh:
            admin.execute(f'DROP DATABASE "{PG_NAME}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{PG_NAME}"')


def _drop_pg_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')


# --- the harness -------------------------------------------------------------------------------
def table(results: list[dict]) -> str:
    lines = [
        f"Search page, server time: median of {results[0].get('runs', '?')} requests "
        f"(target {TARGET_MS} ms)",
        "",
        "| query | " + " | ".join(r["database"] for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for label, query, _ in QUERIES:
        cells = []
        for r in results:
            m = r["results"][label]
            cells.append(f"{m['server_ms_median']} ms ({m['hits_shown']} hits, {m['queries']} q)")
        lines.append(f"| {label} (`{query}`) | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        lines.append(
            f"{r['database']}: {r['messages']:,} messages, {r['size_mb']:,} MB on disk"
            + (f", built in {r['built_seconds']} s" if "built_seconds" in r else "")
            + (f" + index {r['index_seconds']} s" if "index_seconds" in r else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "serika-search-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the data sets for a rerun")
    parser.add_argument("--rebuild", action="store_true", help="build the data sets anew")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds per database")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        info = run_one(args.db, args)
        info["runs"] = args.runs
        print(json.dumps(info))
        return
    results = []
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    try:
        for db in databases:
            argv = [sys.executable, "-m", "bench.search_bench", "--child", "--db", db]
            argv += ["--conversations", str(args.conversations), "--messages", str(args.messages)]
            argv += ["--runs", str(args.runs), "--dir", args.dir]
            argv += ["--rebuild"] if args.rebuild else []
            done = subprocess.run(
                argv, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False
            )
            if done.returncode:
                raise SystemExit(f"{db}: the benchmark failed ({done.returncode})")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if not args.keep:
            if "postgresql" in databases:
                _drop_pg_database()
            if "sqlite" in databases:
                for path in Path(args.dir).glob("serika.sqlite3*"):
                    path.unlink()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "search.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()

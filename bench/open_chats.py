"""500 members open a chat at once, across two daphne processes on PostgreSQL.

    .venv/bin/python -m bench.open_chats [--members 500] [--servers 2] [--pool-size 20]

Each member (a session made directly in the database: hashing 500 passwords with PBKDF2 would
measure the hasher) loads the home page, posts its "new chat" form and loads the chat page it is
sent to, all members at once. Reported: errors (any other status, or a failed request), the
time each member took (p50/p99), and the most connections the servers held at once
(`pg_stat_activity`, sampled every 20 ms). A fresh database (`serika_openchats_<pid>`) is created
and dropped; Redis database 14 carries the channel layer. Nothing here is asserted: the numbers
go in the report. tests/test_db_pool.py runs the same burst, smaller, as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from bench import browser
from bench.common import percentile
from bench.run import free_port, stop, wait_port

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"


async def open_chats(
    members: list[tuple[str, str, str]], character_id: int
) -> tuple[list[float], list[str]]:
    """Every member (base URL, session cookie name, value) opens a chat at the same moment.
    Returns the durations of those that succeeded and the errors of the others."""

    async def one(base_url: str, name: str, value: str) -> float | str:
        address = urlsplit(base_url)
        target = {
            "host": address.hostname,
            "port": address.port,
            "origin": base_url,
            "cookies": {name: value},
        }
        start = time.perf_counter()
        try:
            await browser.start_chat(target, character_id)
        except (browser.BrowserError, httpx.HTTPError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start

    results = await asyncio.gather(*(one(*member) for member in members))
    durations = [r for r in results if isinstance(r, float)]
    errors = [r for r in results if isinstance(r, str)]
    return durations, errors


class ConnectionCounter:
    """Samples how many backends are connected to one database (only those whose
    application_name is `application_name`, when given), in a thread; keeps the most."""

    def __init__(
        self,
        conninfo: str,
        dbname: str,
        application_name: str | None = None,
        interval: float = 0.02,
    ) -> None:
        self.conninfo, self.dbname, self.interval = conninfo, dbname, interval
        self.application_name = application_name
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        params: tuple[str, ...] = (self.dbname,)
        if self.application_name is not None:
            query += " AND application_name = %s"
            params += (self.application_name,)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.is_set():
                (count,) = conn.execute(query, params).fetchone()
                self.most = max(self.most, count)
                self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--pool-timeout", type=float, default=None, help="default: the setting's")
    args = parser.parse_args()

    dbname = f"serika_openchats_{os.getpid()}"
    database_url = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    workdir = Path(tempfile.mkdtemp(prefix="serika-openchats-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "serika_web.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "SECURE_HTTPS": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_PREFIX": f"openchats-{os.getpid()}",
        "STATIC_ROOT": str(workdir / "static"),
        "DATA_DIR": str(workdir),
        "DATABASE_POOL_MAX_SIZE": str(args.pool_size),
        **({"DATABASE_POOL_TIMEOUT": str(args.pool_timeout)} if args.pool_timeout else {}),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    servers: list[subprocess.Popen] = []
    try:
        for command in (["migrate", "-v", "0"], ["collectstatic", "--noinput", "-v", "0"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
        os.environ.update(env)
        import django

        django.setup()
        members_db = make_members(args.members)

        ports = []
        for i in range(args.servers):
            port = free_port()
            log = (workdir / f"daphne-{i + 1}.log").open("wb")
            command = [sys.executable, "-m", "serika_web.serve", "-b", "127.0.0.1", "-p"]
            servers.append(
                subprocess.Popen(
                    [*command, str(port), "serika_web.asgi:application"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_port(port, servers[-1])
            ports.append(port)
        character_id, cookies = members_db
        from django.conf import settings
        from django.db import connection

        # Only the servers' connections are counted: this process's pool goes first.
        connection.close()
        connection.close_pool()

        members = [
            (f"http://127.0.0.1:{ports[i % len(ports)]}", settings.SESSION_COOKIE_NAME, cookie)
            for i, cookie in enumerate(cookies)
        ]
        conninfo = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
        with ConnectionCounter(conninfo, dbname) as counter:
            started = time.perf_counter()
            durations, errors = asyncio.run(open_chats(members, character_id))
            wall = time.perf_counter() - started
        print(
            f"{args.members} members, {args.servers} servers, pool {args.pool_size} each "
            f"(timeout {env.get('DATABASE_POOL_TIMEOUT', 'default')}): "
            f"{len(errors)} errors; per member p50 {percentile(durations, 50) or 0:.2f} s, "
            f"p99 {percentile(durations, 99) or 0:.2f} s, max {max(durations, default=0):.2f} s; "
            f"all done in {wall:.1f} s; at most {counter.most} connections"
        )
        for error in sorted(set(errors))[:5]:
            print("  error:", error)
    finally:
        for server in servers:
            stop(server)
        from django.db import connections

        connections.close_all()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def make_members(count: int) -> tuple[int, list[str]]:
    """A character and `count` members with a session each; their session keys."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from characters.models import Character

    character = Character.objects.create(name="Serika", first_mes="Hello {{user}}!")
    users = User.objects.bulk_create(
        [User(username=f"member{i}", password="!") for i in range(count)]
    )
    keys = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    return character.pk, keys


if __name__ == "__main__":
    main()

"""PostgreSQL and Redis servers of a test's own, on free ports, that the test may stop and start.

The machine's shared servers must never be stopped by a test (the rest of the suite uses them),
so outage tests start their own: `initdb` + `pg_ctl` in a temporary folder (run as the
`postgres` user when the tests run as root, since PostgreSQL refuses root), and `redis-server`.
Missing binaries skip the test with the reason, except in CI, where they fail it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.live import accepts, free_port

START_TIMEOUT = 30.0


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, trust auth, user `postgres`."""

    def __init__(self) -> None:
        self.initdb = _require("initdb")
        self.pg_ctl = _require("pg_ctl")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="serika-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self.as_postgres, *command], check=True, capture_output=True, timeout=60, cwd="/"
        )

    def url(self, database: str = "serika") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(int(START_TIMEOUT)), "start")  # fmt: skip

    def stop(self) -> None:
        """Stop now ("fast": open connections are cut, as when a server goes down)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str = "serika") -> None:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
             f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_postgres, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True, timeout=30, check=False, cwd="/",
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free port that keeps nothing on disk."""

    def __init__(self) -> None:
        self.binary = _require("redis-server")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def private_postgres():
    """A started PostgreSQL cluster with an empty database `serika`."""
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_redis():
    """A started redis-server of this test's own."""
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()

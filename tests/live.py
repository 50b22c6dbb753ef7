"""Real daphne servers for end-to-end tests, on the test database pytest-django created.

Each server is a subprocess running `serika_web.asgi:application` with the production settings
module (DEBUG off, manifest static files, the fake upstream as the Serika API), bound to
127.0.0.1 on a free port. Tests that use them must commit their data:
`@pytest.mark.django_db(transaction=True)`. Register the fixtures in a test module with

    from tests import live

    static_root = live.static_root
    daphne_servers = live.daphne_servers
    daphne_server = live.daphne_server

(assignments rather than imports, so ruff does not read the test arguments as redefinitions).

`daphne_server` is one running server; `daphne_servers.start()` starts more (on the same database
and channel layer), and `server.kill()` SIGKILLs one mid-test. A server's output goes to a log
file, printed (and copied to test-artifacts/) when the test fails.

`browser` (registered the same way, `browser = live.browser`) is a headless Chromium page on top
of `daphne_server`, collecting console errors, page errors and CSP violations in `problems`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
START_TIMEOUT = 20.0  # seconds for a server to accept connections
STOP_TIMEOUT = 10.0  # seconds for a terminated server to exit before it is killed


def database_url() -> str:
    """The URL of the database this test process uses (the test database, once created)."""
    db = connection.settings_dict
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        path = Path(str(db["NAME"])).resolve()
        return f"sqlite:///{path}"  # an absolute path: four slashes in all
    if engine == "django.db.backends.postgresql":
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or ""
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{quote(str(db['NAME']), safe='')}"
    raise NotImplementedError(f"live servers do not support {engine}")


def server_env(**overrides: str) -> dict[str, str]:
    """The environment of a production-like server process (and of its collectstatic)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",
            "REDIS_URL",
            "PYTEST_CURRENT_TEST",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
    }
    env.update(
        DJANGO_SETTINGS_MODULE="serika_web.settings",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        PYTHONUNBUFFERED="1",
        DEBUG="false",
        # The test process's key: sessions it stores must verify in the servers.
        SECRET_KEY=django_settings.SECRET_KEY,
        SECURE_HTTPS="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SERIKA_API_KEY="test-key",
        CHAT_HEARTBEAT_INTERVAL="0.5",
        CHAT_FLUSH_INTERVAL="0.2",
        LOG_LEVEL="INFO",
        # A test's teardown stops its servers; a reply still streaming then must not hold it.
        SHUTDOWN_GRACE_SECONDS="1",
    )
    # Several processes share a group only through Redis; without it each has its own layer.
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    env.update(overrides)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something on 127.0.0.1 accepts connections on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LiveServer:
    """One daphne process."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.origin = self.url
        # As deployed: daphne on uvloop, through the project's launcher.
        command = [sys.executable, "-m", "serika_web.serve"]
        command += ["-b", "127.0.0.1", "-p", str(self.port), "serika_web.asgi:application"]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def ws_url(self, conversation_id: int) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/conversations/{conversation_id}/"

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode} before accepting "
                    f"connections:\n{self.output()}"
                )
            if accepts(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not accept connections on port {self.port} within {timeout:g} s:\n"
            f"{self.output()}"
        )

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash or an OOM kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Terminate, then kill if it has not exited in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class LiveServers:
    """Starts servers on this test's database, and stops them all at teardown."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.servers: list[LiveServer] = []

    def start(self) -> LiveServer:
        last_error: Exception | None = None
        for _ in range(3):  # a free port may be taken before daphne binds it
            name = f"daphne-{len(self.servers) + 1}"
            server = LiveServer(name, self.env, self.log_dir / f"{name}.log")
            self.servers.append(server)
            try:
                server.wait_until_ready()
            except RuntimeError as exc:
                last_error = exc
                if "Address already in use" not in server.output():
                    raise
                continue
            return server
        raise RuntimeError("could not start a live server") from last_error

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Static files collected once (manifest storage is on whenever DEBUG is off)."""
    root = tmp_path_factory.mktemp("live-static")
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        # collectstatic opens no database; the URL only keeps the default path out of data/.
        env=server_env(STATIC_ROOT=str(root), DATABASE_URL=f"sqlite:///{root.parent}/unused.db"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"collectstatic failed:\n{result.stdout}\n{result.stderr}")
    return root


def _report_failure(request: pytest.FixtureRequest, servers: list[LiveServer]) -> None:
    """Copy each server's log to test-artifacts/ and print it."""
    ARTIFACTS.mkdir(exist_ok=True)
    test = request.node.name.replace("/", "_")
    for server in servers:
        target = ARTIFACTS / f"{test}-{server.name}.log"
        shutil.copyfile(server.log_path, target)
        # Shown by pytest under the failure ("Captured stdout teardown").
        print(f"--- {server.name} ({server.url}) output, also in {target} ---")
        print(server.output())


@pytest.fixture
def daphne_servers(
    request: pytest.FixtureRequest,
    transactional_db: None,
    upstream: Any,
    static_root: Path,
    tmp_path: Path,
) -> Iterator[LiveServers]:
    """A starter of daphne processes on this test's database and the fake upstream.

    A test module gives its servers more settings with a fixture named `live_server_env` (a
    dict of environment variables) that its tests request, e.g. the single sign-on provider's.
    """
    extra = (
        request.getfixturevalue("live_server_env")
        if "live_server_env" in request.fixturenames
        else {}
    )
    env = server_env(
        DATABASE_URL=database_url(),
        SERIKA_BASE_URL=upstream.base_url,
        STATIC_ROOT=str(static_root),
        DATA_DIR=str(tmp_path / "data"),
        MEDIA_ROOT=str(tmp_path / "media"),
        **extra,
    )
    servers = LiveServers(env, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield servers
    finally:
        servers.stop_all()
        if request.session.testsfailed > failed_before:
            _report_failure(request, servers.servers)


@pytest.fixture
def daphne_server(daphne_servers: LiveServers) -> LiveServer:
    """One running daphne process."""
    return daphne_servers.start()


# --- database access from async tests ---------------------------------------------------------
def _closing(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    finally:
        # A worker thread's connection would outlive the test and keep PostgreSQL from
        # dropping the test database at the end of the session.
        connections.close_all()


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run database code in a worker thread and close that thread's connections after it."""
    return await asyncio.to_thread(_closing, fn)


# --- websocket clients ----------------------------------------------------------------------
def session_cookie(user) -> str:
    """A header value that logs `user` in (a session stored in the shared database)."""
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


class LiveSocket:
    """A websocket to a live server, keeping every frame it received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def receive_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Read frames until one matches; fail after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.receive(timeout)
                if predicate(frame):
                    return frame

    def streamed(self, reply_id: int) -> tuple[str, int]:
        """The text (and last seq) a browser builds from snapshots and deltas for `reply_id`;
        asserts the deltas it applies are consecutive (no gap, no duplicate)."""
        text, seq = "", 0
        for frame in self.frames:
            if frame["type"] == "message.snapshot" and frame["message"]["id"] == reply_id:
                text, seq = frame["message"]["content"], frame["message"]["seq"]
            elif frame["type"] == "message.delta" and frame["id"] == reply_id:
                assert frame["seq"] == seq + 1, f"gap or duplicate: seq {seq} then {frame['seq']}"
                text, seq = text + frame["text"], frame["seq"]
        return text, seq

    async def close(self) -> None:
        await self.ws.close()


async def open_socket(server: LiveServer, user, conversation_id: int) -> LiveSocket:
    """Log `user` in and open the conversation's websocket on `server`, as a browser tab."""

    cookie = await in_thread(lambda: session_cookie(user))
    return await open_socket_with_cookie(server, cookie, conversation_id)


async def open_socket_with_cookie(server: LiveServer, cookie: str, conversation_id: int):
    """Open the conversation's websocket on `server` with a `Cookie` header value."""
    from websockets.asyncio.client import connect

    ws = await connect(
        server.ws_url(conversation_id),
        origin=server.origin,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
        close_timeout=5,
    )
    return LiveSocket(ws)


async def start_reply(ws: LiveSocket, content: str = "Tell me a long story") -> int:
    """Send a message and return the id of the reply it started."""
    await ws.send({"type": "message.send", "content": content})
    created = await ws.receive_until(
        lambda f: f["type"] == "message.created" and f["message"]["role"] == "assistant"
    )
    return created["message"]["id"]


# --- headless Chromium ------------------------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Reported to the console (and so collected) whenever the page's CSP blocks anything.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""
BROWSER_TIMEOUT_MS = 15_000
# The pages declare no icon, so Chromium asks for /favicon.ico and logs its 404 as an error;
# that alone is ignored (a `<link rel="icon" href="data:,">` in base.html would end it).
FAVICON_404 = "Failed to load resource: the server responded with a status of 404"


class BrowserPage:
    """A Chromium page, with every console error and uncaught exception it reported, and the
    websocket frames it exchanged (printed when the test fails)."""

    def __init__(self, page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.frames: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws) -> None:
        start = time.monotonic()

        def record(direction: str, payload: str | bytes) -> None:
            self.frames.append(f"{time.monotonic() - start:7.3f} {direction} {payload!s:.200}")

        ws.on("framesent", lambda payload: record(">", payload))
        ws.on("framereceived", lambda payload: record("<", payload))
        ws.on("close", lambda _: record("x", "closed"))

    def _on_console(self, message) -> None:
        if message.text.startswith(FAVICON_404) and message.location.get("url", "").endswith(
            "/favicon.ico"
        ):
            return
        if message.type in {"error", "assert"}:
            self.problems.append(f"console {message.type}: {message.text} ({message.location})")


@contextmanager
def chromium_page(
    request: pytest.FixtureRequest, monkeypatch, **context_options: Any
) -> Iterator[BrowserPage]:
    """A page in a fresh headless Chromium; on a test failure, a screenshot in test-artifacts/
    and the websocket frames are printed. Skips (fails on CI) when Chromium is not installed."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API marks its own event loop as running in this thread, which Django
    # takes for an async context; the test's ORM calls are plain sync code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = chromium.new_context(viewport={"width": 1280, "height": 860}, **context_options)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        page = BrowserPage(context.new_page())
        failed_before = request.session.testsfailed
        try:
            yield page
        finally:
            if request.session.testsfailed > failed_before:
                ARTIFACTS.mkdir(exist_ok=True)
                path = ARTIFACTS / f"{request.node.name}.png"
                page.page.screenshot(path=str(path), full_page=True)
                print(f"screenshot: {path}")
                print("websocket frames (> sent, < received):", *page.frames[-300:], sep="\n")
            context.close()
            chromium.close()
            # While Playwright's loop runs, Django hands this thread another connection (its
            # connection store is per context then); pytest-django never closes that one, and
            # an open one keeps PostgreSQL from dropping the test database.
            connections.close_all()


def production_settings(
    env: dict[str, str], names: str = "", *, unset_prefix: str = ""
) -> subprocess.CompletedProcess:
    """Import `serika_web.settings` in a new interpreter, with `env` over this process's
    environment (less the variables that start with `unset_prefix`, when given). When it starts,
    its stdout is the JSON list of the settings `names` (space-separated; null for one not set)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not (unset_prefix and name.startswith(unset_prefix))
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from serika_web import settings as s; "
            "print(json.dumps([getattr(s, n, None) for n in sys.argv[1:]]))",
            *names.split(),
        ],
        cwd=ROOT,
        env={**inherited, "SECRET_KEY": "x" * 50, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def log_in(page: Any, url: str, username: str, password: str, next_path: str = "") -> None:
    """Log in through the login page's form (then on to `next_path`, when given)."""
    page.goto(f"{url}/login/" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def log_in_and_open_a_chat(page: Any, url: str, username: str, password: str) -> None:
    """Log in through the login page and start a chat with the fixture character, Serika."""
    from playwright.sync_api import expect

    page.goto(f"{url}/")
    expect(page).to_have_url(f"{url}/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Chat with Serika").click()
    expect(page.locator("#chat")).to_have_attribute("data-connected", "true")


@pytest.fixture
def browser(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, daphne_server: LiveServer
) -> Iterator[BrowserPage]:
    """A headless Chromium page. Depends on the server so that it is torn down first: the
    failure screenshot shows the page before its server goes away."""
    with chromium_page(request, monkeypatch) as page:
        yield page

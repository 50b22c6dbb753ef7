"""`pip install .` gives a product that runs: the wheel, installed in a fresh virtualenv outside
the checkout, migrates, collects its static files, serves, logs a member in and streams a reply.

Slow (a wheel build and a dependency install from pip's cache): marked `wheel`, and run once, in
the embedded pass of `make test`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.live import START_TIMEOUT, accepts, free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.wheel, pytest.mark.timeout(600)]

# Where a checkout's files land in the wheel; tests/, bench/, docs/ and the rest are not shipped.
SHIPPED = {
    "serika_web/": "serika_web/",
    "chat/": "chat/",
    "characters/": "characters/",
    "accounts/": "accounts/",
    "usage/": "usage/",
    "templates/": "serika_web/assets/templates/",
    "static/": "serika_web/assets/static/",
}


def checkout_files() -> list[str]:
    """The files a clone has (tracked), plus new ones not yet committed nor ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(files: list[str], tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout (so no build/ or egg-info is left in the checkout)."""
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("serika_web-*.whl")
    return wheel


def outside_env(**extra: str) -> dict[str, str]:
    """A production environment that knows nothing of the checkout or of the test settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SERIKA_", "CHAT_", "DEBUG", "SECURE_", "PYTHON", "OIDC_"))
        and k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DATA_DIR", "STATIC_ROOT"}
        and k not in {"MEDIA_ROOT", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST", "ALLOWED_HOSTS"}
    }
    env.update(SECURE_HTTPS="false", ALLOWED_HOSTS="127.0.0.1", PYTHONUNBUFFERED="1", **extra)
    return env


def login(client: httpx.Client, username: str, password: str) -> None:
    client.get("/login/")
    response = client.post(
        "/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text


def test_the_installed_wheel_migrates_serves_and_streams_a_reply(tmp_path, upstream):
    started = time.monotonic()
    files = checkout_files()
    wheel = build_wheel(files, tmp_path)
    built = time.monotonic()

    # Every shipped file of the checkout is in the wheel, where settings.py looks for it.
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    expected = {
        target + name.removeprefix(prefix)
        for name in files
        for prefix, target in SHIPPED.items()
        if name.startswith(prefix)
    }
    assert expected - in_wheel == set(), "add the missing packages to pyproject.toml"
    assert any(name.startswith("chat/migrations/0001") for name in in_wheel)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    # The checkout's pip installs into the new environment; dependencies come from pip's cache.
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    run([*pip, "install", "-q", str(wheel)])
    installed = time.monotonic()

    home = tmp_path / "instance"  # the working directory: data/ is made here
    home.mkdir()
    env = outside_env(SERIKA_BASE_URL=upstream.base_url, SERIKA_API_KEY="test-key")
    serika_web = str(venv / "bin" / "serika-web")

    def command(*args: str, **extra: str) -> str:
        return run([serika_web, *args], cwd=home, env={**env, **extra}).stdout

    where = run(
        [str(venv / "bin" / "python"), "-c", "import serika_web; print(serika_web.__file__)"],
        cwd=home,
        env=env,
    )
    assert where.stdout.startswith(str(venv))  # the installed package, not the checkout
    command("migrate", "--noinput", "-v", "0")
    command("collectstatic", "--noinput", "-v", "0")
    assert list((home / "data" / "static").glob("js/chat.*.js"))  # hashed for the manifest
    command(
        "createsuperuser",
        "--noinput",
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD="a-long-admin-password",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    imported = command("import_starter_character")
    character_id = re.search(r"\(id (\d+)\)", imported).group(1)

    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [serika_web, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts(port):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        prove_it_serves(f"127.0.0.1:{port}", character_id)
    except BaseException:
        print(log_path.read_text(errors="replace"))
        raise
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"wheel {wheel.stat().st_size} bytes, {len(in_wheel)} files; build {built - started:.1f} s, "
        f"install {installed - built:.1f} s, prove {time.monotonic() - installed:.1f} s"
    )


def prove_it_serves(address: str, character_id: str) -> None:
    """Log in over HTTP, open a chat page, stream one reply over its websocket."""
    with httpx.Client(base_url=f"http://{address}", timeout=10) as client:
        login(client, "admin", "a-long-admin-password")
        started = client.post(
            "/conversations/new/",
            data={"character": character_id, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        )
        assert started.status_code == 302, started.text
        page = client.get(started.headers["location"])
        assert page.status_code == 200
        assert 'for="message"' in page.text  # the chat form
        static = re.search(r'src="(/static/js/chat\.[0-9a-f]+\.js)"', page.text)
        assert static and client.get(static.group(1)).status_code == 200
        conversation_id = started.headers["location"].rstrip("/").rsplit("/", 1)[1]
        cookie = f"sessionid={client.cookies['sessionid']}"

    with connect(
        f"ws://{address}/ws/conversations/{conversation_id}/",
        origin=f"http://{address}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps({"type": "message.send", "content": "Hello!"}))
        deadline = time.monotonic() + 20
        while True:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if frame["type"] == "message.done" and frame["message"]["role"] == "assistant":
                break
    assert frame["message"]["status"] == "complete"
    assert frame["message"]["content"] == "Hello, world!"  # the fake upstream's default reply

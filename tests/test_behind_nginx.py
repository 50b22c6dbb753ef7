"""The deployment of deploy/nginx/serika-web.conf, tested: Debian's nginx with that very file
(ports, certificate and static root filled in) in front of daphne processes, and a browser
through it: TLS, login, a streamed reply over the proxied websocket, a reload mid-reply (with
Redis, onto the process that is not generating it), static files from nginx, and the body-size
limit."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from chat.models import Message
from tests import live
from tests.fake_upstream import Reply

static_root = live.static_root
daphne_servers = live.daphne_servers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEPLOYED_CONFIG = live.ROOT / "deploy" / "nginx" / "serika-web.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        reason = "nginx is missing: install Debian's nginx package (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def proxy_config(
    deployed: str,
    *,
    http_port: int,
    https_port: int,
    backends: list[int],
    cert: Path,
    key: Path,
    static: Path,
) -> str:
    """The deployed server blocks with this test's ports, certificate and static root."""
    config = re.sub(
        r"(upstream serika_web \{\n)(?:.*\n)*?(    keepalive)",
        lambda m: (
            m.group(1)
            + "".join(f"    server 127.0.0.1:{port};\n" for port in backends)
            + m.group(2)
        ),
        deployed,
    )
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "/etc/ssl/certs/chat.example.com.pem": str(cert),
        "/etc/ssl/private/chat.example.com.key": str(key),
        "/var/lib/serika-web/static/": f"{static}/",
    }
    for old, new in replacements.items():
        assert old in config, f"{old!r} is no longer in {DEPLOYED_CONFIG.name}: update this test"
        config = config.replace(old, new)
    # IPv6 listeners: loopback IPv4 only in tests.
    return "\n".join(line for line in config.splitlines() if "listen [::]" not in line)


@pytest.fixture
def proxy(daphne_servers, tmp_path: Path, static_root: Path) -> Iterator[dict]:
    """nginx on free loopback ports in front of one daphne (two with Redis)."""
    binary = nginx_binary()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    http_port, https_port = live.free_port(), live.free_port()
    daphne_servers.env.update(
        SECURE_HTTPS="true",
        USE_X_FORWARDED_PROTO="true",
        # nginx passes `Host: 127.0.0.1` ($host has no port); the browser's origin has one.
        CSRF_TRUSTED_ORIGINS=f"https://127.0.0.1:{https_port}",
    )
    count = 2 if os.environ.get("REDIS_URL") else 1
    servers = [daphne_servers.start() for _ in range(count)]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    main = prefix / "nginx.conf"
    main.write_text(
        f"user {getpass.getuser()};\n"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "  include /etc/nginx/mime.types;\n"
        f"  access_log {prefix}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {prefix}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + proxy_config(
            DEPLOYED_CONFIG.read_text(),
            http_port=http_port,
            https_port=https_port,
            backends=[s.port for s in servers],
            cert=cert_path,
            key=key_path,
            static=static_root,
        )
        + "\n}\n"
    )
    check = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(main)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(main), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not live.accepts(https_port):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "nginx did not listen within 10 s"
        time.sleep(0.05)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        yield {
            "url": f"https://127.0.0.1:{https_port}",
            "http_url": f"http://127.0.0.1:{http_port}",
            "servers": servers,
            "ca": str(ca_file),
            "prefix": prefix,
        }
    finally:
        process.terminate()
        process.wait(10)


def test_a_member_chats_through_nginx_with_tls_and_reloads_mid_reply(
    proxy, upstream, character, request, monkeypatch
):
    from playwright.sync_api import expect

    get_user_model().objects.create(
        username="alice",
        password=PBKDF2PasswordHasher().encode("alice-password", "alicesalt1234567"),
    )
    tokens = [f"w{i:02d} " for i in range(120)]
    upstream.enqueue(Reply(tokens=tokens, gap=0.1))  # ~12 s
    url, servers = proxy["url"], proxy["servers"]

    def sockets_opened() -> list[int]:
        return [server.output().count('"WSCONNECT ') for server in servers]

    with live.chromium_page(request, monkeypatch, ignore_https_errors=True) as browser:
        page = browser.page
        live.log_in_and_open_a_chat(page, url, "alice", "alice-password")
        log = page.get_by_role("log", name="Transcript")
        box = page.get_by_role("textbox", name="Message")
        box.fill("Tell me a long story")
        box.press("Enter")
        expect(log.locator(".message.assistant.status-streaming")).to_contain_text("w05")
        generating = sockets_opened().index(1)  # the process whose socket sent the message

        # A reload mid-reply resumes the same reply; with two processes, reload until nginx's
        # round robin puts the page's socket on the one that is not generating.
        for attempt in range(6):
            # Requests in between shift the round robin's turn.
            for _ in range(attempt):
                page.evaluate("fetch('/healthz')")
            before = sockets_opened()
            page.reload()
            expect(page.locator("#chat")).to_have_attribute("data-connected", "true")
            expect(log.locator(".message.assistant").last).to_contain_text("w0")
            after = sockets_opened()
            landed = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a)
            if len(servers) == 1 or landed != generating:
                break
        else:
            pytest.fail("six reloads all landed on the generating process")
        assert len(servers) == 1 or landed != generating
        reply = log.locator(".message.assistant").last
        expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
        expect(reply).to_contain_text("w00 w01")
        expect(reply).to_contain_text("w119")
        assert browser.problems == []
    stored = Message.objects.filter(role="assistant").order_by("-pk").first()
    assert (stored.status, stored.content) == ("complete", "".join(tokens))

    # Plain HTTP is sent to HTTPS by nginx.
    plain = httpx.get(f"{proxy['http_url']}/", follow_redirects=False)
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://127.0.0.1/")


def test_nginx_serves_the_static_files_and_bounds_request_bodies(proxy, static_root):
    client = httpx.Client(verify=ssl.create_default_context(cafile=proxy["ca"]))
    css = next(static_root.glob("css/app.*.css"))
    response = client.get(f"{proxy['url']}/static/css/{css.name}")
    assert response.status_code == 200
    assert "immutable" in response.headers["cache-control"]
    assert response.text == css.read_text()
    access_log = (proxy["prefix"] / "access.log").read_text()
    # Served by nginx itself: none of the daphne processes saw the request.
    assert all(css.name not in server.output() for server in proxy["servers"])
    assert css.name not in access_log  # `access_log off` for /static/

    too_big = client.post(
        f"{proxy['url']}/login/",
        content=b"x" * (33 * 1024 * 1024),
        headers={"content-type": "application/octet-stream"},
    )
    assert too_big.status_code == 413
    assert client.get(f"{proxy['url']}/healthz").status_code == 200

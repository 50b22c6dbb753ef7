"""Server-rendered pages: home, chat, login; headers; the API key never reaches a browser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import actions
from chat.models import Message

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def conversation(alice, character):
    return actions.start_conversation(alice, character)


def test_home_lists_characters_and_the_users_conversations_only(
    client, alice, bob, character, conversation
):
    actions.start_conversation(bob, character)
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "Serika" in page
    assert page.count('href="/conversations/') == 1


def test_starting_a_chat_opens_it_with_the_greeting(client, alice, character):
    client.force_login(alice)
    response = client.post("/conversations/new/", {"character": character.pk})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Hello alice, I am Serika!" in page
    assert 'role="log"' in page
    assert 'for="message"' in page and ">Message</label>" in page


def test_the_chat_page_renders_500_messages_in_a_constant_number_of_queries(
    client, alice, conversation
):
    Message.objects.bulk_create(
        Message(
            conversation=conversation, role=role, content=f"**m{i}**", content_html=f"<p>{i}</p>"
        )
        for i in range(500)
        for role in ["user"]
    )
    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 200
    assert response.content.decode().count('class="message ') == 501
    assert len(queries) <= 6


def test_model_text_in_history_is_sanitized(client, alice, conversation):
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content='<img src=x onerror="alert(1)"> <script>alert(2)</script>',
    )
    client.force_login(alice)
    page = client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page


def test_pages_send_a_strict_content_security_policy(client, alice, conversation):
    client.force_login(alice)
    response = client.get(f"/conversations/{conversation.pk}/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "img-src 'self' data:" in csp
    assert response["X-Content-Type-Options"] == "nosniff"


def test_without_an_api_key_every_chat_page_says_how_to_set_one(
    client, alice, conversation, settings
):
    settings.SERIKA_API_KEY = ""
    client.force_login(alice)
    for url in ["/", f"/conversations/{conversation.pk}/"]:
        page = client.get(url).content.decode()
        assert "SERIKA_API_KEY" in page


def test_the_api_key_never_appears_in_a_page(client, alice, conversation, settings):
    settings.SERIKA_API_KEY = "sk-very-secret-value"
    client.force_login(alice)
    for url in ["/", f"/conversations/{conversation.pk}/", "/login/"]:
        assert "sk-very-secret" not in client.get(url).content.decode()


def test_login_page_logs_in(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEBUG"))}
    env.update(
        DJANGO_SETTINGS_MODULE="serika_web.settings",
        SECRET_KEY="x" * 20 + "-a-long-random-production-secret-key-value",
        ALLOWED_HOSTS="chat.example.com",
    )
    env.pop("SECURE_HTTPS", None)
    env.update(extra)
    return env


def test_check_deploy_is_clean_under_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key_it_cannot_keep(tmp_path):
    # Without SECRET_KEY a key is made in DATA_DIR (tests/test_first_run.py); where that cannot
    # be done, the app says what to set instead of starting with a weak key.
    (tmp_path / "a-file").write_text("")
    env = production_env(
        DATA_DIR=str(tmp_path / "a-file" / "data"), DATABASE_URL="sqlite://:memory:"
    )
    env.pop("SECRET_KEY")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_the_chat_page_shows_each_message_once_and_nothing_stray(client, alice, conversation):
    client.force_login(alice)
    page = client.get(f"/conversations/{conversation.pk}/").content.decode()
    # Each message also carries its raw text for "Copy" (an attribute, never shown).
    assert page.count('data-content="Hello alice, I am Serika!') == 1
    page = re.sub(r' data-content="[^"]*"', "", page)
    assert page.count("Hello alice, I am Serika!") == 1
    assert "Message:" not in page

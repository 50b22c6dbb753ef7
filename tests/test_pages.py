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
from tests.conftest import store_chain

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
    assert page.count("data-conversation-link=") == 1


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
    store_chain(
        conversation,
        *(
            {"role": "user", "content": f"**m{i}**", "content_html": f"<p>{i}</p>"}
            for i in range(500)
        ),
    )
    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 200
    assert response.content.decode().count('class="message ') == 501
    assert len(queries) <= 6


def _store_chat_with_alternatives(
    conversation, messages: int, alternatives: int
) -> tuple[list[Message], list[Message]]:
    """`messages` alternating questions and replies below the conversation's greeting, shown as
    one branch; each reply has `alternatives` siblings in all (regenerated replies), the newest
    shown. Returns the shown replies and the hidden alternatives."""
    shown, hidden = [], []
    for i in range(messages // 2):
        (question,) = store_chain(conversation, {"role": "user", "content": f"q{i}"})
        hidden += Message.objects.bulk_create(
            Message(
                conversation=conversation,
                parent=question,
                role="assistant",
                content=f"hidden alternative {i}.{k}",
                content_html=f"<p>hidden alternative {i}.{k}</p>",
            )
            for k in range(alternatives - 1)
        )
        shown += store_chain(
            conversation, {"role": "assistant", "content": f"a{i}", "content_html": f"<p>a{i}</p>"}
        )
    return shown, hidden


def _queries_and_page(client, conversation) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_chat_page_of_500_messages_with_5_alternatives_per_reply_shows_only_its_branch(
    client, alice, conversation
):
    shown, hidden = _store_chat_with_alternatives(conversation, 500, alternatives=5)
    client.force_login(alice)
    queries, page = _queries_and_page(client, conversation)
    assert queries <= 6
    # The greeting and the 500 messages of the branch; none of the 1,000 hidden alternatives.
    assert page.count('class="message ') == 501
    assert "hidden alternative" not in page
    siblings = dict(re.findall(r'data-id="(\d+)"[^>]*? data-siblings="([^"]*)"', page))
    for reply in shown:
        assert len(siblings[str(reply.pk)].split(",")) == 5
    assert not {str(message.pk) for message in hidden} & siblings.keys()


def test_the_chat_pages_queries_do_not_grow_with_the_chat_or_its_alternatives(
    client, alice, character
):
    short, long = (actions.start_conversation(alice, character) for _ in range(2))
    _store_chat_with_alternatives(short, 50, alternatives=5)
    _store_chat_with_alternatives(long, 500, alternatives=5)
    client.force_login(alice)
    client.get(f"/conversations/{short.pk}/")  # the first page of a session may cost more
    assert _queries_and_page(client, short)[0] == _queries_and_page(client, long)[0]


def test_model_text_in_history_is_sanitized(client, alice, conversation):
    store_chain(
        conversation,
        {
            "role": "assistant",
            "status": "streaming",
            "content": '<img src=x onerror="alert(1)"> <script>alert(2)</script>',
        },
    )
    client.force_login(alice)
    page = client.get(f"/conversations/{conversation.pk}/").content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(2)" in page  # shown, as text


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

"""/metrics behind its token, and JSON log lines that carry the ids of what they are about."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from django.test import override_settings

from chat import actions
from chat.models import Message
from tests import live
from tests.fake_upstream import Reply
from tests.live import in_thread, open_socket, start_reply

static_root = live.static_root
daphne_servers = live.daphne_servers

TOKEN = "scrape-secret"


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus' text format (0 when absent)."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    found = re.search(pattern, text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.django_db
def test_metrics_are_absent_without_a_token_and_refused_with_a_wrong_one(client):
    with override_settings(METRICS_TOKEN=""):
        assert client.get("/metrics").status_code == 404
    with override_settings(METRICS_TOKEN=TOKEN):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        shown = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert shown.status_code == 200
        assert "serika_streams_live" in shown.content.decode()


@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
async def test_a_streamed_reply_moves_the_metrics_and_its_json_log_lines_carry_its_ids(
    daphne_servers, upstream, alice, character
):
    daphne_servers.env.update(METRICS_TOKEN=TOKEN, LOG_FORMAT="json")
    server = daphne_servers.start()
    conversation = await in_thread(lambda: actions.start_conversation(alice, character))

    def scrape() -> str:
        response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return response.text

    before = await in_thread(scrape)
    tokens = [f"t{i} " for i in range(12)]
    upstream.enqueue(Reply(tokens=tokens, gap=0.02))
    tab = await open_socket(server, alice, conversation.pk)
    reply_id = await start_reply(tab)
    await tab.receive_until(
        lambda f: f["type"] == "message.done" and f["message"]["id"] == reply_id
    )
    during = await in_thread(scrape)
    await tab.close()

    complete = 'serika_replies_total{status="complete"}'
    assert metric(during, complete) == metric(before, complete) + 1
    assert metric(during, "serika_tokens_relayed_total") >= metric(
        before, "serika_tokens_relayed_total"
    ) + len(tokens)
    assert metric(during, "serika_time_to_first_token_seconds_count") == 1
    assert metric(during, "serika_reply_seconds_count") == 1
    assert metric(during, "serika_websockets_open") == 1
    assert metric(during, "serika_streams_live") == 0
    reply = await in_thread(lambda: Message.objects.get(pk=reply_id))
    assert reply.status == Message.Status.COMPLETE

    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert lines, server.output()
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about_reply = [line for line in lines if line.get("reply_id") == reply_id]
    assert about_reply, lines
    assert all(line["conversation_id"] == conversation.pk for line in about_reply)
    assert all(line["user_id"] == alice.pk for line in about_reply)
    assert any("complete" in line["message"] for line in about_reply)
    # The API key of the servers (tests/live.server_env) is in no line, JSON or not.
    assert "test-key" not in server.output()


@pytest.mark.django_db
def test_each_request_gets_an_id_and_a_hostile_one_from_outside_is_replaced(client):
    given = client.get("/login/", HTTP_X_REQUEST_ID="abc-123")
    assert given["X-Request-ID"] == "abc-123"
    fresh = client.get("/login/")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["X-Request-ID"])
    hostile = client.get("/login/", HTTP_X_REQUEST_ID='x"}\n{"level": "CRITICAL')
    assert re.fullmatch(r"[0-9a-f]{32}", hostile["X-Request-ID"])


def test_a_log_line_in_json_holds_the_ids_of_its_context():
    import logging

    from serika_web import log_context

    record = logging.LogRecord("chat.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    token = log_context.reply_id.set(42)
    try:
        log_context.ContextFilter().filter(record)
    finally:
        log_context.reply_id.reset(token)
    assert record.reply_id == 42 and record.user_id is None
    from pythonjsonlogger.json import JsonFormatter

    from serika_web.settings import LOGGING

    spec = LOGGING["formatters"]["json"]
    line = json.loads(
        JsonFormatter(spec["fmt"], rename_fields=spec["rename_fields"]).format(record)
    )
    assert line["message"] == "hello x" and line["reply_id"] == 42 and line["level"] == "INFO"

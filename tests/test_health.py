"""`/healthz` and `/readyz`: for probes, unauthenticated, over plain HTTP, by any Host name."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests import live


def test_healthz_answers_ok_to_anyone(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readyz_reports_the_database_and_the_channel_layer_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.content.decode() == "database: ok\nchannel layer: ok\n"


@pytest.mark.django_db
def test_probes_answer_a_host_the_site_does_not_serve(client):
    # A container health check or a proxy addresses a process by its IP or localhost.
    for path in ["/healthz", "/readyz"]:
        assert client.get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400  # the control


@pytest.mark.django_db
def test_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    for path in ["/healthz", "/readyz"]:
        assert client.get(path).status_code == 200
    assert client.get("/login/").status_code == 301  # the control: everything else is


@pytest.mark.django_db
def test_readyz_names_a_channel_layer_that_cannot_be_reached_without_logging_an_error(
    client, settings, caplog
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{live.free_port()}/0"]},
        }
    }
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content.decode().startswith("database: ok\nchannel layer: failed (")
    assert not [r for r in caplog.records if r.name == "django.request"]


def start(tmp_path: Path, **env: str) -> live.LiveServer:
    server = live.LiveServer("daphne", live.server_env(**env), tmp_path / "daphne.log")
    server.wait_until_ready()
    return server


@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_a_production_server_answers_probes_over_plain_http_on_its_ip(tmp_path):
    server = start(
        tmp_path,
        DATABASE_URL=live.database_url(),
        SECURE_HTTPS="true",
        ALLOWED_HOSTS="chat.example.com",
        DATA_DIR=str(tmp_path / "data"),
    )
    try:
        assert httpx.get(f"{server.url}/healthz").text == "ok\n"
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{server.url}/login/").status_code == 400  # not chat.example.com
    finally:
        server.stop()


@pytest.mark.multiprocess
def test_a_server_whose_database_and_redis_are_down_is_alive_but_not_ready(tmp_path):
    closed = live.free_port()
    server = start(
        tmp_path,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/serika",
        REDIS_URL=f"redis://127.0.0.1:{closed}/0",
        DATA_DIR=str(tmp_path / "data"),
    )
    try:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "database: failed (" in ready.text
        assert "channel layer: failed (" in ready.text
    finally:
        server.stop()
    assert "Service Unavailable" not in server.output()  # an answer, not a logged server error

"""Shared fixtures: people (alice, bob), a character, the fake upstream, websocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from tests.fake_upstream import FakeUpstream, Reply


@pytest.fixture(scope="session")
def upstream_server() -> FakeUpstream:
    server = FakeUpstream(api_key="test-key").start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream, settings) -> FakeUpstream:
    """The fake Serika API, with a fresh queue and record for this test."""
    settings.SERIKA_BASE_URL = upstream_server.base_url
    settings.SERIKA_API_KEY = "test-key"
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    # Layers hold queues and connections bound to one event loop; each test has its own loop.
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Rate limits counted in this process's memory start from zero in each test (user ids
    repeat from test to test on SQLite). With Redis the keys carry the run's prefix."""
    from usage import rate_limits

    rate_limits.reset()
    yield
    rate_limits.reset()


@pytest.fixture(autouse=True)
def close_maintenance_connections():
    """The reply-maintenance thread's connection would keep PostgreSQL from dropping the test
    database at the end of the session."""
    yield
    from chat.actions import _maintenance_executor

    _maintenance_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture
def alice(db):
    """Alice owns the conversations in most tests."""
    return get_user_model().objects.create_user("alice", password="alice-password")


@pytest.fixture
def bob(db):
    """Bob is another member: he must never see or touch Alice's conversations."""
    return get_user_model().objects.create_user("bob", password="bob-password")


@pytest.fixture
def character(db):
    from characters.models import Character

    return Character.objects.create(
        name="Serika",
        description="A cheerful guide.",
        system_prompt="You are {{char}}, talking to {{user}}.",
        first_mes="Hello {{user}}, I am {{char}}!",
    )


def admin_change_form(admin_client, character) -> tuple[str, dict[str, Any]]:
    """The admin change page of `character` and what its form posts as it stands, as a browser
    without JavaScript would post it (active; avatar and groups left out)."""
    from django.urls import reverse

    from tests.html_forms import form_data

    url = reverse("admin:characters_character_change", args=[character.pk])
    page = admin_client.get(url).content.decode()
    data: dict[str, Any] = form_data(page, form_id="character_form")
    data.pop("groups", None)
    data["is_active"] = "on"
    return url, data


def store_chain(conversation, *messages: dict[str, Any]):
    """Store `messages` (Message fields) one below the other at the end of the branch the
    conversation shows, and show the last; returns them. For tests that need a history."""
    from chat.models import Conversation, Message

    stored = []
    parent_id = conversation.current_leaf_id
    for fields in messages:
        message = Message.objects.create(conversation=conversation, parent_id=parent_id, **fields)
        stored.append(message)
        parent_id = message.pk
    conversation.current_leaf_id = parent_id
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf_id=parent_id)
    return stored


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


class ChatSocket:
    """A websocket client for one conversation, with helpers that read frames by type."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await self.communicator.receive_from(timeout))
        self.frames.append(frame)
        return frame

    async def receive_until(self, predicate, timeout: float = 10.0) -> dict[str, Any]:
        """Read frames until one matches; fail after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.receive(timeout)
                if predicate(frame):
                    return frame

    async def done(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next `message.done` frame's message."""
        frame = await self.receive_until(lambda f: f["type"] == "message.done", timeout)
        return frame["message"]

    def streamed_text(self, reply_id: int) -> str:
        """The text a browser would have built from snapshots and deltas for `reply_id`."""
        text = ""
        seq = 0
        for frame in self.frames:
            if frame["type"] == "message.snapshot" and frame["message"]["id"] == reply_id:
                text, seq = frame["message"]["content"], frame["message"]["seq"]
            elif frame["type"] == "message.delta" and frame["id"] == reply_id:
                assert frame["seq"] == seq + 1, f"gap or duplicate: {seq} then {frame['seq']}"
                text, seq = text + frame["text"], frame["seq"]
        return text

    async def close(self) -> None:
        await self.communicator.disconnect()


@pytest.fixture
async def connect(request) -> AsyncIterator:
    """Open websockets to the real ASGI application: `await connect(user, conversation)`."""
    from chat import followers, generation, presence
    from serika_web.asgi import application

    sockets: list[ChatSocket] = []

    async def _connect(
        user=None,
        conversation_id: int = 0,
        origin: str | None = "http://127.0.0.1:8000",
        host: str = "127.0.0.1:8000",
        extra_headers: list[tuple[bytes, bytes]] = (),
    ):
        headers = [(b"host", host.encode()), *extra_headers]
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        if user is not None:
            cookie = await asyncio.to_thread(session_cookie, user)
            headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        communicator = WebsocketCommunicator(
            application, f"/ws/conversations/{conversation_id}/", headers=headers
        )
        connected, code = await communicator.connect(timeout=5)
        socket = ChatSocket(communicator)
        socket.connected, socket.code = connected, code
        sockets.append(socket)
        return socket

    yield _connect
    for socket in sockets:
        with contextlib.suppress(Exception):  # already closed by the server
            await socket.close()
    await generation.shutdown()
    followers.stop_watching()
    if django_settings.REDIS_URL:
        await presence.close()
    # The ORM thread's connections would keep PostgreSQL from dropping the test database.
    await sync_to_async(connections.close_all)()


__all__ = ["Reply"]

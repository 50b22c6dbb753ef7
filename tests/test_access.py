"""Who may see and do what: ownership over HTTP and websocket, sessions, origins."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat import actions
from chat.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from chat.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(alice, character):
    """Alice's conversation: bob must get "not found" everywhere."""
    return actions.start_conversation(alice, character)


def test_bob_cannot_open_alices_conversation_over_http(client, bob, conversation):
    client.force_login(bob)
    assert client.get(f"/conversations/{conversation.pk}/").status_code == 404
    assert client.post(f"/conversations/{conversation.pk}/delete/").status_code == 404
    assert conversation.__class__.objects.filter(pk=conversation.pk).exists()


def test_alice_sees_her_conversation(client, alice, conversation):
    client.force_login(alice)
    response = client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 200
    assert "Hello alice, I am Serika!" in response.content.decode()


def test_pages_require_login(client, conversation):
    response = client.get(f"/conversations/{conversation.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


async def test_bob_cannot_open_alices_conversation_over_websocket(connect, bob, conversation):
    ws = await connect(bob, conversation.pk)
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}


async def test_an_unknown_conversation_is_not_found_too(connect, alice, conversation):
    ws = await connect(alice, conversation.pk + 1000)
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}


async def test_a_socket_without_a_session_is_closed(connect, conversation):
    ws = await connect(None, conversation.pk)
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_a_foreign_origin_is_refused_at_the_handshake(connect, alice, conversation):
    ws = await connect(alice, conversation.pk, origin="https://evil.example")
    assert ws.connected is False


async def test_a_logged_out_users_socket_stops_at_the_next_frame(
    connect, upstream, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    from django.contrib.sessions.models import Session

    await Session.objects.all().adelete()
    await ws.send({"type": "message.send", "content": "still here?"})
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    assert not await Message.objects.filter(content="still here?").aexists()
    assert upstream.requests == []


async def test_deactivating_a_user_closes_their_open_sockets(connect, alice, conversation):
    ws = await connect(alice, conversation.pk)
    alice.is_active = False
    await alice.asave()
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_logging_out_closes_that_sessions_sockets(connect, alice, conversation):
    ws = await connect(alice, conversation.pk)
    cookie = dict(ws.communicator.scope["headers"])[b"cookie"].decode()

    def log_out():
        client = Client()
        name, value = cookie.split("=", 1)
        client.cookies[name] = value
        return client.post("/logout/")

    response = await sync_to_async(log_out)()
    assert response.status_code == 302
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_a_character_made_private_since_the_chat_began_can_no_longer_be_talked_to(
    connect, upstream, bob, alice, character
):
    from asgiref.sync import sync_to_async

    conversation = await sync_to_async(actions.start_conversation)(bob, character)
    character.visibility = "owner"
    character.owner = alice
    await character.asave()
    ws = await connect(bob, conversation.pk)
    await ws.send({"type": "message.send", "content": "still there?"})
    error = await ws.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "character_unavailable"
    assert not await Message.objects.filter(content="still there?").aexists()
    assert upstream.requests == []


def change_password_in_the_admin(admin, user, password: str):
    client = Client()
    client.force_login(admin)
    return client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": password, "password2": password, "usable_password": "true"},
    )


async def test_an_admin_changing_a_password_closes_that_members_sockets_at_once(
    connect, alice, admin_user, conversation
):
    ws = await connect(alice, conversation.pk)
    response = await sync_to_async(change_password_in_the_admin)(
        admin_user, alice, "a-new-long-password"
    )
    assert response.status_code == 302
    # Closed without the socket sending anything.
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_a_password_set_in_code_closes_the_sockets_too(connect, alice, conversation):
    # As `manage.py changepassword` does.
    ws = await connect(alice, conversation.pk)

    def change() -> None:
        alice.set_password("another-long-password")
        alice.save()

    await sync_to_async(change)()
    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_saving_a_member_without_a_new_password_leaves_their_sockets_open(
    connect, alice, conversation
):
    ws = await connect(alice, conversation.pk)
    alice.first_name = "Alice"
    await alice.asave()
    assert await ws.communicator.receive_nothing(timeout=0.5)

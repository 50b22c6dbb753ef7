"""Who sees which character: everyone, chosen groups, or only the owner; over HTTP and websocket.

alice owns a private character; bob is another member and must never see or chat with it;
carol belongs to the "writers" group, which one character is shared with.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cardspec.images import normalize_avatar
from characters.models import Character, Visibility
from chat import actions
from chat.consumers import CLOSE_NOT_FOUND
from chat.models import Conversation
from tests.card_corpus import plain_png


@pytest.fixture
def private(alice):
    """Alice's private character (with an avatar): only alice may see it."""
    character = Character.objects.create(
        name="Secret Sally", owner=alice, visibility=Visibility.OWNER, first_mes="Hi, I am Sally."
    )
    character.avatar.save("avatar.png", ContentFile(normalize_avatar(plain_png())))
    return character


@pytest.fixture
def writers(db):
    return Group.objects.create(name="writers")


@pytest.fixture
def carol(writers):
    """Carol is a member of the writers group."""
    user = get_user_model().objects.create_user("carol", password="carol-password")
    user.groups.add(writers)
    return user


@pytest.fixture
def shared(writers):
    """A character shared with the writers group only."""
    character = Character.objects.create(name="Muse", visibility=Visibility.GROUPS)
    character.groups.add(writers)
    return character


def names(user) -> set[str]:
    return set(Character.objects.visible_to(user).values_list("name", flat=True))


def test_bob_cannot_see_alices_private_character_anywhere(client, alice, bob, private, character):
    client.force_login(bob)

    assert "Secret Sally" not in client.get("/").content.decode()
    assert "Secret Sally" not in client.get("/characters/").content.decode()
    assert "Secret Sally" not in client.get("/characters/", {"q": "Sally"}).content.decode()
    assert client.get(f"/characters/{private.pk}/").status_code == 404
    assert client.get(f"/characters/{private.pk}/avatar.png").status_code == 404
    assert "Serika" in client.get("/characters/").content.decode()


def test_bob_cannot_start_a_chat_with_alices_private_character(client, bob, private):
    client.force_login(bob)

    response = client.post("/conversations/new/", {"character": private.pk})

    assert response.status_code == 404
    assert not Conversation.objects.filter(owner=bob).exists()


def test_bob_cannot_edit_delete_or_export_alices_characters_even_public_ones(
    client, alice, bob, private
):
    public = Character.objects.create(name="Open Olive", owner=alice)
    client.force_login(bob)

    for character in (private, public):
        assert client.get(f"/characters/{character.pk}/edit/").status_code == 404
        assert client.post(f"/characters/{character.pk}/edit/", {"name": "x"}).status_code == 404
        assert client.post(f"/characters/{character.pk}/delete/").status_code == 404
        assert client.get(f"/characters/{character.pk}/export.png").status_code == 404
        assert client.get(f"/characters/{character.pk}/export.json").status_code == 404
    assert Character.objects.filter(pk__in=[private.pk, public.pk]).count() == 2
    assert client.get(f"/characters/{public.pk}/").status_code == 200


def test_alice_sees_and_chats_with_her_private_character(client, alice, private):
    client.force_login(alice)

    assert "Secret Sally" in client.get("/characters/").content.decode()
    assert client.get(f"/characters/{private.pk}/").status_code == 200
    avatar = client.get(f"/characters/{private.pk}/avatar.png")
    assert avatar.status_code == 200
    assert avatar["Content-Type"] == "image/png"
    response = client.post("/conversations/new/", {"character": private.pk})
    assert response.status_code == 302
    assert "Hi, I am Sally." in client.get(response["Location"]).content.decode()


def test_a_group_character_is_visible_to_its_groups_and_its_owner_only(
    alice, bob, carol, writers, shared
):
    shared.owner = alice
    shared.save(update_fields=["owner"])

    assert "Muse" in names(carol)
    assert "Muse" in names(alice)  # the owner, though not in the group
    assert "Muse" not in names(bob)
    bob.groups.add(Group.objects.create(name="readers"))
    assert "Muse" not in names(bob)
    bob.groups.add(writers)
    assert "Muse" in names(bob)


def test_a_group_member_can_chat_with_a_group_character_and_others_cannot(
    client, bob, carol, shared
):
    client.force_login(carol)
    assert client.post("/conversations/new/", {"character": shared.pk}).status_code == 302
    client.force_login(bob)
    assert client.post("/conversations/new/", {"character": shared.pk}).status_code == 404
    assert client.get(f"/characters/{shared.pk}/").status_code == 404


def test_groups_only_matter_with_the_groups_setting(bob, writers):
    """A private character stays private even when it lists a group bob is in."""
    bob.groups.add(writers)
    character = Character.objects.create(name="Hermit", visibility=Visibility.OWNER)
    character.groups.add(writers)

    assert "Hermit" not in names(bob)


def test_an_inactive_character_is_hidden_even_from_its_owner(alice, private):
    private.is_active = False
    private.save(update_fields=["is_active"])

    assert "Secret Sally" not in names(alice)


def test_staff_follow_the_same_rule_on_member_pages(client, alice, private):
    """Staff curate every character in the admin; the member pages keep private ones private."""
    admin = get_user_model().objects.create_superuser("root", password="root-password")
    client.force_login(admin)

    assert "Secret Sally" not in names(admin)
    assert client.get(f"/characters/{private.pk}/").status_code == 404
    change = client.get(f"/admin/characters/character/{private.pk}/change/")
    assert change.status_code == 200


def test_anonymous_and_inactive_users_see_no_character(alice, character):
    from django.contrib.auth.models import AnonymousUser

    assert names(AnonymousUser()) == set()
    alice.is_active = False
    assert names(alice) == set()


def test_visible_to_is_one_query_however_many_groups_and_characters(bob, writers):
    for i in range(5):
        group = Group.objects.create(name=f"team-{i}")
        bob.groups.add(group)
        character = Character.objects.create(name=f"Shared {i}", visibility=Visibility.GROUPS)
        character.groups.add(group, writers)
    Character.objects.create(name="Everyone's")

    with CaptureQueriesContext(connection) as queries:
        found = list(Character.objects.visible_to(bob))

    assert len(queries) == 1
    assert len(found) == 6  # each shared character once, despite two matching groups


@pytest.mark.django_db(transaction=True)
async def test_bob_cannot_reach_alices_chat_with_her_private_character_over_websocket(
    connect, alice, bob, private
):
    from asgiref.sync import sync_to_async

    conversation = await sync_to_async(actions.start_conversation)(alice, private)

    ws = await connect(bob, conversation.pk)

    output = await ws.communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}


@pytest.mark.parametrize("visibility", list(Visibility))
@pytest.mark.parametrize("character_active", [True, False])
@pytest.mark.parametrize("user_active", [True, False])
def test_the_per_row_check_agrees_with_the_visible_to_lookup(
    alice, bob, carol, writers, visibility, character_active, user_active
):
    """`is_visible_to` (checked on every send) must apply exactly `visible_to`'s rule."""
    character = Character.objects.create(
        name="Probe", owner=alice, visibility=visibility, is_active=character_active
    )
    character.groups.add(writers)
    for user in (alice, bob, carol):
        user.is_active = user_active
        user.save()
        expected = Character.objects.visible_to(user).filter(pk=character.pk).exists()
        assert character.is_visible_to(user) is expected, (user.username, visibility)
    assert character.is_visible_to(AnonymousUser()) is False

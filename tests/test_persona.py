"""The member's own persona: the name characters use for {{user}}, and a self-description."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from characters.models import UserPersona
from characters.personas import persona_for
from chat import actions
from chat.models import Conversation


def test_without_a_persona_the_name_is_the_short_name_then_the_user_name(alice):
    assert persona_for(alice) == ("alice", "")
    alice.first_name = "Alice"
    alice.save(update_fields=["first_name"])
    assert persona_for(alice) == ("Alice", "")


def test_a_persona_gives_the_display_name_and_description(alice):
    UserPersona.objects.create(user=alice, display_name="Captain A", description="A pilot.")
    assert persona_for(alice) == ("Captain A", "A pilot.")


def test_a_blank_display_name_falls_back_but_the_description_stays(alice):
    UserPersona.objects.create(user=alice, display_name="   ", description="Tall.")
    assert persona_for(alice) == ("alice", "Tall.")


def test_persona_for_is_one_query(alice, django_assert_num_queries):
    UserPersona.objects.create(user=alice, display_name="A")
    alice = get_user_model().objects.get(pk=alice.pk)
    with django_assert_num_queries(1):
        assert persona_for(alice) == ("A", "")


def test_a_conversation_brings_its_owners_persona_so_a_send_asks_no_more(
    alice, bob, django_assert_num_queries
):
    UserPersona.objects.create(user=alice, display_name="Captain A", description="A pilot.")
    for_alice = actions.start_conversation(alice, None)
    for_bob = actions.start_conversation(bob, None)
    alices = Conversation.objects.for_user(alice).get(pk=for_alice.pk)
    bobs = Conversation.objects.for_user(bob).get(pk=for_bob.pk)
    with django_assert_num_queries(0):
        assert persona_for(alices.owner) == ("Captain A", "A pilot.")
        assert persona_for(bobs.owner) == ("bob", "")


def test_alice_edits_her_persona_on_its_page(client, alice, bob):
    client.force_login(alice)
    page = client.get("/persona/").content.decode()
    assert "Characters call you <strong>alice</strong>" in page
    assert "{{user}}" in page

    response = client.post("/persona/", {"display_name": "Ali", "description": "Likes tea."})
    assert response["Location"] == "/persona/"
    response = client.post("/persona/", {"display_name": "Al", "description": ""})

    assert UserPersona.objects.filter(user=alice).count() == 1
    assert persona_for(alice) == ("Al", "")
    assert persona_for(bob) == ("bob", "")
    assert "Characters call you <strong>Al</strong>" in client.get("/persona/").content.decode()


def test_the_persona_page_escapes_what_it_shows(client, alice):
    client.force_login(alice)
    client.post("/persona/", {"display_name": "<script>x</script>", "description": ""})
    page = client.get("/persona/").content.decode()
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_a_too_long_description_is_refused(client, alice):
    client.force_login(alice)
    response = client.post("/persona/", {"display_name": "A", "description": "x" * 4001})
    assert response.status_code == 200
    assert not UserPersona.objects.exists()


def test_the_persona_page_needs_a_login(client):
    assert client.get("/persona/")["Location"].startswith("/login/")

"""Card text on pages (creator notes, greetings): rendered once, and huge or pathological fields as
plain escaped paragraphs instead of markdown, so no view pays seconds of CPU for them."""

from __future__ import annotations

import pytest

from characters.models import Character
from chat import actions
from serika_web.rendering import (
    CARD_MARKDOWN_MAX_CHARS,
    card_render_counts,
    clear_card_cache,
    plain_paragraphs,
    render_card_text,
)
from tests.test_rendering import HOSTILE, Elements

BRACKETS = "[" * 200_000  # took 2.7 s as markdown
TABLE = "| a | b |\n|---|---|\n" + "| x | y |\n" * 48_000  # about 480 kB; took 5.4 s


@pytest.fixture(autouse=True)
def empty_cache():
    clear_card_cache()


def counted(text: str) -> tuple[str, dict[str, int]]:
    """The rendering of `text`, and how each kind of render count changed."""
    before = dict(card_render_counts)
    html = render_card_text(text)
    return html, {kind: card_render_counts[kind] - before[kind] for kind in before}


def tags(html: str) -> set[str]:
    return {tag for tag, _ in Elements(html).found}


def test_a_200_kb_field_of_brackets_is_one_plain_paragraph():
    html, counts = counted(BRACKETS)

    assert html == f"<p>{BRACKETS}</p>"
    assert counts == {"markdown": 0, "plain": 1, "cached": 0}


def test_a_480_kb_markdown_table_is_shown_as_plain_lines():
    html, counts = counted(TABLE)

    assert tags(html) == {"p", "br"}
    assert html.startswith("<p>| a | b |<br>|---|---|<br>| x | y |<br>")
    assert counts["plain"] == 1


def test_card_text_up_to_the_limit_is_markdown():
    table = "| a | b |\n|---|---|\n| x | y |\n"
    text = table + " " * (CARD_MARKDOWN_MAX_CHARS - len(table))

    html, counts = counted(text)

    assert "table" in tags(html)
    assert counts["markdown"] == 1


def test_one_character_over_the_limit_is_plain_text():
    text = "**bold**\n\n" + "x" * (CARD_MARKDOWN_MAX_CHARS - 9)

    assert render_card_text(text) == f"<p>**bold**</p><p>{'x' * (CARD_MARKDOWN_MAX_CHARS - 9)}</p>"


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_card_text_stays_inert_as_plain_text_and_as_markdown(payload):
    for text in (payload, payload + "\n" + "x" * CARD_MARKDOWN_MAX_CHARS):
        found = Elements(render_card_text(text)).found
        assert {tag for tag, _ in found} <= {
            "p",
            "br",
            "a",
            "pre",
            "code",
            "span",
            "div",
            "button",
        }, found
        for _, attrs in found:
            assert not any(name.startswith("on") or name == "style" for name in attrs), attrs
            assert "javascript" not in (attrs.get("href") or "").lower(), attrs
            assert not (attrs.get("href") or "").startswith("data:"), attrs
        # div and button only come from the code block toolbar, with class and type alone.
        for tag, attrs in found:
            if tag in ("div", "button"):
                assert set(attrs) <= {"class", "type"}, attrs


def test_the_same_card_text_is_rendered_once():
    text = "A *greeting* seen by every new chat. 7f3c"

    first, counts_first = counted(text)
    again, counts_again = counted(text)

    assert again == first
    assert counts_first["markdown"] == 1
    assert counts_again == {"markdown": 0, "plain": 0, "cached": 1}


def test_plain_paragraphs_split_on_blank_lines_and_break_lines():
    assert plain_paragraphs("one\r\ntwo\n\n\n  \nthree <b>&</b>\n") == (
        "<p>one<br>two</p><p>three &lt;b&gt;&amp;&lt;/b&gt;</p>"
    )
    assert plain_paragraphs("\n \n") == ""


# --- stored and served -------------------------------------------------------------------------


def test_creator_notes_are_rendered_when_the_character_is_saved(db):
    character = Character.objects.create(name="Notes", creator_notes="Some *notes*")
    assert character.creator_notes_html == "<p>Some <em>notes</em></p>\n"

    character.creator_notes = "Other **notes**"
    character.save(update_fields=["creator_notes"])

    stored = Character.objects.get(pk=character.pk)
    assert stored.creator_notes_html == "<p>Other <strong>notes</strong></p>\n"


def test_the_character_page_serves_the_stored_rendering(client, alice):
    character = Character.objects.create(name="Brackets", creator_notes=BRACKETS)
    client.force_login(alice)

    assert f"<p>{BRACKETS}</p>" in client.get(f"/characters/{character.pk}/").content.decode()
    # Whatever is stored is what the page shows: a view renders nothing itself.
    Character.objects.filter(pk=character.pk).update(creator_notes_html="<p>stored once</p>")
    assert "<p>stored once</p>" in client.get(f"/characters/{character.pk}/").content.decode()


def test_a_new_chat_shows_a_huge_table_greeting_as_plain_text_rendered_once(db, alice, bob):
    character = Character.objects.create(name="Table", first_mes=TABLE)
    before = dict(card_render_counts)

    greetings = [
        actions.start_conversation(person, character).messages.get().content_html
        for person in (alice, bob, alice)
    ]

    assert tags(greetings[0]) == {"p", "br"}
    assert greetings[0].startswith("<p>| a | b |<br>")
    # The greeting has no {{user}}: all three chats render the same text, and it is rendered
    # once.
    assert card_render_counts["plain"] - before["plain"] == 1
    assert card_render_counts["cached"] - before["cached"] == 2
    assert greetings[0] == greetings[1] == greetings[2]

"""The one card-macro expander (cardspec/macros.py) and the four places that use it.

The prompt, a new chat's opening greeting, the home page and the character page must show the
same text for the same card text; they used to disagree on ``<CHAR>`` and ``{{// comments}}``.
"""

from __future__ import annotations

import html

import pytest

from cardspec.macros import card_text, expand_macros
from cardspec.prompt import PromptCharacter, build_prompt
from characters.models import Character
from chat import actions

TEXT = "Hi {{user}}, I am <CHAR>. {{// note}}<BOT> and <USER>: {{original}} {{Mood}} <b>x</b>"
EXPECTED = "Hi alice, I am Mira. Mira and alice: {{original}} {{Mood}} <b>x</b>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{char}} {{CHAR}} <bot> <BOT> <char> <Char>", "C C C C C C"),
        ("{{user}} {{User}} <user> <USER>", "U U U U"),
        ("a{{// a note }}b{{comment: also}}c", "abc"),
        ("a{{//multi\nline}}b", "ab"),
        ("x{{hidden_key: dragon}}y", "xy"),
        ("{{original}} {{random:a,b}} {{char }} <START> <bots>", None),
        ("line\r\nend\rdone", "line\nend\ndone"),
        ("", ""),
    ],
)
def test_expand_macros_fills_names_drops_comments_and_keeps_the_rest(text, expected):
    assert expand_macros(text, char_name="C", user_name="U") == (
        text if expected is None else expected
    )


def test_substituted_names_are_not_expanded_again():
    assert expand_macros("{{user}} {{char}}", char_name="<USER>", user_name="{{char}}") == (
        "{{char}} <USER>"
    )


class _Card:
    def __init__(self, name: str, nickname: str = "") -> None:
        self.name, self.nickname = name, nickname


def test_card_text_uses_the_nickname_for_char_when_set():
    assert card_text("<BOT>", _Card("Mira Long", "Mira"), "U") == "Mira"
    assert card_text("<BOT>", _Card("Mira Long"), "U") == "Mira Long"


@pytest.fixture
def mira(db):
    return Character.objects.create(
        name="Mira Long", nickname="Mira", description=TEXT, first_mes=TEXT
    )


def test_the_prompt_greeting_home_page_and_character_page_agree(client, alice, mira):
    client.force_login(alice)
    prompt = build_prompt(
        PromptCharacter(name=mira.name, nickname=mira.nickname, description=TEXT),
        [],
        user_name="alice",
    )
    greeting = actions.start_conversation(alice, mira).messages.get().content
    home = client.get("/").content.decode()
    page = client.get(f"/characters/{mira.pk}/").content.decode()

    assert EXPECTED in prompt.messages[0]["content"]
    assert greeting == EXPECTED
    assert html.escape(EXPECTED, quote=False) in home.replace("&#x27;", "'")
    assert html.escape(EXPECTED, quote=False) in page.replace("&#x27;", "'")
    for shown in (home, page):
        assert "{{user}}" not in shown and "&lt;CHAR&gt;" not in shown and "note}}" not in shown

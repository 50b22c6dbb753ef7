"""The lorebook inside a card: normalisation, export shapes, and V3 decorator stripping."""

from __future__ import annotations

import pytest

from characters.card_lorebook import (
    MAX_KEY_CHARS,
    MAX_KEYS_PER_ENTRY,
    MAX_LOREBOOK_ENTRIES,
    MAX_REGEX_KEY_CHARS,
    character_book_for_v2,
    character_book_for_v3,
    normalize_character_book,
)
from characters.cards import CardError, strip_decorators
from tests.card_corpus import lorebook_entry

# --- strip_decorators ------------------------------------------------------------------------------


def test_leading_decorator_lines_are_split_off_the_content():
    decorators, rest = strip_decorators("@@depth 3\n@@role system\nThe archive is hidden.")

    assert decorators == ["@@depth 3", "@@role system"]
    assert rest == "The archive is hidden."


def test_fallback_decorators_are_returned_in_order():
    content = "@@risu_only_decorator 4\n@@@activate_after 4\n@@depth 5\n@@@instruct_depth 5\nText"

    decorators, rest = strip_decorators(content)

    assert decorators == [
        "@@risu_only_decorator 4",
        "@@@activate_after 4",
        "@@depth 5",
        "@@@instruct_depth 5",
    ]
    assert rest == "Text"


def test_blank_lines_around_the_decorator_block_are_trimmed():
    decorators, rest = strip_decorators("\n\n@@activate\n\n\nFirst line\n\nSecond line\n")

    assert decorators == ["@@activate"]
    assert rest == "First line\n\nSecond line\n"


def test_decorators_with_crlf_line_endings_are_split_cleanly():
    decorators, rest = strip_decorators("@@depth 3\r\n@@role user\r\n\r\nLine one\r\nLine two")

    assert decorators == ["@@depth 3", "@@role user"]
    assert rest == "Line one\r\nLine two"


def test_content_without_decorators_comes_back_unchanged():
    for content in ["Plain text", "", "\n\nText\n", "Text\n@@depth 3", "email me @@ home"]:
        assert strip_decorators(content) == ([], content)


def test_lines_that_only_look_like_decorators_are_content():
    for content in ["@@ depth 3\nText", "@@@@x\nText", "@@3d\nText", "@@\nText"]:
        assert strip_decorators(content) == ([], content)


def test_content_made_only_of_decorators_leaves_nothing():
    assert strip_decorators("@@dont_activate") == (["@@dont_activate"], "")


def test_decorator_values_with_commas_and_spaces_are_kept_whole():
    decorators, _ = strip_decorators("@@additional_keys a, b,c\nText")

    assert decorators == ["@@additional_keys a, b,c"]


# --- Normalisation -------------------------------------------------------------------------------


def test_a_missing_or_null_lorebook_is_none():
    assert normalize_character_book(None) is None


def test_required_entry_fields_get_defaults():
    book = normalize_character_book({"entries": [{"content": "x"}]})

    assert book["extensions"] == {}
    assert book["entries"] == [
        {"content": "x", "keys": [], "extensions": {}, "enabled": True, "insertion_order": 0}
    ]


def test_a_complete_entry_is_kept_as_it_is():
    entry = lorebook_entry()

    assert normalize_character_book({"extensions": {}, "entries": [entry]})["entries"] == [entry]


def test_keys_given_as_one_comma_separated_string_become_a_list():
    book = normalize_character_book(
        {"entries": [{"keys": "sword, shield", "secondary_keys": "blue,  red ,", "content": ""}]}
    )

    assert book["entries"][0]["keys"] == ["sword", "shield"]
    assert book["entries"][0]["secondary_keys"] == ["blue", "red"]


def test_odd_values_from_real_cards_are_kept():
    entry = lorebook_entry(position="", probability=None, keys=[""], case_sensitive=None, id="abc")

    assert normalize_character_book({"entries": [entry]})["entries"][0] == entry


def test_an_empty_lorebook_without_entries_is_accepted():
    assert normalize_character_book({"name": "Empty"}) == {
        "name": "Empty",
        "extensions": {},
        "entries": [],
    }


@pytest.mark.parametrize(
    ("book", "words"),
    [
        ("lore", "must be an object, not text"),
        ({"entries": [{"keys": [1]}]}, "item 1 is a number"),
        ({"entries": [{"content": 5}]}, "'content' must be text"),
        ({"entries": [{"extensions": []}]}, "'extensions' must be an object"),
        ({"entries": [{"selective": "yes"}]}, "'selective' must be true or false"),
        ({"entries": [{"use_regex": 1}]}, "'use_regex' must be true or false"),
        ({"entries": [{"priority": "high"}]}, "'priority' must be a number"),
        ({"entries": [{"insertion_order": True}]}, "'insertion_order' must be a number"),
        ({"entries": [{"comment": 3}]}, "'comment' must be text"),
        ({"entries": [{"id": [1]}]}, "'id' must be text or a number"),
        ({"entries": [{}, {"secondary_keys": 7}]}, "entry 2"),
        ({"scan_depth": "4", "entries": []}, "'scan_depth' must be a number"),
        ({"recursive_scanning": "no", "entries": []}, "'recursive_scanning' must be true or false"),
        ({"name": 1, "entries": []}, "'name' must be text"),
    ],
)
def test_wrong_lorebook_types_are_refused_with_the_place_named(book, words):
    with pytest.raises(CardError, match=words):
        normalize_character_book(book)


# --- Export shapes ---------------------------------------------------------------------------------


def test_v3_export_adds_use_regex_to_entries_that_lack_it():
    book = normalize_character_book(
        {"entries": [{"content": "a"}, {"content": "b", "use_regex": True}]}
    )

    exported = character_book_for_v3(book)

    assert [entry["use_regex"] for entry in exported["entries"]] == [False, True]
    assert "use_regex" not in book["entries"][0]  # the card's own copy is untouched


def test_v2_export_strips_decorators_but_keeps_plain_content():
    book = normalize_character_book(
        {"entries": [{"content": "@@depth 2\nSecret"}, {"content": "Plain\n@@not_leading"}]}
    )

    exported = character_book_for_v2(book)

    assert [entry["content"] for entry in exported["entries"]] == ["Secret", "Plain\n@@not_leading"]
    assert book["entries"][0]["content"] == "@@depth 2\nSecret"


def test_exporting_no_lorebook_gives_none():
    assert character_book_for_v2(None) is None
    assert character_book_for_v3(None) is None


# --- size limits ---------------------------------------------------------------------------------


def entries(n: int, **fields) -> list[dict]:
    return [{"keys": [f"k{i}"], "content": "x", **fields} for i in range(n)]


def test_a_lorebook_at_every_limit_is_accepted():
    book = {"entries": entries(MAX_LOREBOOK_ENTRIES)}
    book["entries"][0] = {
        "keys": ["k" * MAX_KEY_CHARS] * (MAX_KEYS_PER_ENTRY - 1),
        "secondary_keys": ["s"],
        "content": "x",
    }
    book["entries"][1] = {"keys": ["r" * MAX_REGEX_KEY_CHARS], "content": "x", "use_regex": True}

    assert len(normalize_character_book(book)["entries"]) == MAX_LOREBOOK_ENTRIES


def test_a_lorebook_with_too_many_entries_is_refused_naming_the_limit():
    with pytest.raises(CardError, match="The lorebook has 1,001 entries; at most 1,000"):
        normalize_character_book({"entries": entries(MAX_LOREBOOK_ENTRIES + 1)})


def test_an_entry_with_too_many_keys_is_refused_naming_the_entry_and_the_limit():
    entry = {"keys": ["a"] * 60, "secondary_keys": ["b"] * 41, "content": "x"}

    with pytest.raises(CardError, match=r"Lorebook entry 2 has 101 keys; .* at most 100"):
        normalize_character_book({"entries": [{"content": "x"}, entry]})


def test_a_key_too_long_is_refused():
    entry = {"keys": ["ok", "k" * (MAX_KEY_CHARS + 1)], "content": "x"}

    with pytest.raises(CardError, match="Lorebook entry 1 has a key of 1,001 characters"):
        normalize_character_book({"entries": [entry]})


def test_a_regex_key_has_a_shorter_limit_than_a_plain_key():
    long_key = "(a|aa)+" * 100  # 700 characters
    plain = {"keys": [long_key], "content": "x"}
    regex = {"keys": [long_key], "content": "x", "use_regex": True}

    assert normalize_character_book({"entries": [plain]})
    with pytest.raises(CardError, match=r"regex key of 700 characters .* at most 500"):
        normalize_character_book({"entries": [regex]})


def test_a_long_secondary_key_counts_too():
    entry = {"keys": ["k"], "secondary_keys": ["s" * (MAX_KEY_CHARS + 1)], "content": "x"}

    with pytest.raises(CardError, match="a key of 1,001 characters"):
        normalize_character_book({"entries": [entry]})


def test_a_lorebook_with_too_much_text_is_refused_naming_the_limit():
    # Twenty entries of 50,001 characters: each fine alone, a megabyte together.
    book = {"entries": [{"keys": ["k"], "content": "x" * 50_000} for _ in range(20)]}

    with pytest.raises(CardError, match="hold 1,000,020 characters; at most 1,000,000"):
        normalize_character_book(book)

"""The lorebook inside a card: normalisation, export shapes, V3 decorators, and the lenient
reading prompt assembly relies on (values, entries, where each entry goes)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cardspec.cards import CardError, strip_decorators
from cardspec.lorebook import (
    DEFAULT_INSERTION_ORDER,
    MAX_KEY_CHARS,
    MAX_KEYS_PER_ENTRY,
    MAX_LOREBOOK_ENTRIES,
    MAX_REGEX_KEY_CHARS,
    LoreBook,
    Placement,
    character_book_for_v2,
    character_book_for_v3,
    entry_placement,
    normalize_character_book,
    parse_decorators,
    read_book,
    read_depth,
    read_entry,
    read_flag,
    read_keys,
    read_number,
    read_role,
)
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


def test_blank_lines_between_decorators_do_not_end_the_block():
    decorators, rest = strip_decorators("@@depth 3\n\n@@role user\n\nBody")

    assert decorators == ["@@depth 3", "@@role user"]
    assert rest == "Body"


def test_lone_carriage_returns_end_decorator_lines_too():
    decorators, rest = strip_decorators("@@depth 3\r@@role user\rBody\rMore")

    assert decorators == ["@@depth 3", "@@role user"]
    assert rest == "Body\rMore"


def test_the_v2_export_and_the_prompt_strip_exactly_the_same_lines():
    # They used to disagree: the export kept "@@role user" after a blank line, the prompt did not.
    for content in [
        "@@depth 3\n\n@@role user\n\nBody",
        "@@risu_only 4\n@@@activate_after 4\n@@@@deeper\nBody",
        "\r\n@@depth 3\r\n\r\n@@role user\r\n\r\nBody\r\n",
        "  @@activate  \nBody\n@@not_leading",
        "Body\n@@depth 3",
    ]:
        exported = character_book_for_v2({"entries": [{"content": content}]})["entries"][0]
        assert exported["content"].replace("\r\n", "\n").strip() == parse_decorators(content)[1]


# --- parse_decorators: the decorators we act on ------------------------------------------------


def test_parse_decorators_gives_the_body_trimmed_with_newlines_normalised():
    assert parse_decorators("@@depth 3\n@@role system\n\nThe lore.") == (
        {"depth": "3", "role": "system"},
        "The lore.",
    )
    assert parse_decorators("\r\n@@depth 3\r\n\r\n@@role user\r\n\r\nBody\r\n")[1] == "Body"
    assert parse_decorators("  plain @ text @@ inline \n") == ({}, "plain @ text @@ inline")
    assert parse_decorators("Body starts\n@@depth 1") == ({}, "Body starts\n@@depth 1")


def test_four_at_signs_are_content_not_a_decorator():
    decorators, body = parse_decorators("@@risu_only 4\n@@@activate_after 4\n@@@@deeper\nBody")

    assert decorators == {}
    assert body == "@@@@deeper\nBody"


def test_parse_decorators_returns_every_decorator_we_act_on_normalised():
    decorators, body = parse_decorators(
        "@@scan_depth 2\n@@depth 5\n@@exclude_keys a, b\n@@activate\n@@dont_activate x\n"
        "@@role User\n@@position SCENARIO\n@@activate_only_after 3\n@@activate_only_every 2\n"
        "@@additional_keys c\n@@ignore_on_max_context\n@@disable_ui_prompt system_prompt\nbody"
    )

    assert decorators == {
        "scan_depth": "2",
        "depth": "5",
        "exclude_keys": "a, b",
        "activate": "",
        "dont_activate": "",
        "role": "user",
        "position": "scenario",
        "activate_only_after": "3",
        "activate_only_every": "2",
        "additional_keys": "c",
        "ignore_on_max_context": "",
        "disable_ui_prompt": "system_prompt",
    }
    assert body == "body"


@pytest.mark.parametrize(
    "line",
    [
        "@@instruct_depth 3",
        "@@reverse_depth 2",
        "@@reverse_instruct_depth 2",
        "@@instruct_scan_depth 40",
        "@@is_greeting 1",
        "@@is_user_icon happy",
        "@@keep_activate_after_match",
        "@@dont_activate_after_match",
        "@@made_up_by_someone 7",
    ],
)
def test_decorators_we_do_not_act_on_are_ignored_so_their_fallback_counts(line):
    assert parse_decorators(f"{line}\n@@@depth 2\nx") == ({"depth": "2"}, "x")


@pytest.mark.parametrize(
    "line",
    [
        "@@depth deep",
        "@@depth",
        "@@scan_depth -1",
        "@@activate_only_every 0",
        "@@activate_only_after lots",
        "@@role narrator",
        "@@position after_char",
        "@@additional_keys  , ,",
        "@@disable_ui_prompt everything",
    ],
)
def test_an_invalid_value_is_ignored_so_the_fallback_counts(line):
    assert parse_decorators(f"{line}\n@@@scan_depth 3\nx") == ({"scan_depth": "3"}, "x")


def test_a_depth_may_be_negative_or_fractional_and_is_kept_whole():
    assert parse_decorators("@@depth -2\nx")[0] == {"depth": "-2"}
    assert parse_decorators("@@depth 2.7\nx")[0] == {"depth": "2"}


def test_an_unknown_decorator_falls_back_to_its_first_known_fallback():
    decorators, _ = parse_decorators(
        "@@risu_thing 4\n@@@agn_thing 4\n@@@activate_only_after 4\n@@@scan_depth 1\nx"
    )
    assert decorators == {"activate_only_after": "4"}


def test_a_known_decorator_ignores_its_fallbacks():
    decorators, _ = parse_decorators("@@scan_depth 2\n@@@activate_only_after 4\nx")
    assert decorators == {"scan_depth": "2"}


def test_the_first_of_repeated_decorators_wins():
    decorators, _ = parse_decorators("@@scan_depth 1\n@@scan_depth 7\nx")
    assert decorators == {"scan_depth": "1"}


def test_decorator_names_are_case_insensitive():
    decorators, _ = parse_decorators("@@Dont_Activate\nx")
    assert decorators == {"dont_activate": ""}


def test_a_stray_leading_fallback_decorator_is_still_considered():
    assert parse_decorators("@@@scan_depth 2\nbody") == ({"scan_depth": "2"}, "body")


# --- Lenient readers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), (" 4 ", 4.0), ("-1", -1.0), (True, None), ("x", None), (None, None)],
)
def test_read_number_accepts_numbers_and_numeric_text(value, expected):
    assert read_number(value) == expected


def test_read_number_refuses_nan_and_infinity():
    assert read_number(math.nan) is None
    assert read_number("inf") is None


def test_read_number_gives_none_for_an_integer_beyond_a_floats_range():
    """`1` followed by 400 zeros is valid JSON, and import keeps it as an order or priority."""
    huge = 10**400

    assert read_number(huge) is None
    assert read_number(-huge) is None
    assert read_depth(huge, 4) == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (0, False), (1, True), ("true", True), ("0", False), ("", False), ("?", None)],
)
def test_read_flag_understands_what_exporters_write(value, expected):
    assert read_flag(value, None) is expected


def test_read_keys_takes_a_list_or_one_comma_separated_string():
    assert read_keys(["a", " b ", "", None, 3]) == ["a", "b"]
    assert read_keys("a, b ,,") == ["a", "b"]
    assert read_keys(None) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("system", "system"),
        ("User", "user"),
        (" assistant ", "assistant"),
        (0, "system"),
        (1, "user"),
        (2, "assistant"),
        ("2", "assistant"),
        (3, None),
        ("narrator", None),
        (None, None),
        (True, None),
    ],
)
def test_read_role_takes_names_or_sillytaverns_numbers(value, expected):
    assert read_role(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (3, 3), ("2", 2), (2.9, 2), (-1, 0), (None, 4), ("", 4), ("deep", 4), (True, 4)],
)
def test_read_depth_is_a_whole_number_at_least_zero_or_the_default(value, expected):
    assert read_depth(value, 4) == expected


# --- Where an entry goes -----------------------------------------------------------------------


def placement(decorators: dict[str, str] | None = None, **entry: Any) -> Placement:
    return entry_placement(entry, decorators or {})


def test_the_v2_position_before_char_goes_before_and_anything_else_after():
    assert placement(position="before_char") == Placement("before_char")
    for position in ["after_char", "", None, "BEFORE_CHAR", 0]:
        assert placement(position=position) == Placement("after_char")
    assert placement() == Placement("after_char")


@pytest.mark.parametrize(
    ("number", "where"),
    [
        (0, "before_char"),
        (1, "after_char"),
        (2, "authors_note_top"),
        (3, "authors_note_bottom"),
        (5, "examples_top"),
        (6, "examples_bottom"),
        (7, "outlet"),
        ("1", "after_char"),
    ],
)
def test_sillytaverns_extensions_position_wins_over_the_v2_position(number, where):
    assert placement(position="before_char", extensions={"position": number}) == Placement(where)


def test_an_entry_at_depth_takes_its_depth_and_role_from_the_extensions():
    assert placement(extensions={"position": 4, "depth": 2, "role": 1}) == Placement(
        "at_depth", depth=2, role="user"
    )
    assert placement(extensions={"position": 4, "depth": "0", "role": "assistant"}) == Placement(
        "at_depth", depth=0, role="assistant"
    )


def test_an_entry_at_depth_defaults_to_depth_four_as_system():
    assert placement(extensions={"position": 4}) == Placement("at_depth", depth=4, role="system")
    assert placement(extensions={"position": 4, "depth": None, "role": 9}) == Placement(
        "at_depth", depth=4, role="system"
    )


@pytest.mark.parametrize("number", [8, -1, 1.5, "at_depth", True, None])
def test_an_unusable_extensions_position_falls_back_to_the_v2_position(number):
    assert placement(position="before_char", extensions={"position": number}) == Placement(
        "before_char"
    )


def test_the_depth_decorator_puts_an_entry_in_the_chat():
    assert placement({"depth": "3"}, position="before_char") == Placement("at_depth", depth=3)
    assert placement({"depth": "-2"}) == Placement("at_depth", depth=0)


def test_the_depth_decorator_beats_the_extensions_position_and_keeps_its_role():
    assert placement({"depth": "1"}, extensions={"position": 0, "role": 2}) == Placement(
        "at_depth", depth=1, role="assistant"
    )


def test_the_role_decorator_beats_the_extensions_role():
    assert placement({"depth": "1", "role": "user"}, extensions={"role": 2}) == Placement(
        "at_depth", depth=1, role="user"
    )
    assert placement({"role": "user"}, extensions={"position": 4, "depth": 6}) == Placement(
        "at_depth", depth=6, role="user"
    )


def test_the_role_decorator_alone_does_not_move_an_entry_into_the_chat():
    assert placement({"role": "user"}, position="before_char") == Placement("before_char")


def test_the_position_decorator_beats_the_depth_decorator():
    assert placement({"position": "before_desc", "depth": "2"}) == Placement("before_desc")
    assert placement({"position": "after_desc"}, position="before_char") == Placement("after_desc")


def test_personality_and_scenario_positions_remember_where_to_go_otherwise():
    assert placement({"position": "personality", "depth": "2"}) == Placement(
        "personality", fallback=Placement("at_depth", depth=2)
    )
    assert placement({"position": "scenario"}, position="before_char") == Placement(
        "scenario", fallback=Placement("before_char")
    )


# --- Reading entries and books -------------------------------------------------------------------


def test_read_entry_reads_a_complete_entry():
    entry = read_entry(
        {
            "keys": "a, b",
            "secondary_keys": ["c"],
            "selective": 1,
            "content": "@@depth 2\n@@role user\nBody {{char}}",
            "enabled": True,
            "insertion_order": "7",
            "priority": 3,
            "use_regex": "true",
            "case_sensitive": 0,
            "constant": False,
        },
        5,
    )

    assert entry is not None
    assert (entry.index, entry.body, entry.decorators) == (
        5,
        "Body {{char}}",
        {"depth": "2", "role": "user"},
    )
    assert entry.placement == Placement("at_depth", depth=2, role="user")
    assert (entry.keys, entry.secondary_keys) == (["a", "b"], ["c"])
    assert (entry.use_regex, entry.case_sensitive, entry.constant) == (True, False, False)
    assert (entry.insertion_order, entry.priority) == (7.0, 3.0)


def test_read_entry_defaults_and_ignores_secondary_keys_unless_selective():
    entry = read_entry({"keys": ["a"], "secondary_keys": ["c"], "content": "x"}, 0)

    assert entry is not None
    assert entry.secondary_keys == []
    assert entry.insertion_order == DEFAULT_INSERTION_ORDER
    assert entry.priority == 0
    assert entry.placement == Placement("after_char")


@pytest.mark.parametrize(
    "raw",
    [None, "entry", {"content": None}, {"content": 3}, {"content": "x", "enabled": "false"}],
)
def test_read_entry_skips_what_can_never_be_prompted(raw):
    assert read_entry(raw, 0) is None


def test_read_book_reads_the_book_level_fields_leniently():
    book = read_book(
        {
            "entries": [{"content": "a"}, "junk", {"content": "b", "enabled": False}],
            "scan_depth": "3",
            "token_budget": 0,
            "recursive_scanning": "yes",
        }
    )

    assert book is not None
    assert [entry.index for entry in book.entries] == [0]
    assert (book.scan_depth, book.token_budget, book.recursive_scanning) == (3, None, True)


@pytest.mark.parametrize("scan_depth", [None, -1, "deep", True, math.nan])
def test_an_unusable_book_scan_depth_means_the_sites_default(scan_depth):
    assert read_book({"entries": [], "scan_depth": scan_depth}) == LoreBook(scan_depth=None)


@pytest.mark.parametrize("value", [None, [], "book", {"entries": "x"}, {}])
def test_read_book_gives_none_without_a_list_of_entries(value):
    assert read_book(value) is None


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


def test_keys_given_as_one_string_become_the_list_the_specs_require():
    book = normalize_character_book({"entries": [{"keys": "sword, shield", "content": ""}]})

    assert book["entries"][0]["keys"] == ["sword", "shield"]


def test_secondary_keys_given_as_one_comma_separated_string_are_kept_as_given():
    """V3's text calls them "multiple values separated by a comma"; the card exports as it came."""
    book = normalize_character_book(
        {"entries": [{"keys": ["sword"], "secondary_keys": "blue,  red ,", "content": ""}]}
    )

    assert book["entries"][0]["secondary_keys"] == "blue,  red ,"


def test_secondary_keys_given_as_one_string_count_towards_the_key_limits_as_split():
    entry = {"keys": ["a"] * 60, "secondary_keys": ",".join(["b"] * 41), "content": "x"}

    with pytest.raises(CardError, match="101 keys"):
        normalize_character_book({"entries": [entry]})
    entry["secondary_keys"] = ",".join(["b"] * 40) + ", , ,"  # blanks are no keys
    assert normalize_character_book({"entries": [entry]}) is not None
    entry["secondary_keys"] = "s" * (MAX_KEY_CHARS + 1) + ", t"
    with pytest.raises(CardError, match="a key of 1,001 characters"):
        normalize_character_book({"entries": [entry | {"keys": ["k"]}]})


def test_a_selective_entry_reads_secondary_keys_given_as_one_string():
    raw = {"keys": ["sword"], "secondary_keys": "blue,  red ,", "selective": True, "content": "x"}

    assert read_entry(raw, 0).secondary_keys == ["blue", "red"]


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

"""Tests for cardspec.prompt: pure prompt assembly from a character card and a chat history."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cardspec.lorebook import DEFAULT_INSERTION_ORDER
from cardspec.prompt import (
    CHARS_PER_TOKEN,
    CONTINUE_NUDGE,
    DEFAULT_SCAN_DEPTH,
    DEFAULT_SYSTEM_PROMPT,
    EXAMPLE_HEADER,
    MAX_RECURSION_PASSES,
    MESSAGE_OVERHEAD_TOKENS,
    WIDE_CHAR_START,
    CharacterNote,
    Prompt,
    PromptCharacter,
    Turn,
    activate_lorebook,
    build_prompt,
    count_message_tokens,
    estimate_tokens,
    expand_macros,
    insert_at_depths,
    normalize_newlines,
    read_character_note,
    resolve_override,
    split_examples,
)

# --- helpers ----------------------------------------------------------------------------------


def char(**fields: Any) -> PromptCharacter:
    fields.setdefault("name", "Serika")
    return PromptCharacter(**fields)


def user(text: str) -> Turn:
    return Turn("user", text)


def bot(text: str) -> Turn:
    return Turn("assistant", text)


def entry(keys: Any, content: str, **fields: Any) -> dict[str, Any]:
    return {
        "keys": keys,
        "content": content,
        "extensions": {},
        "enabled": True,
        "insertion_order": 100,
        **fields,
    }


def book(*entries: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"extensions": {}, "entries": list(entries), **fields}


def fired(lorebook: Any, *texts: str, roles: tuple[str, ...] | None = None) -> list[int]:
    """Indices of the entries that activate for a history of user turns with these texts."""
    history = [Turn(roles[i] if roles else "user", t) for i, t in enumerate(texts)]
    return activate_lorebook(lorebook, history, char_name="Serika", user_name="Ann").activated


def system(prompt: Prompt) -> str:
    assert prompt.messages[0]["role"] == "system"
    return prompt.messages[0]["content"]


def contents(prompt: Prompt) -> list[str]:
    return [m["content"] for m in prompt.messages]


def build(character: PromptCharacter | None, history: list[Turn] | None = None, **kw: Any):
    kw.setdefault("user_name", "Ann")
    return build_prompt(character, history or [], **kw)


# --- no character -----------------------------------------------------------------------------


def test_without_a_character_the_messages_are_just_the_history():
    history = [bot("Hi {{user}}"), user("Hello\r\nthere")]
    prompt = build(None, history)
    assert prompt.messages == [
        {"role": "assistant", "content": "Hi {{user}}"},
        {"role": "user", "content": "Hello\r\nthere"},
    ]
    assert prompt.trimmed_turns == 0
    assert prompt.dropped_examples is False
    assert prompt.notes == []


def test_without_a_character_and_history_the_prompt_is_empty():
    assert build(None, []).messages == []


def test_without_a_character_the_user_description_is_not_used():
    prompt = build(None, [user("hi")], user_description="Ann is a pilot.")
    assert contents(prompt) == ["hi"]


def test_without_a_character_the_context_budget_still_trims_old_turns():
    history = [user("a" * 350), bot("b" * 350), user("latest")]
    budget = count_message_tokens([{"content": "latest"}])
    prompt = build(None, history, context_tokens=budget)
    assert contents(prompt) == ["latest"]
    assert prompt.trimmed_turns == 2


# --- system prompt ----------------------------------------------------------------------------


def test_an_empty_card_system_prompt_means_the_default_is_used():
    prompt = build(char(), [user("hi")])
    assert system(prompt) == (
        "Write Serika's next reply in a fictional chat between Serika and Ann. Stay in character."
    )


def test_a_whitespace_only_card_system_prompt_counts_as_empty():
    prompt = build(char(system_prompt="  \n "), default_system_prompt="Default.")
    assert system(prompt) == "Default."


def test_the_card_system_prompt_replaces_the_default():
    prompt = build(char(system_prompt="You are {{char}}."), default_system_prompt="Default.")
    assert system(prompt) == "You are Serika."
    assert "Default." not in system(prompt)


def test_original_in_the_card_system_prompt_expands_to_the_default():
    prompt = build(
        char(system_prompt="Before. {{original}} After."), default_system_prompt="Be {{char}}."
    )
    assert system(prompt) == "Before. Be Serika. After."


def test_original_is_matched_case_insensitively_and_every_time():
    assert resolve_override("{{ORIGINAL}}|{{Original}}", "D") == "D|D"


def test_resolve_override_keeps_backslashes_in_the_default_literally():
    assert resolve_override("x {{original}}", r"C:\new\1") == r"x C:\new\1"


def test_the_default_system_prompt_can_be_overridden_by_the_caller():
    prompt = build(char(), default_system_prompt="Team default for {{char}}.")
    assert system(prompt) == "Team default for Serika."


def test_an_empty_default_and_empty_card_give_no_system_message():
    prompt = build(char(), [user("hi")], default_system_prompt="")
    assert prompt.messages == [{"role": "user", "content": "hi"}]


def test_the_default_system_prompt_constant_mentions_char_and_user():
    assert "{{char}}" in DEFAULT_SYSTEM_PROMPT
    assert "{{user}}" in DEFAULT_SYSTEM_PROMPT


# --- post-history instructions ----------------------------------------------------------------


def test_post_history_instructions_go_after_the_history_as_a_system_message():
    prompt = build(char(post_history_instructions="Stay terse, {{char}}."), [user("hi")])
    assert prompt.messages[-2:] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Stay terse, Serika."},
    ]


def test_no_post_history_instructions_means_no_trailing_system_message():
    prompt = build(char(), [user("hi")])
    assert prompt.messages[-1] == {"role": "user", "content": "hi"}


def test_original_in_post_history_instructions_expands_to_the_empty_default():
    prompt = build(char(post_history_instructions="{{original}} Be brief."), [user("hi")])
    assert prompt.messages[-1] == {"role": "system", "content": "Be brief."}


def test_original_in_post_history_instructions_expands_to_a_given_default():
    prompt = build(
        char(post_history_instructions="{{original}}\nAlso rhyme."),
        [user("hi")],
        default_post_history_instructions="Reply as {{char}}.",
    )
    assert prompt.messages[-1]["content"] == "Reply as Serika.\nAlso rhyme."


def test_an_empty_card_post_history_uses_the_default_post_history_instructions():
    prompt = build(char(), [user("hi")], default_post_history_instructions="Be kind.")
    assert prompt.messages[-1] == {"role": "system", "content": "Be kind."}


def test_post_history_instructions_are_present_even_with_an_empty_history():
    prompt = build(char(post_history_instructions="Go."))
    assert prompt.messages[-1] == {"role": "system", "content": "Go."}
    assert len(prompt.messages) == 2


# --- continuing a reply -----------------------------------------------------------------------


def test_continuing_puts_the_nudge_after_the_reply_and_before_post_history_instructions():
    prompt = build(
        char(post_history_instructions="Stay terse."),
        [user("A story?"), bot("Once upon a time")],
        continuing=True,
    )
    assert prompt.messages[-4:] == [
        {"role": "user", "content": "A story?"},
        {"role": "assistant", "content": "Once upon a time"},
        {"role": "system", "content": CONTINUE_NUDGE},
        {"role": "system", "content": "Stay terse."},
    ]


def test_continuing_without_a_character_ends_with_the_nudge():
    prompt = build_prompt(None, [user("A story?"), bot("Once")], continuing=True)
    assert prompt.messages == [
        {"role": "user", "content": "A story?"},
        {"role": "assistant", "content": "Once"},
        {"role": "system", "content": CONTINUE_NUDGE},
    ]


def test_neither_the_continue_nudge_nor_the_reply_it_continues_is_trimmed():
    history = [turn for i in range(40) for turn in (user(f"q{i} " * 20), bot(f"a{i} " * 20))]
    history[-1] = bot("a39 " * 200)  # the reply to carry on: long
    prompt = build_prompt(None, history, context_tokens=150, continuing=True)
    assert prompt.trimmed_turns > 0
    assert prompt.messages[-3:] == [
        {"role": "user", "content": "q39 " * 20},
        {"role": "assistant", "content": "a39 " * 200},
        {"role": "system", "content": CONTINUE_NUDGE},
    ]


def test_not_continuing_sends_no_nudge():
    prompt = build(char(), [user("A story?"), bot("Once")])
    assert CONTINUE_NUDGE not in str(prompt.messages)


# --- character definition ---------------------------------------------------------------------


def test_the_definition_follows_the_system_prompt_with_labels():
    prompt = build(
        char(description="A guide.", personality="Cheerful", scenario="A space station."),
        default_system_prompt="SYS",
    )
    assert system(prompt) == (
        "SYS\n\nA guide.\n\nSerika's personality: Cheerful\n\nScenario: A space station."
    )


def test_the_user_persona_is_added_for_user_when_given():
    prompt = build(char(description="D"), default_system_prompt="S", user_description="A pilot.")
    assert system(prompt) == "S\n\nD\n\nAnn's persona: A pilot."


def test_empty_definition_fields_are_omitted_entirely():
    prompt = build(char(description="  ", personality="", scenario="\n"), default_system_prompt="S")
    assert system(prompt) == "S"
    assert "personality" not in system(prompt)
    assert "Scenario" not in system(prompt)
    assert "persona" not in system(prompt)


def test_definition_fields_are_stripped_of_surrounding_whitespace():
    prompt = build(char(personality="  sly \n"), default_system_prompt="S")
    assert system(prompt) == "S\n\nSerika's personality: sly"


def test_the_personality_label_uses_the_nickname():
    prompt = build(char(nickname="Seri", personality="kind"), default_system_prompt="")
    assert system(prompt) == "Seri's personality: kind"


def test_prompt_character_has_no_fields_for_non_prompt_card_data():
    names = set(PromptCharacter.__dataclass_fields__)
    assert not names & {"creator_notes", "tags", "creator", "character_version"}


def test_the_whole_system_content_is_one_leading_message():
    prompt = build(
        char(description="D", personality="P", scenario="S"),
        [user("hi")],
        default_system_prompt="SYS",
    )
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user"]


# --- example dialogue -------------------------------------------------------------------------


def test_examples_are_split_on_start_case_insensitively():
    text = "<START>\n{{user}}: hi\n{{char}}: yo\n<start>\n{{user}}: a\n<Start>\n{{char}}: b"
    assert split_examples(text) == [
        "{{user}}: hi\n{{char}}: yo",
        "{{user}}: a",
        "{{char}}: b",
    ]


def test_empty_examples_and_text_before_the_first_start_are_handled():
    assert split_examples("") == []
    assert split_examples("<START>\n\n<START>  ") == []
    assert split_examples("intro line\n<START>\nex") == ["intro line", "ex"]
    assert split_examples("no marker at all") == ["no marker at all"]


def test_examples_normalise_windows_line_endings():
    assert split_examples("<START>\r\na\r\nb\r\n") == ["a\nb"]


def test_each_example_is_a_separate_system_message_after_the_definition():
    prompt = build(
        char(description="D", mes_example="<START>\n{{user}}: hi\n{{char}}: yo\n<START>\nX: y"),
        [user("hello")],
        default_system_prompt="S",
    )
    assert prompt.messages == [
        {"role": "system", "content": "S\n\nD"},
        {"role": "system", "content": f"{EXAMPLE_HEADER}\nAnn: hi\nSerika: yo"},
        {"role": "system", "content": f"{EXAMPLE_HEADER}\nX: y"},
        {"role": "user", "content": "hello"},
    ]


def test_examples_come_before_history_and_post_history_instructions():
    prompt = build(
        char(mes_example="<START>ex", post_history_instructions="PH"),
        [user("hi")],
        default_system_prompt="S",
    )
    assert contents(prompt) == ["S", f"{EXAMPLE_HEADER}\nex", "hi", "PH"]


def test_an_example_that_is_only_a_comment_is_dropped():
    prompt = build(char(mes_example="<START>{{// nothing}}<START>real"), default_system_prompt="S")
    assert contents(prompt) == ["S", f"{EXAMPLE_HEADER}\nreal"]


# --- macros -----------------------------------------------------------------------------------


def test_char_and_user_macros_are_replaced_case_insensitively():
    text = "{{char}} {{CHAR}} {{Char}} <BOT> <bot> <CHAR> {{user}} {{USER}} <USER> <user>"
    assert expand_macros(text, char_name="S", user_name="A") == "S S S S S S A A A A"


def test_macro_replacement_is_a_single_pass():
    assert expand_macros("{{user}}", char_name="S", user_name="{{char}}") == "{{char}}"
    assert expand_macros("{{char}}", char_name="<USER>", user_name="A") == "<USER>"


def test_macro_values_with_backslashes_are_inserted_literally():
    assert expand_macros("{{user}}", char_name="S", user_name=r"\g<0>\1") == r"\g<0>\1"


def test_unknown_macros_are_left_alone():
    text = "{{random:a,b}} {{roll:6}} {{ char }} <START>"
    assert expand_macros(text, char_name="S", user_name="A") == text


def test_comment_macros_are_removed():
    text = "a{{// hidden\nnote}}b{{comment: shown in UI}}c{{COMMENT:x}}d"
    assert expand_macros(text, char_name="S", user_name="A") == "abcd"


def test_hidden_keys_are_removed_from_prompts_but_kept_for_scanning():
    text = "x{{hidden_key:dragon}}y"
    assert expand_macros(text, char_name="S", user_name="A") == "xy"
    assert expand_macros(text, char_name="S", user_name="A", keep_hidden_keys=True) == "xdragony"


def test_char_means_the_nickname_when_set():
    prompt = build(char(nickname="Seri", system_prompt="I am {{char}}."), [user("{{char}}?")])
    assert contents(prompt) == ["I am Seri.", "Seri?"]


def test_a_blank_nickname_falls_back_to_the_name():
    prompt = build(char(nickname="  ", system_prompt="I am {{char}}."))
    assert system(prompt) == "I am Serika."


def test_macros_are_expanded_everywhere_in_the_prompt():
    lore = book(entry(["ship"], "<BOT> knows {{user}}'s ship."))
    prompt = build(
        char(
            system_prompt="S {{char}}",
            description="D {{user}}",
            personality="P <user>",
            scenario="Sc <bot>",
            mes_example="<START>{{char}}: hi {{user}}",
            post_history_instructions="PH {{Char}}",
            character_book=lore,
        ),
        [bot("Hello {{user}}, I am {{char}}"), user("my ship <BOT>")],
        user_description="U {{char}}",
    )
    text = "\n".join(contents(prompt))
    for macro in ("{{char}}", "{{user}}", "<BOT>", "<bot>", "<user>", "{{Char}}"):
        assert macro not in text
    assert contents(prompt) == [
        "S Serika\n\nD Ann\n\nSerika's personality: P Ann\n\n"
        "Scenario: Sc Serika\n\nAnn's persona: U Serika\n\nSerika knows Ann's ship.",
        f"{EXAMPLE_HEADER}\nSerika: hi Ann",
        "Hello Ann, I am Serika",
        "my ship Serika",
        "PH Serika",
    ]


def test_history_turns_keep_their_roles_and_order():
    history = [bot("greeting"), user("u1"), bot("a1"), user("u2")]
    prompt = build(char(), history, default_system_prompt="")
    assert prompt.messages == [
        {"role": "assistant", "content": "greeting"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]


def test_history_whitespace_is_preserved_but_newlines_are_normalised():
    prompt = build(char(), [user("  a\r\nb\rc  ")], default_system_prompt="")
    assert contents(prompt) == ["  a\nb\nc  "]


def test_windows_line_endings_are_normalised_in_card_fields():
    prompt = build(
        char(system_prompt="line1\r\nline2", description="d1\r\nd2"),
        default_system_prompt="",
    )
    assert "\r" not in system(prompt)
    assert system(prompt) == "line1\nline2\n\nd1\nd2"


def test_normalize_newlines_handles_lone_carriage_returns():
    assert normalize_newlines("a\r\nb\rc\n") == "a\nb\nc\n"


def test_unicode_names_and_text_survive_untouched():
    prompt = build(
        char(name="芹香", description="{{char}}は案内役です。🌸", personality="친절함"),
        [user("こんにちは {{char}}")],
        user_name="Zoë",
        default_system_prompt="{{user}} ↔ {{char}}",
    )
    assert system(prompt) == "Zoë ↔ 芹香\n\n芹香は案内役です。🌸\n\n芹香's personality: 친절함"
    assert prompt.messages[-1]["content"] == "こんにちは 芹香"


# --- lorebook: activation ---------------------------------------------------------------------


def test_an_entry_fires_when_a_key_appears_in_the_history():
    lore = book(entry(["dragon"], "Dragons are real."))
    assert fired(lore, "I saw a dragon") == [0]
    assert fired(lore, "I saw a cat") == []


def test_keys_match_as_case_insensitive_substrings_by_default():
    lore = book(entry(["Dragon"], "x"))
    assert fired(lore, "DRAGONFLY") == [0]


def test_case_sensitive_entries_need_the_exact_case():
    lore = book(entry(["Dragon"], "x", case_sensitive=True))
    assert fired(lore, "a dragon") == []
    assert fired(lore, "a Dragon") == [0]


def test_any_one_of_several_keys_is_enough():
    lore = book(entry(["wyvern", "dragon"], "x"))
    assert fired(lore, "a dragon") == [0]


def test_empty_and_blank_keys_never_match():
    lore = book(entry([""], "x"), entry(["  ", ""], "y"), entry([], "z"))
    assert fired(lore, "anything at all", "") == []


def test_non_string_keys_are_ignored():
    lore = book(entry([None, 3, "dragon"], "x"))
    assert fired(lore, "dragon") == [0]


def test_keys_may_be_a_comma_separated_string():
    lore = book(entry("cat, dragon ,", "x"))
    assert fired(lore, "a dragon") == [0]
    assert fired(lore, "a cat") == [0]


def test_keys_match_cjk_text_without_word_boundaries():
    lore = book(entry(["ドラゴン"], "竜の話"))
    assert fired(lore, "昨日ドラゴンを見た") == [0]


def test_keys_match_across_unicode_case_folding():
    lore = book(entry(["STRASSE"], "x"))
    assert fired(lore, "die straße") == [0]


def test_a_key_must_appear_within_one_message_not_across_two():
    lore = book(entry(["red dragon"], "x"))
    assert fired(lore, "a red", "dragon") == []


def test_disabled_entries_never_fire():
    lore = book(
        entry(["dragon"], "x", enabled=False),
        entry([], "always", constant=True, enabled=False),
        entry(["dragon"], "y", enabled="false"),
    )
    assert fired(lore, "dragon") == []


def test_entries_without_an_enabled_field_are_enabled():
    raw = entry(["dragon"], "x")
    del raw["enabled"]
    assert fired(book(raw), "dragon") == [0]


def test_constant_entries_always_fire():
    lore = book(entry([], "always", constant=True), entry(["nope"], "also", constant=True))
    assert fired(lore) == [0, 1]


def test_entries_with_empty_content_are_never_added():
    lore = book(entry(["dragon"], "   "), entry([], "", constant=True), entry(["dragon"], None))
    assert fired(lore, "dragon") == []


def test_malformed_books_and_entries_are_ignored():
    assert fired(None, "x") == []
    assert fired("not a book", "x") == []
    assert fired({"entries": "nope"}, "x") == []
    assert fired({}, "x") == []
    assert fired(book("junk", 3, None, entry(["x"], "ok")), "x") == [3]


def test_selective_entries_also_need_a_secondary_key():
    lore = book(entry(["dragon"], "x", selective=True, secondary_keys=["red", "fire"]))
    assert fired(lore, "a dragon") == []
    assert fired(lore, "a FIRE dragon") == [0]


def test_the_secondary_key_may_be_in_another_scanned_message():
    lore = book(entry(["dragon"], "x", selective=True, secondary_keys=["red"]))
    assert fired(lore, "red sky", "a dragon") == [0]


def test_secondary_keys_may_be_a_comma_separated_string():
    lore = book(entry(["dragon"], "x", selective=True, secondary_keys="red, fire"))
    assert fired(lore, "a fire dragon") == [0]
    assert fired(lore, "a dragon") == []


def test_secondary_keys_are_ignored_when_not_selective():
    lore = book(entry(["dragon"], "x", selective=False, secondary_keys=["red"]))
    assert fired(lore, "a dragon") == [0]


def test_selective_with_no_secondary_keys_needs_only_a_primary_key():
    lore = book(
        entry(["dragon"], "x", selective=True, secondary_keys=[]),
        entry(["dragon"], "y", selective=True, secondary_keys=[""]),
    )
    assert fired(lore, "a dragon") == [0, 1]


def test_a_secondary_key_alone_does_not_fire_a_selective_entry():
    lore = book(entry(["dragon"], "x", selective=True, secondary_keys=["red"]))
    assert fired(lore, "red") == []


def test_secondary_keys_follow_case_sensitivity():
    lore = book(entry(["dragon"], "x", selective=True, secondary_keys=["Red"], case_sensitive=True))
    assert fired(lore, "red dragon") == []
    assert fired(lore, "Red dragon") == [0]


# --- lorebook: scan depth ---------------------------------------------------------------------


def test_only_the_last_scan_depth_messages_are_scanned():
    lore = book(entry(["dragon"], "x"), scan_depth=2)
    assert fired(lore, "dragon", "a", "b") == []
    assert fired(lore, "dragon", "a") == [0]


def test_a_missing_scan_depth_defaults_to_sillytaverns_two_messages():
    lore = book(entry(["dragon"], "x"))
    filler = ["filler"] * (DEFAULT_SCAN_DEPTH - 1)
    assert DEFAULT_SCAN_DEPTH == 2
    assert fired(lore, "dragon", *filler) == [0]
    assert fired(lore, "dragon", *filler, "one more") == []


@pytest.mark.parametrize("depth", [None, "deep", -3, True, float("nan")])
def test_an_unusable_scan_depth_falls_back_to_the_default(depth: Any):
    lore = book(entry(["dragon"], "x"), scan_depth=depth)
    filler = ["filler"] * (DEFAULT_SCAN_DEPTH - 1)
    assert fired(lore, "dragon", *filler) == [0]
    assert fired(lore, "dragon", *filler, "one more") == []


def test_a_scan_depth_of_zero_scans_nothing_but_constants_still_fire():
    lore = book(entry(["dragon"], "x"), entry([], "c", constant=True), scan_depth=0)
    assert fired(lore, "dragon") == [1]


def test_a_scan_depth_larger_than_the_history_scans_all_of_it():
    lore = book(entry(["dragon"], "x"), scan_depth=500)
    assert fired(lore, "dragon", "b") == [0]


def test_a_numeric_string_scan_depth_is_accepted():
    lore = book(entry(["dragon"], "x"), scan_depth="1")
    assert fired(lore, "dragon", "b") == []


def test_macros_in_history_are_expanded_before_scanning():
    lore = book(entry(["Hello Ann"], "x"))
    assert fired(lore, "Hello {{user}}") == [0]


def test_an_empty_history_fires_only_constants():
    lore = book(entry(["dragon"], "x"), entry([], "c", constant=True))
    assert fired(lore) == [1]


# --- lorebook: regex keys ---------------------------------------------------------------------


def test_regex_keys_match_as_patterns_when_use_regex():
    lore = book(entry([r"drag(on|oon)s?\b"], "x", use_regex=True))
    assert fired(lore, "two dragoons here") == [0]
    assert fired(lore, "a drag race") == []


def test_without_use_regex_a_pattern_is_a_literal_key():
    lore = book(entry([r"drag.n"], "x"))
    assert fired(lore, "dragon") == []
    assert fired(lore, "drag.n") == [0]


def test_bare_regex_keys_are_case_insensitive_unless_case_sensitive():
    assert fired(book(entry(["DRAGON"], "x", use_regex=True)), "dragon") == [0]
    lore = book(entry(["DRAGON"], "x", use_regex=True, case_sensitive=True))
    assert fired(lore, "dragon") == []


def test_slash_form_regex_keys_use_their_own_flags():
    assert fired(book(entry(["/dragon/i"], "x", use_regex=True)), "DRAGON") == [0]
    assert fired(book(entry(["/dragon/"], "x", use_regex=True)), "DRAGON") == []
    assert fired(book(entry(["/dragon/"], "x", use_regex=True)), "dragon") == [0]


def test_slash_form_supports_multiline_and_dotall_and_ignores_g():
    assert fired(book(entry(["/^b$/m"], "x", use_regex=True)), "a\nb") == [0]
    assert fired(book(entry(["/a.b/s"], "x", use_regex=True)), "a\nb") == [0]
    assert fired(book(entry(["/a.b/gu"], "x", use_regex=True)), "a\nb") == []
    assert fired(book(entry(["/a.b/gu"], "x", use_regex=True)), "axb") == [0]


def test_slash_patterns_may_contain_slashes():
    assert fired(book(entry(["/a/b/"], "x", use_regex=True)), "a/b") == [0]


def test_a_slash_key_with_unknown_flags_is_a_bare_pattern():
    # "/a/q" is not /pattern/flags, so the whole text is the pattern.
    assert fired(book(entry(["/a/q"], "x", use_regex=True)), "/A/Q") == [0]


def test_a_broken_regex_never_raises_and_never_matches():
    lore = book(entry(["(unclosed", "/[z-a]/i", "*"], "x", use_regex=True))
    selection = activate_lorebook(lore, [user("(unclosed [z-a] *")], char_name="S", user_name="A")
    assert selection.activated == []
    assert any("invalid regex" in note for note in selection.notes)


def test_a_broken_regex_does_not_stop_a_valid_key_of_the_same_entry():
    lore = book(entry(["(", "dragon"], "x", use_regex=True))
    assert fired(lore, "dragon") == [0]


def test_secondary_keys_are_regexes_too_when_use_regex():
    lore = book(entry(["dragon"], "x", use_regex=True, selective=True, secondary_keys=[r"r[e]d"]))
    assert fired(lore, "red dragon") == [0]
    assert fired(lore, "blue dragon") == []


# --- lorebook: recursion ----------------------------------------------------------------------


def test_recursive_scanning_lets_activated_content_fire_more_entries():
    lore = book(
        entry(["dragon"], "Dragons guard the Crystal."),
        entry(["crystal"], "The Crystal hums."),
        recursive_scanning=True,
    )
    assert fired(lore, "a dragon") == [0, 1]


def test_without_recursive_scanning_content_does_not_fire_entries():
    lore = book(
        entry(["dragon"], "Dragons guard the Crystal."),
        entry(["crystal"], "The Crystal hums."),
    )
    assert fired(lore, "a dragon") == [0]
    assert fired({**lore, "recursive_scanning": False}, "a dragon") == [0]


def test_recursion_follows_chains_and_constants_can_start_them():
    lore = book(
        entry([], "The A-link.", constant=True),
        entry(["a-link"], "Then B-link."),
        entry(["b-link"], "Then C-link."),
        entry(["c-link"], "End."),
        recursive_scanning=True,
    )
    assert fired(lore) == [0, 1, 2, 3]


def test_recursion_ignores_scan_depth():
    lore = book(
        entry(["dragon"], "mentions crystal"),
        entry(["crystal"], "y"),
        recursive_scanning=True,
        scan_depth=1,
    )
    assert fired(lore, "crystal (old)", "a dragon") == [0, 1]


def test_recursion_is_bounded():
    chain = [entry([f"k{i}"], f"k{i + 1}") for i in range(MAX_RECURSION_PASSES + 5)]
    lore = book(*chain, recursive_scanning=True)
    assert fired(lore, "k0") == list(range(MAX_RECURSION_PASSES + 1))


def test_mutually_recursive_entries_terminate():
    lore = book(entry(["a"], "b"), entry(["b"], "a"), recursive_scanning=True)
    assert fired(lore, "a") == [0, 1]


def test_hidden_keys_in_content_trigger_recursion_but_are_not_prompted():
    lore = book(
        entry(["dragon"], "Dragon lore.{{hidden_key:crystal}}"),
        entry(["crystal"], "Crystal lore."),
        recursive_scanning=True,
    )
    prompt = build(char(character_book=lore), [user("dragon")], default_system_prompt="")
    assert prompt.activated_lore == [0, 1]
    assert system(prompt) == "Dragon lore.\nCrystal lore."


# --- lorebook: order, position, budget ---------------------------------------------------------


def test_entries_are_ordered_by_insertion_order_ascending():
    lore = book(
        entry(["k"], "third", insertion_order=30),
        entry(["k"], "first", insertion_order=-5),
        entry(["k"], "second", insertion_order=10),
    )
    prompt = build(char(character_book=lore), [user("k")], default_system_prompt="")
    assert system(prompt) == "first\nsecond\nthird"
    assert prompt.activated_lore == [1, 2, 0]


def test_equal_insertion_orders_keep_card_order():
    lore = book(entry(["k"], "a", insertion_order=1), entry(["k"], "b", insertion_order=1))
    assert fired(lore, "k") == [0, 1]


def test_a_missing_insertion_order_uses_the_default():
    raw = entry(["k"], "default")
    del raw["insertion_order"]
    lore = book(
        entry(["k"], "late", insertion_order=DEFAULT_INSERTION_ORDER + 1),
        raw,
        entry(["k"], "early", insertion_order=DEFAULT_INSERTION_ORDER - 1),
    )
    assert fired(lore, "k") == [2, 1, 0]


def test_an_order_or_priority_beyond_a_floats_range_reads_as_the_default():
    """Valid JSON that import keeps (`1` and 400 zeros) must not break prompt assembly."""
    huge = 10**400
    lore = book(
        entry(["k"], "late", insertion_order=DEFAULT_INSERTION_ORDER + 1),
        entry(["k"], "default", insertion_order=huge, priority=-huge),
        entry(["k"], "early", insertion_order=DEFAULT_INSERTION_ORDER - 1),
        token_budget=huge,
    )
    assert fired(lore, "k") == [2, 1, 0]


def test_before_char_entries_precede_the_definition_and_after_char_follow_it():
    lore = book(
        entry(["k"], "AFTER", position="after_char"),
        entry(["k"], "BEFORE", position="before_char"),
    )
    prompt = build(
        char(description="DESC", scenario="SC", character_book=lore),
        [user("k")],
        default_system_prompt="SYS",
        user_description="ME",
    )
    assert system(prompt) == "SYS\n\nBEFORE\n\nDESC\n\nScenario: SC\n\nAnn's persona: ME\n\nAFTER"
    assert prompt.activated_lore == [0, 1]  # insertion order, then card order


@pytest.mark.parametrize("position", ["", None, "at_depth", 4, "AFTER_CHAR", "before_desc"])
def test_any_position_but_before_char_means_after_char_as_in_sillytavern(position: Any):
    lore = book(entry(["k"], "LORE", position=position))
    prompt = build(char(description="DESC", character_book=lore), [user("k")])
    assert system(prompt).endswith("DESC\n\nLORE")


def test_an_entry_without_any_position_goes_after_the_character():
    raw = entry(["k"], "LORE")
    assert "position" not in raw
    prompt = build(char(description="DESC", character_book=book(raw)), [user("k")])
    assert system(prompt).endswith("DESC\n\nLORE")


def test_lore_in_a_section_is_newline_separated_and_sections_use_blank_lines():
    lore = book(entry(["k"], "L1"), entry(["k"], "L2"))
    prompt = build(char(description="D", character_book=lore), [user("k")])
    assert system(prompt).endswith("\n\nD\n\nL1\nL2")


def test_token_budget_drops_the_lowest_priority_entries_first():
    lore = book(
        entry(["k"], "a" * 35, priority=5, insertion_order=1),
        entry(["k"], "b" * 35, priority=1, insertion_order=2),
        entry(["k"], "c" * 35, priority=9, insertion_order=3),
        token_budget=25,
    )
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.activated == [0, 2]
    assert selection.dropped == [1]
    assert selection.contents("after_char") == ["a" * 35, "c" * 35]
    assert any("token_budget" in note for note in selection.notes)


def test_token_budget_keeps_dropping_until_the_rest_fits():
    lore = book(
        entry(["k"], "a" * 35, priority=3),
        entry(["k"], "b" * 35, priority=2),
        entry(["k"], "c" * 35, priority=1),
        token_budget=10,
    )
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.dropped == [2, 1]
    assert selection.activated == [0]


def test_token_budget_ties_drop_lower_insertion_order_then_later_entries_first():
    lore = book(
        entry(["k"], "a" * 35, priority=1, insertion_order=5),
        entry(["k"], "b" * 35, priority=1, insertion_order=1),
        entry(["k"], "c" * 35, priority=1, insertion_order=5),
        token_budget=20,
    )
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.dropped == [1]
    lore["token_budget"] = 10
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.dropped == [1, 2]
    assert selection.activated == [0]


def test_missing_priority_counts_as_zero_for_the_budget():
    lore = book(entry(["k"], "a" * 35, priority=1), entry(["k"], "b" * 35), token_budget=10)
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.dropped == [1]


def test_constant_entries_count_against_the_token_budget():
    lore = book(entry([], "c" * 35, constant=True, priority=0), entry(["k"], "k" * 35, priority=5))
    lore["token_budget"] = 10
    assert activate_lorebook(lore, [user("k")], char_name="S", user_name="A").dropped == [0]


def test_entries_within_the_token_budget_are_all_kept():
    lore = book(entry(["k"], "short"), entry(["k"], "also short"), token_budget=100)
    selection = activate_lorebook(lore, [user("k")], char_name="S", user_name="A")
    assert selection.dropped == []
    assert selection.activated == [0, 1]


@pytest.mark.parametrize("budget", [0, -1, None, "lots", True])
def test_a_non_positive_or_invalid_token_budget_means_no_limit(budget: Any):
    lore = book(entry(["k"], "x" * 1000), token_budget=budget)
    assert fired(lore, "k") == [0]


def test_build_prompt_reports_dropped_lore():
    lore = book(entry(["k"], "a" * 70, priority=1), entry(["k"], "b", priority=2), token_budget=5)
    prompt = build(char(character_book=lore), [user("k")], default_system_prompt="")
    assert prompt.dropped_lore == [0]
    assert prompt.activated_lore == [1]
    assert system(prompt) == "b"
    assert any("token_budget" in note for note in prompt.notes)


def test_lore_scans_the_full_history_even_when_turns_are_trimmed():
    lore = book(entry(["dragon"], "DRAGON LORE"), scan_depth=3)
    history = [user("dragon " + "x" * 400), bot("y" * 400), user("latest")]
    base = build(char(character_book=lore), [user("latest")], default_system_prompt="")
    prompt = build(
        char(character_book=lore),
        history,
        default_system_prompt="",
        context_tokens=count_message_tokens(base.messages),
    )
    assert prompt.trimmed_turns == 2
    assert contents(prompt) == ["DRAGON LORE", "latest"]


def test_lore_content_macros_are_expanded_and_whitespace_trimmed():
    lore = book(entry(["k"], "\r\n  {{char}} meets {{user}}.  \r\n"))
    prompt = build(char(character_book=lore), [user("k")], default_system_prompt="")
    assert system(prompt) == "Serika meets Ann."


def test_lore_with_no_character_book_adds_nothing():
    prompt = build(char(character_book=None), [user("k")], default_system_prompt="S")
    assert prompt.activated_lore == []
    assert system(prompt) == "S"


# --- lorebook: V3 decorators ------------------------------------------------------------------


def test_content_made_only_of_decorators_is_empty_and_never_prompted():
    lore = book(entry([], "@@depth 4\n@@@instruct_depth 4", constant=True))
    assert fired(lore) == []


def test_stripped_decorators_never_reach_the_prompt():
    lore = book(entry(["k"], "@@scan_depth 3\n@@@instruct_scan_depth 9\n\nLore body"))
    prompt = build(char(character_book=lore), [user("k")], default_system_prompt="")
    assert system(prompt) == "Lore body"


def test_the_activate_decorator_forces_activation_but_not_for_disabled_entries():
    lore = book(
        entry(["never"], "@@activate\nforced"),
        entry(["never"], "@@activate\nstill off", enabled=False),
    )
    assert fired(lore, "nothing") == [0]


def test_the_dont_activate_decorator_blocks_even_constants():
    lore = book(
        entry(["k"], "@@dont_activate\nx"),
        entry([], "@@dont_activate\ny", constant=True),
        entry(["k"], "@@dont_activate\n@@activate\nz"),
    )
    assert fired(lore, "k") == [2]


def test_the_scan_depth_decorator_overrides_the_books_scan_depth():
    lore = book(entry(["dragon"], "@@scan_depth 1\nx"), scan_depth=10)
    assert fired(lore, "dragon", "later") == []
    lore = book(entry(["dragon"], "@@scan_depth 5\nx"), scan_depth=1)
    assert fired(lore, "dragon", "later") == [0]


def test_activate_only_after_counts_assistant_messages():
    lore = book(entry(["k"], "@@activate_only_after 2\nx"))
    assert fired(lore, "hi", "k", roles=("assistant", "user")) == []
    assert fired(lore, "hi", "yo", "k", roles=("assistant", "assistant", "user")) == [0]


def test_activate_only_every_needs_a_multiple_of_assistant_messages():
    lore = book(entry([], "@@activate_only_every 2\nx", constant=True))
    assert fired(lore, "a", "k", roles=("assistant", "user")) == []
    assert fired(lore, "a", "b", "k", roles=("assistant", "assistant", "user")) == [0]


def test_additional_keys_are_also_required():
    lore = book(entry(["dragon"], "@@additional_keys red, fire\nx"))
    assert fired(lore, "a dragon") == []
    assert fired(lore, "a red dragon") == [0]


def test_exclude_keys_block_activation():
    lore = book(
        entry(["dragon"], "@@exclude_keys toy\nx"),
        entry([], "@@exclude_keys toy\ny", constant=True),
    )
    assert fired(lore, "a dragon") == [0, 1]
    assert fired(lore, "a toy dragon") == []


# --- in-chat insertions: the character's note ----------------------------------------------------


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


SYS = msg("system", "SYS")
HISTORY = [bot("Hi, I am Serika."), user("Hello."), bot("How are you?"), user("Fine.")]
G, U1, A1, U2 = (msg(turn.role, turn.content) for turn in HISTORY)
LONGER = [*HISTORY, bot("Good."), user("And you?")]
A2, U3 = msg("assistant", "Good."), msg("user", "And you?")


def noted(depth_prompt: Any, history: list[Turn] | None = None, **fields: Any) -> Prompt:
    """The prompt for a card with this `extensions.depth_prompt` and system prompt "SYS"."""
    fields.setdefault("system_prompt", "SYS")
    return build(char(depth_prompt=depth_prompt, **fields), HISTORY if history is None else history)


def test_a_character_note_goes_depth_messages_from_the_end_with_its_role():
    prompt = noted(
        {"prompt": "{{char}} hides a secret from {{user}}.", "depth": 4, "role": "user"}, LONGER
    )
    assert prompt.messages == [
        SYS,
        G,
        U1,
        msg("user", "Serika hides a secret from Ann."),
        A1,
        U2,
        A2,
        U3,
    ]


def test_a_character_note_without_a_role_is_a_system_message_as_in_older_cards():
    prompt = noted({"prompt": "Be warm.", "depth": 2}, LONGER)
    assert prompt.messages == [SYS, G, U1, A1, U2, msg("system", "Be warm."), A2, U3]


def test_a_character_note_at_depth_zero_follows_the_last_message():
    prompt = noted({"prompt": "Answer in French.", "depth": 0, "role": "user"})
    assert prompt.messages == [SYS, G, U1, A1, U2, msg("user", "Answer in French.")]


def test_a_character_note_at_depth_one_precedes_the_last_message():
    prompt = noted({"prompt": "*thinks*", "depth": 1, "role": "assistant"})
    assert prompt.messages == [SYS, G, U1, A1, msg("assistant", "*thinks*"), U2]


def test_a_character_note_without_a_depth_goes_four_messages_up():
    prompt = noted({"prompt": "Remember the map."}, LONGER)
    assert prompt.messages == [SYS, G, U1, msg("system", "Remember the map."), A1, U2, A2, U3]


def test_a_character_note_at_the_historys_length_precedes_the_oldest_message():
    prompt = noted({"prompt": "N", "depth": 4})
    assert prompt.messages == [SYS, msg("system", "N"), G, U1, A1, U2]


def test_a_character_note_deeper_than_the_history_goes_after_the_examples_before_the_oldest():
    prompt = noted({"prompt": "N", "depth": 40}, mes_example="<START>{{char}}: Yo.")
    assert prompt.messages == [
        SYS,
        msg("system", f"{EXAMPLE_HEADER}\nSerika: Yo."),
        msg("system", "N"),
        G,
        U1,
        A1,
        U2,
    ]


def test_a_character_note_is_sent_with_an_empty_history_too():
    prompt = noted({"prompt": "N"}, [], post_history_instructions="PH")
    assert prompt.messages == [SYS, msg("system", "N"), msg("system", "PH")]


def test_a_character_note_comes_before_post_history_instructions_and_is_trimmed_of_blanks():
    prompt = noted({"prompt": "\r\n  N\r\n ", "depth": 0}, post_history_instructions="PH")
    assert prompt.messages == [SYS, G, U1, A1, U2, msg("system", "N"), msg("system", "PH")]


@pytest.mark.parametrize(
    "depth_prompt",
    [
        None,
        {},
        {"prompt": ""},
        {"prompt": "  \n"},
        {"prompt": 5},
        {"prompt": "{{// only a comment}}"},
        "N",
    ],
)
def test_an_empty_or_malformed_character_note_adds_nothing(depth_prompt: Any):
    assert noted(depth_prompt).messages == [SYS, G, U1, A1, U2]


@pytest.mark.parametrize(
    ("depth_prompt", "expected"),
    [
        ({"prompt": "x", "depth": "1", "role": "User"}, CharacterNote("x", 1, "user")),
        ({"prompt": "x", "depth": "", "role": 2}, CharacterNote("x", 4, "assistant")),
        ({"prompt": "x", "depth": None, "role": None}, CharacterNote("x", 4, "system")),
        ({"prompt": "x", "depth": -3, "role": "narrator"}, CharacterNote("x", 0, "system")),
        ({"prompt": "x", "depth": 2.5, "role": 0}, CharacterNote("x", 2, "system")),
        ({"prompt": "x", "depth": "deep"}, CharacterNote("x", 4, "system")),
    ],
)
def test_the_character_note_is_read_leniently(depth_prompt: Any, expected: CharacterNote):
    assert read_character_note(depth_prompt) == expected


# --- in-chat insertions: grouping and order ------------------------------------------------------


def at_depth(content: str, depth: Any = None, role: Any = None, **fields: Any) -> dict[str, Any]:
    """A constant entry placed in the chat through SillyTavern's `extensions`."""
    extensions: dict[str, Any] = {"position": 4}
    if depth is not None:
        extensions["depth"] = depth
    if role is not None:
        extensions["role"] = role
    return entry([], content, constant=True, extensions=extensions, **fields)


def test_one_depth_gets_one_message_per_role_assistant_then_user_then_system():
    lore = book(
        at_depth("WI system", 1, 0), at_depth("WI user", 1, 1), at_depth("WI assistant", 1, 2)
    )
    prompt = noted({"prompt": "NOTE", "depth": 1}, character_book=lore)
    assert prompt.messages == [
        SYS,
        G,
        U1,
        A1,
        msg("assistant", "WI assistant"),
        msg("user", "WI user"),
        msg("system", "NOTE\nWI system"),
        U2,
    ]


def test_at_one_depth_and_role_the_authors_note_slot_then_the_note_then_the_lorebook():
    lore = book(
        at_depth("DEPTH"),  # depth 4 and system by default, like the note
        entry([], "TOP", constant=True, extensions={"position": 2}),
        entry([], "BOTTOM", constant=True, extensions={"position": 3}),
    )
    prompt = noted({"prompt": "NOTE"}, LONGER, character_book=lore)
    assert prompt.messages == [
        SYS,
        G,
        U1,
        msg("system", "TOP\n\nBOTTOM\nNOTE\nDEPTH"),
        A1,
        U2,
        A2,
        U3,
    ]


def test_authors_note_top_or_bottom_alone_is_one_system_message_at_depth_four():
    top = book(entry([], "TOP", constant=True, extensions={"position": 2}))
    bottom = book(entry([], "BOTTOM", constant=True, extensions={"position": "3"}))
    assert noted(None, LONGER, character_book=top).messages[3] == msg("system", "TOP")
    assert noted(None, LONGER, character_book=bottom).messages[3] == msg("system", "BOTTOM")


def test_entries_at_one_depth_and_role_are_joined_lowest_insertion_order_first():
    lore = book(at_depth("late", 0, insertion_order=20), at_depth("early", 0, insertion_order=10))
    assert noted(None, character_book=lore).messages == [
        SYS,
        G,
        U1,
        A1,
        U2,
        msg("system", "early\nlate"),
    ]


def test_depth_counts_history_messages_never_other_insertions():
    lore = book(at_depth("D0", 0), at_depth("D1", 1), at_depth("D2", 2))
    prompt = noted(None, character_book=lore)
    assert prompt.messages == [
        SYS,
        G,
        U1,
        msg("system", "D2"),
        A1,
        msg("system", "D1"),
        U2,
        msg("system", "D0"),
    ]


def test_insertions_deeper_than_the_history_go_above_it_deepest_first():
    lore = book(at_depth("D5", 5), at_depth("D9", 9), at_depth("D2", 2, 1))
    prompt = noted(None, [user("Q"), bot("A")], character_book=lore)
    assert prompt.messages == [
        SYS,
        msg("system", "D9"),
        msg("system", "D5"),
        msg("user", "D2"),
        msg("user", "Q"),
        msg("assistant", "A"),
    ]


def test_continuing_puts_the_insertions_at_depths_zero_and_one_before_the_reply_it_continues():
    # SillyTavern inserts with the reply still in the chat, then moves the reply after it.
    character = char(
        system_prompt="SYS",
        depth_prompt={"prompt": "NOTE", "depth": 0, "role": "user"},
        character_book=book(at_depth("D1", 1)),
        post_history_instructions="PH",
    )
    history = [user("A story?"), bot("Once upon")]
    assert build(character, history).messages == [
        SYS,
        msg("user", "A story?"),
        msg("system", "D1"),
        msg("assistant", "Once upon"),
        msg("user", "NOTE"),
        msg("system", "PH"),
    ]
    assert build(character, history, continuing=True).messages == [
        SYS,
        msg("user", "A story?"),
        msg("system", "D1"),
        msg("user", "NOTE"),
        msg("assistant", "Once upon"),
        msg("system", CONTINUE_NUDGE),
        msg("system", "PH"),
    ]


def test_insert_at_depths_returns_which_messages_were_inserted():
    turns = [msg("user", "q"), msg("assistant", "a")]
    messages, inserted = insert_at_depths(
        turns, {(0, "user"): ["x", "", "y"], (7, "system"): ["top"]}
    )
    assert messages == [msg("system", "top"), *turns, msg("user", "x\ny")]
    assert inserted == {0, 3}


def test_insert_at_depths_skips_empty_insertions():
    turns = [msg("user", "q")]
    assert insert_at_depths(turns, {(0, "user"): ["", ""]}) == (turns, set())


# --- in-chat insertions and the context budget ---------------------------------------------------


def _trim_case() -> tuple[PromptCharacter, list[Turn]]:
    character = char(system_prompt="SYS", depth_prompt={"prompt": "NOTE"})
    history = [
        bot("a" * 70),
        user("b" * 70),
        bot("c" * 70),
        user("d" * 70),
        bot("e" * 70),
        user("latest"),
    ]
    return character, history


def test_an_insertion_among_the_trimmed_turns_is_left_out_with_them():
    character, history = _trim_case()
    kept = [
        SYS,
        msg("assistant", "c" * 70),
        msg("user", "d" * 70),
        msg("assistant", "e" * 70),
        msg("user", "latest"),
    ]
    prompt = build(character, history, context_tokens=count_message_tokens(kept))
    assert prompt.messages == kept
    assert prompt.trimmed_turns == 2  # the note is not a turn
    assert prompt.notes == [
        "trimmed 2 oldest history turns",
        "left out 1 in-chat insertions among the trimmed turns",
    ]


def test_an_insertion_below_the_trimmed_turns_stays():
    character, history = _trim_case()
    kept = [
        SYS,
        msg("system", "NOTE"),
        msg("assistant", "c" * 70),
        msg("user", "d" * 70),
        msg("assistant", "e" * 70),
        msg("user", "latest"),
    ]
    prompt = build(character, history, context_tokens=count_message_tokens(kept))
    assert prompt.messages == kept
    assert prompt.trimmed_turns == 2
    assert prompt.notes == ["trimmed 2 oldest history turns"]


def test_a_user_insertion_is_never_mistaken_for_the_latest_user_message():
    character = char(
        system_prompt="SYS", depth_prompt={"prompt": "NOTE", "depth": 0, "role": "user"}
    )
    prompt = build(character, [bot("g" * 350), user("q" * 350)], context_tokens=1)
    assert prompt.messages == [SYS, msg("user", "q" * 350)]
    assert prompt.trimmed_turns == 1


# --- lorebook positions --------------------------------------------------------------------------


def test_every_sillytavern_position_in_one_exact_prompt():
    lore = book(
        entry([], "BEFORE", constant=True, extensions={"position": 0}),
        entry([], "AFTER", constant=True, extensions={"position": 1}),
        entry([], "AN TOP", constant=True, extensions={"position": 2}),
        entry([], "AN BOTTOM", constant=True, extensions={"position": 3}),
        at_depth("AT DEPTH 1 AS USER", 1, 1),
        entry([], "{{user}}: EM top\n{{char}}: hi", constant=True, extensions={"position": 5}),
        entry(
            [], "<START>EM bottom 1<START>EM bottom 2", constant=True, extensions={"position": 6}
        ),
        entry([], "OUTLET", constant=True, extensions={"position": 7}),
    )
    prompt = build(
        char(
            system_prompt="SYS",
            description="DESC",
            personality="PERS",
            scenario="SCEN",
            mes_example="<START>EX",
            post_history_instructions="PHI",
            character_book=lore,
            depth_prompt={"prompt": "NOTE", "depth": 2, "role": "user"},
        ),
        HISTORY,
        user_description="PERSONA",
    )
    assert prompt.messages == [
        msg(
            "system",
            "SYS\n\nBEFORE\n\nDESC\n\nSerika's personality: PERS\n\nScenario: SCEN\n\n"
            "Ann's persona: PERSONA\n\nAFTER",
        ),
        msg("system", f"{EXAMPLE_HEADER}\nAnn: EM top\nSerika: hi"),
        msg("system", f"{EXAMPLE_HEADER}\nEX"),
        msg("system", f"{EXAMPLE_HEADER}\nEM bottom 1"),
        msg("system", f"{EXAMPLE_HEADER}\nEM bottom 2"),
        msg("system", "AN TOP\n\nAN BOTTOM"),
        G,
        U1,
        msg("user", "NOTE"),
        A1,
        msg("user", "AT DEPTH 1 AS USER"),
        U2,
        msg("system", "PHI"),
    ]
    assert prompt.activated_lore == [0, 1, 2, 3, 4, 5, 6]
    assert prompt.notes == [
        "lorebook entries at an outlet are left out (no {{outlet::}} macro here): 7"
    ]


def test_examples_top_entries_come_last_added_first_as_in_sillytavern():
    lore = book(
        entry([], "first", constant=True, insertion_order=1, extensions={"position": 5}),
        entry([], "second", constant=True, insertion_order=2, extensions={"position": 5}),
        entry([], "third", constant=True, insertion_order=1, extensions={"position": 6}),
        entry([], "fourth", constant=True, insertion_order=2, extensions={"position": 6}),
    )
    prompt = build(char(mes_example="<START>card", character_book=lore), default_system_prompt="")
    assert contents(prompt) == [
        f"{EXAMPLE_HEADER}\n{text}" for text in ["second", "first", "card", "third", "fourth"]
    ]


def test_the_extensions_position_wins_over_the_v2_position():
    lore = book(entry(["k"], "LORE", position="before_char", extensions={"position": 1}))
    prompt = build(char(system_prompt="SYS", description="DESC", character_book=lore), [user("k")])
    assert prompt.messages == [msg("system", "SYS\n\nDESC\n\nLORE"), msg("user", "k")]


def test_an_entry_at_depth_never_lands_in_the_system_message():
    lore = book(
        entry(
            ["fine"], "AT DEPTH", position="before_char", extensions={"position": "4", "depth": "1"}
        )
    )
    prompt = noted(None, character_book=lore)
    assert prompt.messages == [SYS, G, U1, A1, msg("system", "AT DEPTH"), U2]


def test_the_v3_position_decorator_places_entries_around_the_description():
    lore = book(
        entry([], "@@position before_desc\nBD", constant=True, position="before_char"),
        entry([], "@@position after_desc\nAD", constant=True),
        entry([], "@@position personality\nPL", constant=True),
        entry([], "@@position scenario\n@@depth 0\nSL", constant=True),
        entry([], "BC", constant=True, position="before_char"),
    )
    prompt = build(
        char(
            system_prompt="SYS",
            description="DESC",
            personality="PERS",
            scenario="SCEN",
            character_book=lore,
        ),
        [user("hi")],
        user_description="ME",
    )
    assert prompt.messages == [
        msg(
            "system",
            "SYS\n\nBC\n\nBD\n\nDESC\n\nAD\n\nSerika's personality: PERS\nPL\n\n"
            "Scenario: SCEN\nSL\n\nAnn's persona: ME",
        ),
        msg("user", "hi"),
    ]


def test_personality_and_scenario_positions_fall_back_when_the_card_lacks_that_section():
    lore = book(
        entry([], "@@position personality\n@@depth 0\nPL", constant=True),
        entry([], "@@position scenario\nSL", constant=True, position="before_char"),
    )
    prompt = noted(None, description="DESC", character_book=lore)
    assert prompt.messages == [
        msg("system", "SYS\n\nSL\n\nDESC"),
        G,
        U1,
        A1,
        U2,
        msg("system", "PL"),
    ]


def test_the_depth_and_role_decorators_put_an_entry_in_the_chat():
    lore = book(
        entry(["fine"], "@@depth 0\n@@role assistant\n*smiles*"),
        entry(["fine"], "@@depth 2\nAS SYSTEM", position="before_char"),
        entry(["fine"], "@@role user\n@@depth 1\nAS USER"),
        entry(["fine"], "@@depth -4\n@@role user\nAT THE END"),
    )
    prompt = noted(None, character_book=lore, post_history_instructions="PH")
    assert prompt.messages == [
        SYS,
        G,
        U1,
        msg("system", "AS SYSTEM"),
        A1,
        msg("user", "AS USER"),
        U2,
        msg("assistant", "*smiles*"),
        msg("user", "AT THE END"),
        msg("system", "PH"),
    ]


def test_the_depth_decorator_beats_the_extensions_position_but_not_a_v3_position():
    lore = book(
        entry([], "@@depth 1\nIN CHAT", constant=True, extensions={"position": 0, "role": 1}),
        entry([], "@@position before_desc\n@@depth 1\nBY DESC", constant=True),
    )
    prompt = noted(None, description="DESC", character_book=lore)
    assert prompt.messages == [
        msg("system", "SYS\n\nBY DESC\n\nDESC"),
        G,
        U1,
        A1,
        msg("user", "IN CHAT"),
        U2,
    ]


def test_the_role_decorator_alone_leaves_an_entry_in_the_system_message():
    lore = book(entry([], "@@role user\nLORE", constant=True, position="before_char"))
    prompt = noted(None, description="DESC", character_book=lore)
    assert prompt.messages == [msg("system", "SYS\n\nLORE\n\nDESC"), G, U1, A1, U2]


# --- lorebook: context-dependent decorators ----------------------------------------------------


def _crowded() -> tuple[PromptCharacter, list[Turn]]:
    lore = book(
        entry([], "@@ignore_on_max_context\n" + "I" * 70, constant=True),
        entry([], "K" * 70, constant=True),
    )
    return char(system_prompt="SYS", character_book=lore), [
        user("old"),
        bot("reply"),
        user("latest"),
    ]


def test_ignore_on_max_context_entries_stay_while_the_prompt_fits():
    character, history = _crowded()
    full = build(character, history)
    prompt = build(character, history, context_tokens=count_message_tokens(full.messages))
    assert prompt.messages == [
        msg("system", "SYS\n\n" + "I" * 70 + "\n" + "K" * 70),
        msg("user", "old"),
        msg("assistant", "reply"),
        msg("user", "latest"),
    ]
    assert prompt.activated_lore == [0, 1]


def test_ignore_on_max_context_entries_go_before_anything_else_when_it_does_not_fit():
    character, history = _crowded()
    full = build(character, history)
    prompt = build(character, history, context_tokens=count_message_tokens(full.messages) - 1)
    assert prompt.messages == [
        msg("system", "SYS\n\n" + "K" * 70),
        msg("user", "old"),
        msg("assistant", "reply"),
        msg("user", "latest"),
    ]
    assert prompt.trimmed_turns == 0
    assert (prompt.activated_lore, prompt.dropped_lore) == ([1], [0])
    assert prompt.notes == [
        "the prompt did not fit: left out lorebook entries marked @@ignore_on_max_context: 0"
    ]


def test_disable_ui_prompt_drops_the_sites_default_prompts_while_its_entry_is_active():
    lore = book(
        entry(["secret"], "@@disable_ui_prompt system_prompt\nLORE"),
        entry(["secret"], "@@disable_ui_prompt post_history_instructions\nMORE"),
    )
    defaults = {
        "default_system_prompt": "Site prompt.",
        "default_post_history_instructions": "Site PHI.",
    }
    active = build(char(character_book=lore), [user("secret")], **defaults)
    inactive = build(char(character_book=lore), [user("hi")], **defaults)
    own = build(
        char(system_prompt="Card. {{original}}", character_book=lore), [user("secret")], **defaults
    )
    assert active.messages == [msg("system", "LORE\nMORE"), msg("user", "secret")]
    assert inactive.messages == [
        msg("system", "Site prompt."),
        msg("user", "hi"),
        msg("system", "Site PHI."),
    ]
    assert own.messages == [msg("system", "Card.\n\nLORE\nMORE"), msg("user", "secret")]


# --- lorebook: the site's scan depth -------------------------------------------------------------


def test_without_a_book_scan_depth_the_last_two_messages_are_scanned():
    character = char(system_prompt="SYS", character_book=book(entry(["dragon"], "DRAGON")))
    history = [user("a dragon"), bot("b"), user("c")]
    assert build(character, history).messages == [
        SYS,
        msg("user", "a dragon"),
        msg("assistant", "b"),
        msg("user", "c"),
    ]
    assert build(character, [bot("a dragon"), user("c")]).messages == [
        msg("system", "SYS\n\nDRAGON"),
        msg("assistant", "a dragon"),
        msg("user", "c"),
    ]


def test_the_sites_scan_depth_is_used_when_the_book_sets_none():
    character = char(system_prompt="SYS", character_book=book(entry(["dragon"], "DRAGON")))
    history = [user("a dragon"), bot("b"), user("c")]
    assert build(character, history, lore_scan_depth=3).messages[0] == msg(
        "system", "SYS\n\nDRAGON"
    )
    assert build(character, history, lore_scan_depth=0).messages[0] == SYS


def test_the_books_scan_depth_wins_over_the_sites():
    history = [user("a dragon"), bot("b"), user("c")]
    shallow = char(
        system_prompt="SYS", character_book=book(entry(["dragon"], "DRAGON"), scan_depth=1)
    )
    deep = char(system_prompt="SYS", character_book=book(entry(["dragon"], "DRAGON"), scan_depth=3))
    assert build(shallow, history, lore_scan_depth=10).messages[0] == SYS
    assert build(deep, history, lore_scan_depth=0).messages[0] == msg("system", "SYS\n\nDRAGON")


def test_activate_lorebook_takes_the_sites_scan_depth():
    lore = book(entry(["dragon"], "x"))
    history = [user("dragon"), user("a"), user("b")]
    assert activate_lorebook(lore, history, char_name="S", user_name="A").activated == []
    selection = activate_lorebook(lore, history, char_name="S", user_name="A", default_scan_depth=3)
    assert selection.activated == [0]


# --- context budget ---------------------------------------------------------------------------


def test_estimate_tokens_is_ceil_of_chars_over_three_and_a_half():
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcdefg") == 2
    assert estimate_tokens("x" * 100) == math.ceil(100 / CHARS_PER_TOKEN)


def test_estimate_tokens_counts_cjk_and_emoji_as_one_token_each():
    assert estimate_tokens("こんにちは") == 5
    assert estimate_tokens("🌸🌸") == 2
    assert estimate_tokens("ab안녕") == 1 + 2


@pytest.mark.parametrize(
    "text",
    [
        "plain ASCII, the fast path",
        "café, naïve, Ελληνικά and русский are narrow",
        "mixed 日本語 and English with 🌸 emoji",
        "\u2e7f is narrow, \u2e80 is the first wide one",
        "\U0010ffff and a lone surrogate \ud800 count as wide",
        "é" * 1000 + "語" * 1000,
    ],
)
def test_estimate_tokens_counts_every_character_at_or_above_u2e80_as_wide(text):
    wide = sum(1 for ch in text if ord(ch) >= WIDE_CHAR_START)
    assert estimate_tokens(text) == math.ceil((len(text) - wide) / CHARS_PER_TOKEN) + wide


def test_count_message_tokens_adds_a_per_message_overhead():
    messages = [{"role": "user", "content": "abcdefg"}, {"role": "system", "content": ""}]
    assert count_message_tokens(messages) == 2 + 2 * MESSAGE_OVERHEAD_TOKENS


def test_no_context_budget_keeps_everything():
    history = [user("x" * 10_000)] * 5
    prompt = build(char(mes_example="<START>ex"), history, context_tokens=None)
    assert len(prompt.messages) == 7
    assert prompt.trimmed_turns == 0
    assert prompt.dropped_examples is False


def test_a_prompt_that_fits_is_left_alone():
    prompt = build(char(mes_example="<START>ex"), [user("hi")])
    exact = count_message_tokens(prompt.messages)
    again = build(char(mes_example="<START>ex"), [user("hi")], context_tokens=exact)
    assert again.messages == prompt.messages
    assert again.notes == []


def _budget_case(**kw: Any) -> tuple[PromptCharacter, list[Turn]]:
    character = char(
        description="D",
        mes_example="<START>" + "e" * 70 + "<START>" + "f" * 70,
        post_history_instructions="PH",
        **kw,
    )
    history = [bot("g" * 70), user("u" * 70), bot("a" * 70), user("latest")]
    return character, history


def test_examples_are_dropped_before_any_history_turn():
    character, history = _budget_case()
    full = build(character, history)
    budget = count_message_tokens(full.messages) - 1
    prompt = build(character, history, context_tokens=budget)
    assert prompt.dropped_examples is True
    assert prompt.trimmed_turns == 0
    # Only the last example had to go.
    assert contents(prompt)[1] == f"{EXAMPLE_HEADER}\n" + "e" * 70
    assert f"{EXAMPLE_HEADER}\n" + "f" * 70 not in contents(prompt)
    assert any("example" in note for note in prompt.notes)


def test_all_examples_go_before_the_oldest_turn_is_trimmed():
    character, history = _budget_case()
    full = build(character, history)
    examples = [m for m in full.messages if m["content"].startswith(EXAMPLE_HEADER)]
    budget = count_message_tokens(full.messages) - count_message_tokens(examples) - 1
    prompt = build(character, history, context_tokens=budget)
    assert prompt.dropped_examples is True
    assert not any(c.startswith(EXAMPLE_HEADER) for c in contents(prompt))
    assert prompt.trimmed_turns == 1
    assert contents(prompt)[1:] == ["u" * 70, "a" * 70, "latest", "PH"]


def test_oldest_turns_are_trimmed_first_and_counted():
    character, history = _budget_case()
    minimum = build(character, [user("latest")])
    budget = count_message_tokens(minimum.messages) - count_message_tokens(
        [{"content": f"{EXAMPLE_HEADER}\n" + "e" * 70}] * 2
    )
    prompt = build(character, history, context_tokens=budget)
    assert prompt.trimmed_turns == 3
    assert contents(prompt) == [system(prompt), "latest", "PH"]
    assert any("trimmed 3" in note for note in prompt.notes)


def test_the_system_prompt_and_latest_user_message_survive_an_impossible_budget():
    character, history = _budget_case(system_prompt="S" * 500)
    prompt = build(character, history, context_tokens=1)
    assert contents(prompt) == [system(prompt), "latest", "PH"]
    assert system(prompt).startswith("S" * 500)
    assert prompt.trimmed_turns == 3
    assert prompt.dropped_examples is True
    assert any("exceeds context_tokens" in note for note in prompt.notes)


def test_a_zero_budget_behaves_like_an_impossible_one():
    character, history = _budget_case()
    prompt = build(character, history, context_tokens=0)
    assert [m["role"] for m in prompt.messages] == ["system", "user", "system"]


def test_turns_after_the_latest_user_message_are_trimmed_only_after_older_ones():
    history = [user("old " * 30), bot("older reply " * 10), user("latest"), bot("partial")]
    character = char()
    keep_tail = build(character, history[2:])
    prompt = build(character, history, context_tokens=count_message_tokens(keep_tail.messages))
    assert contents(prompt)[1:] == ["latest", "partial"]
    assert prompt.trimmed_turns == 2
    only_user = build(character, [user("latest")])
    prompt = build(character, history, context_tokens=count_message_tokens(only_user.messages))
    assert contents(prompt)[1:] == ["latest"]
    assert prompt.trimmed_turns == 3


def test_without_any_user_turn_the_last_turn_is_protected():
    history = [bot("greeting " * 50), bot("second")]
    prompt = build(char(), history, context_tokens=1)
    assert contents(prompt)[1:] == ["second"]
    assert prompt.trimmed_turns == 1


def test_the_budget_counts_the_lore_in_the_system_message():
    lore = book(entry(["k"], "L" * 350), scan_depth=3)
    history = [user("old k"), bot("reply"), user("latest")]
    character = char(character_book=lore)
    full = build(character, history)
    prompt = build(character, history, context_tokens=count_message_tokens(full.messages) - 1)
    assert prompt.trimmed_turns == 1
    assert "L" * 350 in system(prompt)


def test_trimming_an_empty_history_with_a_budget_is_harmless():
    prompt = build(char(mes_example="<START>ex"), [], context_tokens=1)
    assert [m["role"] for m in prompt.messages] == ["system"]
    assert prompt.dropped_examples is True
    assert prompt.trimmed_turns == 0


# --- output shape -----------------------------------------------------------------------------


def test_every_message_is_a_role_and_content_dict_of_strings():
    lore = book(entry(["k"], "lore"))
    prompt = build(
        char(
            description="D",
            mes_example="<START>e",
            post_history_instructions="P",
            character_book=lore,
        ),
        [bot("g"), user("k")],
        user_description="U",
    )
    for message in prompt.messages:
        assert set(message) == {"role", "content"}
        assert message["role"] in {"system", "user", "assistant"}
        assert isinstance(message["content"], str)
        assert message["content"]


def test_the_full_layout_order():
    lore = book(
        entry(["k"], "BEFORE", position="before_char"),
        entry(["k"], "AFTER", position="after_char"),
    )
    prompt = build(
        char(
            system_prompt="SYS",
            description="DESC",
            personality="PERS",
            scenario="SCEN",
            mes_example="<START>EX1<START>EX2",
            post_history_instructions="PHI",
            character_book=lore,
        ),
        [bot("GREETING"), user("k")],
        user_description="PERSONA",
    )
    assert prompt.messages == [
        {
            "role": "system",
            "content": "SYS\n\nBEFORE\n\nDESC\n\nSerika's personality: PERS\n\n"
            "Scenario: SCEN\n\nAnn's persona: PERSONA\n\nAFTER",
        },
        {"role": "system", "content": f"{EXAMPLE_HEADER}\nEX1"},
        {"role": "system", "content": f"{EXAMPLE_HEADER}\nEX2"},
        {"role": "assistant", "content": "GREETING"},
        {"role": "user", "content": "k"},
        {"role": "system", "content": "PHI"},
    ]
    assert prompt.trimmed_turns == 0
    assert prompt.dropped_examples is False
    assert prompt.activated_lore == [0, 1]


def test_build_prompt_is_deterministic_and_does_not_mutate_its_inputs():
    lore = book(entry(["k"], "lore"), recursive_scanning=True, token_budget=100)
    snapshot = repr(lore)
    history = [user("k")]
    character = char(character_book=lore)
    first = build(character, history, context_tokens=1000)
    second = build(character, history, context_tokens=1000)
    assert first == second
    assert repr(lore) == snapshot
    assert history == [user("k")]


def test_the_default_user_name_is_user():
    prompt = build_prompt(char(system_prompt="{{user}}"), [])
    assert system(prompt) == "User"


def test_numeric_and_string_booleans_from_exporters_are_understood():
    lore = book(
        entry([], "one", constant=1),
        entry(["k"], "two", enabled=0),
        entry(["K"], "three", case_sensitive="true"),
        entry(["dragon"], "four", selective="1", secondary_keys=["red"]),
    )
    assert fired(lore, "k dragon") == [0]


def test_a_catastrophic_regex_key_times_out_instead_of_stalling_the_worker():
    # Unbounded, this search would run for hours (and pytest-timeout would fail the test);
    # bounded, it gives up and the entry does not fire.
    book = {
        "scan_depth": 5,
        "entries": [
            {
                "keys": ["^(a+)+$"],
                "content": "Never shown.",
                "enabled": True,
                "insertion_order": 1,
                "use_regex": True,
            }
        ],
    }
    character = PromptCharacter(name="Evil", character_book=book)
    prompt = build_prompt(character, [Turn("user", "a" * 40 + "!")])
    assert "Never shown." not in prompt.messages[0]["content"]


# --- lorebook scan budget -----------------------------------------------------------------------

CATASTROPHIC_KEY = "/^(a|aa)+$/"  # backtracks exponentially on "aaa…a!" (the regex module
# short-cuts the textbook ^(a+)+$, so the alternation stands in for it)


class Ticks:
    """A clock that advances one second each time it is read: the budget in seconds is then the
    number of key searches allowed (the first read starts the budget)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def scan_with(lorebook: Any, *texts: str, seconds: float | None, clock=None):
    history = [user(t) for t in texts]
    return activate_lorebook(
        lorebook,
        history,
        char_name="Serika",
        user_name="Ann",
        budget_seconds=seconds,
        clock=clock or Ticks(),
    )


def test_without_a_scan_budget_every_entry_is_checked():
    lore = book(*(entry([f"k{i}"], f"lore {i}") for i in range(5)))

    selection = scan_with(lore, "k0 k1 k2 k3 k4", seconds=None)

    assert selection.activated == [0, 1, 2, 3, 4]
    assert selection.unscanned == []
    assert selection.notes == []


def test_once_the_scan_budget_is_spent_the_remaining_entries_do_not_fire():
    lore = book(*(entry([f"k{i}"], f"lore {i}") for i in range(6)))

    # 3.5 ticks: three searches run, the fourth finds the budget spent.
    selection = scan_with(lore, "k0 k1 k2 k3 k4 k5", seconds=3.5)

    assert selection.activated == [0, 1, 2]
    assert selection.unscanned == [3, 4, 5]
    assert selection.notes == [
        "lorebook scan budget of 3.5 s spent: 3 of 6 entries were not checked"
    ]


def test_a_spent_budget_stops_every_key_search_including_later_keys_of_one_entry():
    lore = book(entry(["miss1", "miss2", "hit"], "lore"), entry(["hit"], "other"))

    selection = scan_with(lore, "hit", seconds=2.5)

    assert selection.activated == []
    assert selection.unscanned == [0, 1]


def test_a_zero_budget_checks_no_key_but_constants_still_fire():
    lore = book(
        entry(["k"], "keyed"),
        entry([], "always", constant=True),
        entry(["k"], "@@activate\nforced"),
    )

    selection = scan_with(lore, "k", seconds=0)

    assert selection.activated == [1, 2]
    assert selection.unscanned == [0]


def test_an_entry_whose_exclude_keys_could_not_be_checked_does_not_fire():
    # Not knowing whether an exclude key occurs is not the same as knowing it does not.
    lore = book(entry([], "@@exclude_keys secret\nshown only without secret", constant=True))

    selection = scan_with(lore, "the secret", seconds=0)

    assert selection.activated == []
    assert selection.unscanned == [0]


def test_entries_checked_within_the_budget_keep_their_insertion_order():
    lore = book(
        entry(["k"], "third", insertion_order=30),
        entry(["k"], "first", insertion_order=10),
        entry(["k"], "second", insertion_order=20),
        entry(["k"], "never checked", insertion_order=0),
    )

    selection = scan_with(lore, "k", seconds=3.5)

    # Card order decides what is checked; insertion order still decides the prompt order.
    assert selection.activated == [1, 2, 0]
    assert selection.contents("after_char") == ["first", "second", "third"]
    assert selection.unscanned == [3]


def tower_book() -> dict[str, Any]:
    """Entry 0 fires on "start"; its content fires entry 1 in the recursion pass."""
    return book(
        entry(["start"], "mentions the tower"),
        entry(["tower"], "the tower's lore"),
        recursive_scanning=True,
    )


def test_recursive_passes_draw_on_the_same_budget():
    lore = tower_book()

    # Two searches: pass one checks both entries, the recursion pass has none left.
    selection = scan_with(lore, "start", seconds=2.5)

    assert selection.activated == [0]
    assert selection.unscanned == [1]


def test_an_entry_checked_too_late_in_one_pass_but_fired_in_a_later_one_is_not_unscanned():
    lore = tower_book()

    selection = scan_with(lore, "start", seconds=3.5)

    assert selection.activated == [0, 1]
    assert selection.unscanned == []


def test_a_regex_search_cut_short_by_the_budget_counts_as_unchecked():
    # Real time: the budget (20 ms) ends before the key's own 50 ms cap does.
    lore = book(entry([CATASTROPHIC_KEY], "never shown", use_regex=True))

    selection = activate_lorebook(
        lore, [user("a" * 40 + "!")], char_name="S", user_name="A", budget_seconds=0.02
    )

    assert selection.activated == []
    assert selection.unscanned == [0]


def test_a_regex_key_that_times_out_on_its_own_cap_is_a_miss_not_unchecked():
    lore = book(entry([CATASTROPHIC_KEY], "never shown", use_regex=True))

    selection = activate_lorebook(
        lore, [user("a" * 40 + "!")], char_name="S", user_name="A", budget_seconds=30.0
    )

    assert selection.activated == []
    assert selection.unscanned == []


def test_many_catastrophic_regex_entries_stop_at_the_budget_not_at_one_timeout_each():
    # 400 entries at 50 ms each would be 20 s; the budget ends the scan after about 0.2 s and
    # says so. (No timing assert: the unchecked entries show the budget stopped it.)
    lore = book(
        *(entry([CATASTROPHIC_KEY], f"lore {i}", use_regex=True) for i in range(400)),
        entry([], "constant lore", constant=True),
    )
    character = char(character_book=lore)

    prompt = build(character, [user("a" * 40 + "!")], lore_budget_seconds=0.2)

    assert 390 <= prompt.lore_unscanned <= 400
    assert "constant lore" in system(prompt)
    assert "lore 399" not in system(prompt)
    assert any(note.startswith("lorebook scan budget of 0.2 s spent") for note in prompt.notes)


def test_build_prompt_reports_no_unscanned_lore_within_the_budget():
    lore = book(entry(["k"], "lore"))

    prompt = build(char(character_book=lore), [user("k")], lore_budget_seconds=10.0)

    assert prompt.lore_unscanned == 0
    assert "lore" in system(prompt)


def test_continuing_under_an_impossible_budget_keeps_the_question_and_the_reply_not_the_note():
    character = char(system_prompt="SYS", depth_prompt={"prompt": "NOTE", "depth": 0})
    history = [bot("g" * 350), user("A story?"), bot("Once upon")]
    prompt = build(character, history, context_tokens=1, continuing=True)
    assert prompt.messages == [
        SYS,
        msg("user", "A story?"),
        msg("assistant", "Once upon"),
        msg("system", CONTINUE_NUDGE),
    ]
    assert prompt.trimmed_turns == 1

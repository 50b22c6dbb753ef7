"""Card JSON: reading V1/V2/V3 into `Card`, lossless round trips, V2/V3 export, hostile JSON."""

from __future__ import annotations

import copy
import json
import re

import pytest

from cardspec.cards import (
    EXTENSION_NAMESPACE,
    MAX_CARD_JSON_BYTES,
    SPEC_V1,
    SPEC_V2,
    SPEC_V3,
    Card,
    CardError,
    card_from_dict,
    card_from_json,
    card_to_v2_dict,
    card_to_v3_dict,
    dump_card_json,
    extension_key,
)
from tests.card_corpus import community_card, to_json_bytes, v1_card, v2_card, v3_card

# --- Reading each version ------------------------------------------------------------------------


def test_a_v1_card_is_read_into_the_six_fields():
    card = card_from_dict(v1_card())

    assert card.spec == SPEC_V1
    assert card.name == "Aiko"
    assert card.first_mes == "Oh! You startled me, {{user}}."
    assert card.mes_example.startswith("<START>")
    assert card.alternate_greetings == []
    assert card.character_book is None
    assert card.unknown_top_level == {}


def test_old_pygmalion_field_names_are_read_as_v1_fields():
    card = card_from_dict(
        {
            "char_name": "Bob",
            "char_persona": "grumpy",
            "world_scenario": "a farm",
            "char_greeting": "What?",
            "example_dialogue": "<START>",
        }
    )

    assert (card.name, card.personality, card.scenario) == ("Bob", "grumpy", "a farm")
    assert (card.first_mes, card.mes_example) == ("What?", "<START>")
    assert card.unknown_top_level == {}


def test_a_v2_card_is_read_into_typed_fields():
    card = card_from_dict(v2_card())

    assert card.spec == SPEC_V2
    assert card.spec_version == "2.0"
    assert card.system_prompt == "{{original}}\nStay in character."
    assert card.alternate_greetings == ["Welcome back!", "Shh, this is a library."]
    assert card.tags == ["female", "library"]
    assert card.extensions["depth_prompt"]["depth"] == 4
    assert len(card.character_book["entries"]) == 2
    assert card.group_only_greetings == []
    assert card.nickname is None
    assert card.assets is None
    assert card.unknown_data == {"avatar": "none"}
    assert card.unknown_top_level["create_date"] == "2024-5-1 @12h 30m 10s 123ms"
    assert "spec" not in card.unknown_top_level


def test_a_v3_card_is_read_with_every_v3_field():
    card = card_from_dict(v3_card())

    assert card.spec == SPEC_V3
    assert card.group_only_greetings == ["Hello, everyone!"]
    assert card.nickname == "Ai"
    assert card.assets[0]["uri"] == "embeded://assets/icon/images/main.png"
    assert card.creator_notes_multilingual["ja"] == "ゆっくり"
    assert card.source == ["https://example.com/aiko"]
    assert (card.creation_date, card.modification_date) == (1714566610, 1714566700)
    assert card.character_book["entries"][0]["content"].startswith("@@depth 3\n")


def test_card_json_bytes_are_parsed_with_or_without_a_byte_order_mark():
    assert card_from_json(to_json_bytes(v2_card())).name == "Aiko"
    assert card_from_json(b"\xef\xbb\xbf" + to_json_bytes(v2_card())).name == "Aiko"
    assert card_from_json(json.dumps(v3_card())).nickname == "Ai"


# --- Lossless round trips --------------------------------------------------------------------------


def test_a_v2_card_round_trips_to_an_equal_object():
    original = v2_card()

    assert card_to_v2_dict(card_from_dict(copy.deepcopy(original))) == original


def test_a_v3_card_round_trips_to_an_equal_object():
    original = v3_card()

    assert card_to_v3_dict(card_from_dict(copy.deepcopy(original))) == original


def test_a_card_round_trips_through_its_json_bytes():
    original = v3_card()
    card = card_from_json(dump_card_json(card_to_v3_dict(card_from_dict(original))))

    assert card_to_v3_dict(card) == original


def test_unknown_extensions_survive_a_round_trip():
    original = v2_card()
    original["data"]["extensions"]["future_app"] = {"nested": [1, {"deep": None}]}

    exported = card_to_v3_dict(card_from_dict(original))

    assert exported["data"]["extensions"] == original["data"]["extensions"]


def test_unknown_data_keys_survive_a_round_trip_in_both_versions():
    original = v3_card()
    original["data"]["future_field"] = {"a": [1, 2]}
    card = card_from_dict(original)

    assert card.unknown_data == {"avatar": "none", "future_field": {"a": [1, 2]}}
    assert card_to_v3_dict(card)["data"]["future_field"] == {"a": [1, 2]}
    assert card_to_v2_dict(card)["data"]["future_field"] == {"a": [1, 2]}


def test_unknown_top_level_keys_survive_a_round_trip():
    original = v3_card()
    original["exporter"] = {"name": "someapp", "version": 7}

    exported = card_to_v3_dict(card_from_dict(original))

    assert exported["exporter"] == {"name": "someapp", "version": 7}
    assert exported["fav"] is False


def test_lorebook_entry_extensions_and_unknown_entry_keys_survive_a_round_trip():
    original = v2_card()
    book = card_to_v2_dict(card_from_dict(original))["data"]["character_book"]

    assert book["extensions"] == {"world_app/setting": {"x": 1}}
    assert book["entries"][0]["extensions"]["some_app/flag"] is True
    assert book["entries"][0]["probability"] == 100
    assert book["entries"][1]["some_future_key"] == [1, 2, 3]


def test_a_newer_minor_spec_version_is_kept_on_export():
    original = v3_card()
    original["spec_version"] = "3.1"

    assert card_to_v3_dict(card_from_dict(original))["spec_version"] == "3.1"


# --- Plain-dict conversion for the database ------------------------------------------------------


def test_card_fields_convert_to_a_plain_dict_and_back():
    card = card_from_dict(v3_card())
    fields = card.to_fields()

    json.dumps(fields)  # plain JSON types only
    assert Card.from_fields(**fields) == card
    assert set(fields) == set(Card.field_names())


def test_a_card_from_partial_fields_gets_defaults():
    card = Card.from_fields(name="Solo", tags=["x"])

    assert card.description == ""
    assert card.extensions == {}
    assert card.character_book is None
    assert card.spec == SPEC_V3


def test_from_fields_refuses_unknown_field_names():
    with pytest.raises(TypeError):
        Card.from_fields(name="x", owner_id=3)


def test_cards_do_not_share_mutable_values_with_their_inputs_or_exports():
    fields = card_from_dict(v3_card()).to_fields()
    card = Card.from_fields(**fields)
    fields["tags"].append("changed")
    exported = card_to_v3_dict(card)
    exported["data"]["extensions"]["chub"]["id"] = 0
    exported["data"]["character_book"]["entries"].clear()

    assert card.tags == ["female", "library"]
    assert card.extensions["chub"]["id"] == 12345
    assert len(card.character_book["entries"]) == 2


def test_reading_does_not_modify_the_input_object():
    original = v3_card()
    snapshot = copy.deepcopy(original)
    card_from_dict(original)

    assert original == snapshot


def test_a_new_card_exports_as_a_complete_v3_card():
    exported = card_to_v3_dict(Card(name="Fresh"))

    assert exported["spec"] == "chara_card_v3"
    assert exported["spec_version"] == "3.0"
    assert exported["data"]["group_only_greetings"] == []
    assert exported["data"]["extensions"] == {}
    for absent in ("nickname", "assets", "source", "creation_date", "character_book"):
        assert absent not in exported["data"]


def test_our_extension_keys_are_namespaced():
    assert EXTENSION_NAMESPACE == "serika_web"
    assert extension_key("model") == "serika_web/model"
    card = Card(name="x", extensions={extension_key("model"): "serika-large"})

    assert card_to_v2_dict(card)["data"]["extensions"] == {"serika_web/model": "serika-large"}


# --- Exporting to the other version --------------------------------------------------------------


def test_a_v1_card_exports_as_v2_with_its_fields_in_data():
    exported = card_to_v2_dict(card_from_dict(v1_card()))

    assert exported["spec"] == "chara_card_v2"
    assert exported["spec_version"] == "2.0"
    for name, value in v1_card().items():
        assert exported["data"][name] == value
    assert exported["data"]["alternate_greetings"] == []
    assert exported["data"]["extensions"] == {}
    assert "name" not in exported  # no top-level copies invented


def test_a_v1_card_exports_as_v3_with_its_fields_in_data():
    exported = card_to_v3_dict(card_from_dict(v1_card()))

    assert exported["spec"] == "chara_card_v3"
    assert exported["data"]["name"] == "Aiko"
    assert exported["data"]["group_only_greetings"] == []


def test_v1_extra_keys_stay_beside_the_exported_data():
    original = {**v1_card(), "avatar": "aiko.png", "chat": "Aiko - 2024"}

    exported = card_to_v2_dict(card_from_dict(original))

    assert exported["avatar"] == "aiko.png"
    assert exported["chat"] == "Aiko - 2024"


def test_a_v2_card_exports_as_v3_with_spec_version_3_0():
    exported = card_to_v3_dict(card_from_dict(v2_card()))

    assert exported["spec_version"] == "3.0"
    assert exported["data"]["group_only_greetings"] == []
    assert all(
        entry["use_regex"] is False for entry in exported["data"]["character_book"]["entries"]
    )


def test_v3_export_keeps_every_v3_field():
    exported = card_to_v3_dict(card_from_dict(v3_card()))["data"]

    for name in (
        "group_only_greetings",
        "nickname",
        "assets",
        "creator_notes_multilingual",
        "source",
        "creation_date",
        "modification_date",
    ):
        assert exported[name] == v3_card()["data"][name]


def test_v2_export_of_a_v3_card_keeps_its_v3_fields_as_sillytaverns_dual_writer_does():
    card = card_from_dict(v3_card())
    card.group_only_greetings = []
    card.source = None

    exported = card_to_v2_dict(card)

    assert exported["spec"] == "chara_card_v2"
    assert exported["spec_version"] == "2.0"
    assert exported["data"]["nickname"] == "Ai"
    assert exported["data"]["group_only_greetings"] == []
    assert "source" not in exported["data"]


def test_v2_export_of_a_v2_card_adds_no_empty_v3_fields():
    exported = card_to_v2_dict(card_from_dict(v2_card()))

    assert exported == v2_card()
    assert "nickname" not in exported["data"]
    assert "group_only_greetings" not in exported["data"]


def test_v2_export_of_a_v3_card_without_a_nickname_adds_none():
    original = v3_card()
    del original["data"]["nickname"]

    data = card_to_v2_dict(card_from_dict(original))["data"]

    assert "nickname" not in data
    assert data["group_only_greetings"] == original["data"]["group_only_greetings"]


def test_v2_export_strips_decorators_from_lorebook_content():
    v2_entries = card_to_v2_dict(card_from_dict(v3_card()))["data"]["character_book"]["entries"]
    v3_entries = card_to_v3_dict(card_from_dict(v3_card()))["data"]["character_book"]["entries"]

    assert v2_entries[0]["content"] == "The library has a hidden archive."
    assert v3_entries[0]["content"].startswith("@@depth 3\n@@role system\n")


def test_sillytavern_top_level_copies_follow_edits():
    card = card_from_dict(v2_card())
    card.name = "Aiko II"

    exported = card_to_v2_dict(card)

    assert exported["name"] == "Aiko II"
    assert exported["data"]["name"] == "Aiko II"
    assert exported["talkativeness"] == "0.5"


def test_unknown_keys_cannot_override_known_fields_or_the_envelope():
    card = Card(
        name="Real",
        unknown_data={"name": "Fake"},
        unknown_top_level={"spec": "evil", "data": {}},
    )

    exported = card_to_v3_dict(card)

    assert exported["spec"] == "chara_card_v3"
    assert exported["data"]["name"] == "Real"


# --- spec and spec_version -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.0", "3", 3, 3.0, " 3.0 ", "3.00"])
def test_v3_spec_versions_are_compared_as_numbers(version):
    card = v3_card()
    card["spec_version"] = version

    assert card_from_dict(card).spec == SPEC_V3


@pytest.mark.parametrize("version", ["2.0", "2", 2, "2.5"])
def test_v2_spec_versions_are_compared_as_numbers(version):
    card = v2_card()
    card["spec_version"] = version

    assert card_from_dict(card).spec == SPEC_V2


def test_a_newer_minor_version_is_read_with_a_warning():
    card = v3_card()
    card["spec_version"] = "3.10"
    warnings: list[str] = []

    assert card_from_dict(card, warnings).name == "Aiko"
    assert len(warnings) == 1
    assert "newer version" in warnings[0]


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("chara_card_v3", "4.0"),
        ("chara_card_v3", "2.0"),
        ("chara_card_v2", "3.0"),
        ("chara_card_v2", "1"),
    ],
)
def test_a_spec_version_outside_its_major_version_is_refused(spec, version):
    card = v2_card()
    card["spec"], card["spec_version"] = spec, version

    with pytest.raises(CardError, match="spec_version"):
        card_from_dict(card)


def test_a_spec_version_that_is_not_a_number_is_refused():
    card = v3_card()
    card["spec_version"] = "three"

    with pytest.raises(CardError, match="not a version number"):
        card_from_dict(card)


def test_a_missing_spec_version_reads_as_the_spec_default():
    card = v3_card()
    del card["spec_version"]

    assert card_from_dict(card).spec_version == "3.0"


# --- Real-world quirks -----------------------------------------------------------------------------


def test_community_card_quirks_are_accepted():
    card = card_from_dict(community_card())

    assert card.name == "美咲 🌸"
    assert card.creator_notes == ""
    quirky = card.character_book["entries"][-1]
    assert quirky["keys"] == [""]
    assert quirky["position"] == ""
    assert quirky["probability"] is None
    assert quirky["secondary_keys"] == "alpha, beta,gamma"  # kept as given; the prompt splits it


def test_null_character_book_is_read_as_no_lorebook_and_written_back_as_null():
    original = v2_card()
    original["data"]["character_book"] = None

    card = card_from_dict(original)

    assert card.character_book is None
    assert card_to_v2_dict(card)["data"]["character_book"] is None
    assert card_to_v3_dict(card)["data"]["character_book"] is None


def test_null_text_and_list_fields_read_as_empty():
    original = v2_card()
    original["data"].update(
        creator_notes=None, tags=None, alternate_greetings=None, extensions=None
    )

    card = card_from_dict(original)

    assert (card.creator_notes, card.tags, card.alternate_greetings, card.extensions) == (
        "",
        [],
        [],
        {},
    )


def test_dates_in_milliseconds_or_text_are_kept_as_given():
    card = card_from_dict(community_card())

    assert card.creation_date == 1714566610123
    assert card.modification_date == "1714566700"
    exported = card_to_v3_dict(card)["data"]
    assert (exported["creation_date"], exported["modification_date"]) == (
        1714566610123,
        "1714566700",
    )


@pytest.mark.parametrize(
    "date", ["2023-5-12 @21h 32m 29s 228ms", "1683900749", 1719942734577, 1683900749, 1.5, ""]
)
@pytest.mark.parametrize("export", [card_to_v2_dict, card_to_v3_dict])
def test_a_v2_cards_date_of_any_form_round_trips_exactly_through_json(date, export):
    original = v2_card()
    original["data"]["creation_date"] = date
    original["data"]["modification_date"] = date

    reread = json.loads(dump_card_json(export(card_from_json(to_json_bytes(original)))))

    assert reread["data"]["creation_date"] == date
    assert type(reread["data"]["creation_date"]) is type(date)
    if export is card_to_v2_dict:
        assert reread == original


@pytest.mark.parametrize("version", [1.2, 2, 0.5, 10**20, "1.2", ""])
@pytest.mark.parametrize("export", [card_to_v2_dict, card_to_v3_dict])
def test_a_character_version_given_as_a_number_or_text_round_trips_exactly(version, export):
    """V2 says text; cards in the wild (older RisuAI exports) give `character_version: 1.2`."""
    original = v2_card()
    original["data"]["character_version"] = version

    card = card_from_json(to_json_bytes(original))
    reread = json.loads(dump_card_json(export(card)))

    assert card.character_version == (version if isinstance(version, str) else json.dumps(version))
    assert reread["data"]["character_version"] == version
    assert type(reread["data"]["character_version"]) is type(version)
    if export is card_to_v2_dict:
        assert reread == original


def test_a_numeric_character_version_reads_as_its_text_and_an_edit_exports_as_text():
    original = v2_card()
    original["data"]["character_version"] = 1.2
    card = card_from_dict(original)

    assert card.character_version == "1.2"
    card.character_version = "1.3"
    assert card_to_v3_dict(card)["data"]["character_version"] == "1.3"
    card.character_version = ""
    assert card_to_v3_dict(card)["data"]["character_version"] == ""


def test_crlf_line_endings_cjk_and_emoji_survive_unchanged():
    card = card_from_dict(community_card())
    exported = card_to_v3_dict(card)

    assert exported["data"]["description"] == "한국어와 日本語.\r\nSecond line 🎉\r\n"
    assert card_from_json(dump_card_json(exported)).description == card.description


def test_nul_characters_and_lone_surrogates_are_cleaned():
    original = v2_card()
    original["data"]["description"] = "a\x00b\ud800c"
    original["data"]["extensions"]["bad\x00key"] = "x\udfff"

    card = card_from_dict(original)

    assert card.description == "ab\ufffdc"
    assert card.extensions["badkey"] == "x\ufffd"
    dump_card_json(card_to_v3_dict(card)).decode("utf-8")


def test_sillytavern_top_level_copies_are_not_mistaken_for_the_card():
    original = v2_card()
    original["name"] = "Stale top-level name"

    assert card_from_dict(original).name == "Aiko"


# --- Hostile and broken JSON ---------------------------------------------------------------------


def _with_data(**changes):
    card = v2_card()
    card["data"].update(changes)
    return card


@pytest.mark.parametrize(
    ("card", "words"),
    [
        pytest.param(
            _with_data(name=5), "'name' must be text, not a number", id="name-is-a-number"
        ),
        pytest.param(
            _with_data(tags="x"), "'tags' must be a list of text, not text", id="tags-is-text"
        ),
        pytest.param(_with_data(tags=["a", 3]), "item 2 is a number", id="tag-is-a-number"),
        pytest.param(
            _with_data(alternate_greetings={"a": 1}), "'alternate_greetings'", id="greetings-object"
        ),
        pytest.param(
            _with_data(extensions=[]), "'extensions' must be an object", id="extensions-list"
        ),
        pytest.param(
            _with_data(description=True), "must be text, not true/false", id="description-bool"
        ),
        pytest.param(_with_data(character_book=[]), "lorebook", id="book-is-a-list"),
        pytest.param(
            _with_data(character_book={"entries": {}}),
            "'entries' must be a list",
            id="entries-object",
        ),
        pytest.param(
            _with_data(character_book={"entries": ["x"]}),
            "entry 1 must be an object",
            id="entry-text",
        ),
        pytest.param(
            _with_data(character_book={"entries": [{"keys": 5}]}),
            "entry 1: the field 'keys'",
            id="keys-number",
        ),
        pytest.param(
            _with_data(character_book={"entries": [{"keys": [], "enabled": "yes"}]}),
            "'enabled' must be true or false",
            id="enabled-text",
        ),
        pytest.param(
            _with_data(character_book={"entries": [{"keys": [], "insertion_order": "1"}]}),
            "'insertion_order' must be a number",
            id="order-text",
        ),
        pytest.param(
            _with_data(creation_date=[1]), "'creation_date' must be a Unix time", id="date-list"
        ),
        pytest.param(_with_data(assets="icon.png"), "'assets' must be a list", id="assets-text"),
        pytest.param(_with_data(assets=[{"uri": 5}]), "Asset 1", id="asset-uri-number"),
        pytest.param(_with_data(nickname=["Ai"]), "'nickname' must be text", id="nickname-list"),
        pytest.param(
            _with_data(character_version=True),
            "'character_version' must be text, not true/false",
            id="version-boolean",
        ),
        pytest.param(
            _with_data(character_version=[1, 2]),
            "'character_version' must be text, not a list",
            id="version-list",
        ),
        pytest.param(
            _with_data(creator_notes_multilingual={"en": 1}),
            "creator notes for language 'en'",
            id="notes-number",
        ),
        pytest.param(_with_data(source="https://x"), "'source' must be a list", id="source-text"),
    ],
)
def test_wrong_field_types_are_refused_with_the_field_named(card, words):
    with pytest.raises(CardError, match=re.escape(words)):
        card_from_dict(card)


@pytest.mark.parametrize(
    ("card", "words"),
    [
        pytest.param(
            {**v2_card(), "data": []}, "'data' must be an object, not a list", id="data-list"
        ),
        pytest.param(
            {**v2_card(), "data": "x"}, "'data' must be an object, not text", id="data-text"
        ),
        pytest.param(
            {"spec": "chara_card_v2", "spec_version": "2.0"}, "no 'data'", id="data-missing"
        ),
        pytest.param({**v2_card(), "spec": 2}, "'spec' must be text", id="spec-number"),
        pytest.param(
            {**v2_card(), "spec": "chara_card_v9"}, "Unknown card format", id="spec-unknown"
        ),
        pytest.param(
            {"spec": "lorebook_v3", "data": {}}, "lorebook, not a character card", id="lorebook"
        ),
        pytest.param({"hello": "world"}, "not a character card", id="no-spec-no-fields"),
        pytest.param({}, "not a character card", id="empty-object"),
        pytest.param(["a"], "must be a JSON object, not a list", id="list"),
        pytest.param("card", "must be a JSON object, not text", id="text"),
        pytest.param(None, "must be a JSON object, not null", id="null"),
    ],
)
def test_objects_that_are_not_cards_are_refused(card, words):
    with pytest.raises(CardError, match=words):
        card_from_dict(card)


def test_invalid_json_is_refused_with_its_position():
    with pytest.raises(CardError, match=r"not valid JSON \(.* line 1, column \d+\)"):
        card_from_json(b'{"spec": "chara_card_v2", ')


def test_json_that_is_not_utf8_is_refused():
    with pytest.raises(CardError, match="not valid UTF-8"):
        card_from_json('{"name": "Café"}'.encode("latin-1"))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant):
    with pytest.raises(CardError, match=constant):
        card_from_json(f'{{"name": "x", "extensions": {constant}}}')


def test_oversized_json_is_refused_before_parsing():
    data = b'{"name": "' + b"x" * MAX_CARD_JSON_BYTES + b'"}'

    with pytest.raises(CardError, match="larger than 5 MiB"):
        card_from_json(data)


def test_deeply_nested_json_is_refused():
    deep = '{"name": "x", "extra": ' + "[" * 200 + "]" * 200 + "}"

    with pytest.raises(CardError, match="nested too deeply"):
        card_from_json(deep)


def test_extremely_deep_json_does_not_crash_the_parser():
    with pytest.raises(CardError, match="nested too deeply"):
        card_from_json("[" * 100_000 + "]" * 100_000)


def test_a_number_with_thousands_of_digits_is_refused():
    with pytest.raises(CardError, match="number that is too long"):
        card_from_json('{"name": "x", "n": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("date", [True, {"y": 2023}, [1]])
def test_a_date_that_is_no_date_at_all_is_refused(date):
    with pytest.raises(CardError, match="'creation_date' must be a Unix time or text"):
        card_from_dict(_with_data(creation_date=date))


def test_card_error_is_a_value_error():
    assert issubclass(CardError, ValueError)


def test_a_null_character_book_exports_back_as_null():
    from cardspec.cards import card_from_dict, card_to_v2_dict

    original = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Nully",
            "description": "",
            "personality": "",
            "scenario": "",
            "first_mes": "",
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "character_book": None,
            "tags": [],
            "creator": "",
            "character_version": "",
            "extensions": {},
        },
    }
    assert card_to_v2_dict(card_from_dict(original)) == original

"""Card JSON: reading V1/V2/V3 objects into a `Card`, and writing V2/V3 objects back.

Reading is liberal (null for "nothing", spec_version compared as a number, SillyTavern's copies
of the V1 fields beside `data`, millisecond dates) and lossless: what we do not understand is kept
in the card's `unknown_*` buckets, and a spec-complete V2 or V3 card exports to an equal object.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from cardspec.lorebook import (
    character_book_for_v2,
    character_book_for_v3,
    normalize_character_book,
)
from cardspec.model import (
    DEFAULT_SPEC_VERSION,
    MAX_CARD_JSON_BYTES,
    SPEC_V1,
    SPEC_V2,
    SPEC_V3,
    Card,
    CardError,
    format_bytes,
)
from cardspec.values import (
    clean_json_value,
    is_number,
    json_kind,
    json_object,
    optional_text,
    optional_text_list,
    short_quote,
    text,
    text_list,
)

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_TEXT_FIELDS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "creator",
)
V2_FIELDS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "character_book",
    "tags",
    "creator",
    "character_version",
    "extensions",
)
V3_ONLY_FIELDS = (
    "group_only_greetings",
    "nickname",
    "assets",
    "creator_notes_multilingual",
    "source",
    "creation_date",
    "modification_date",
)
KNOWN_DATA_FIELDS = frozenset(V2_FIELDS + V3_ONLY_FIELDS)
_ENVELOPE_KEYS = ("spec", "spec_version", "data")

# The old TavernAI/Pygmalion JSON format used these names for the V1 fields.
_PYGMALION_NAMES = {
    "char_name": "name",
    "char_persona": "personality",
    "world_scenario": "scenario",
    "char_greeting": "first_mes",
    "example_dialogue": "mes_example",
}
_ASSET_TEXTS = ("type", "uri", "name", "ext")


def _field(name: str) -> str:
    return f"The field '{name}'"


def _date(value: Any, name: str) -> int | float | str | None:
    """A card date, kept exactly as given (issue 14 items 4 and 7).

    Exporters write Unix seconds, milliseconds (`1719942734577`), numbers in text (`"1683900749"`)
    and SillyTavern's `"2023-5-12 @21h 32m 29s 228ms"`; nothing here reads the date, so any of
    them round-trips unchanged rather than being converted or refused. Only values that are
    no date at all (lists, objects, booleans) are refused; NaN never gets this far.
    """
    if value is None or isinstance(value, str) or is_number(value):
        return value
    raise CardError(f"{_field(name)} must be a Unix time or text, not {json_kind(value)}.")


def _number_text(value: int | float) -> str:
    """A JSON number as its JSON text ("1.2", "2")."""
    return json.dumps(value)


def _character_version(value: Any) -> str:
    """`character_version` as text. V2 says text, but cards in the wild give a number (`1.2`;
    older RisuAI versions wrote one): it reads as its JSON text, and `_card_from_data` keeps the
    number so that export writes it back (issue 14 leftovers)."""
    if is_number(value):
        return _number_text(value)
    return text(value, _field("character_version"))


def _assets(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise CardError(f"{_field('assets')} must be a list, not {json_kind(value)}.")
    for position, asset in enumerate(value, 1):
        if not isinstance(asset, dict):
            raise CardError(f"Asset {position} must be an object, not {json_kind(asset)}.")
        for name in _ASSET_TEXTS:
            if asset.get(name) is not None:
                text(asset[name], f"Asset {position}: the field '{name}'")
    return list(value)


def _multilingual(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    notes = json_object(value, _field("creator_notes_multilingual"))
    for language, note in notes.items():
        text(note, f"The creator notes for language {short_quote(language)}")
    return notes


# Fields whose `null` reads as their empty value, yet is written back as `null` while the field
# stays empty: a JSON round trip keeps every value as given.
_NULLABLE_FIELDS = (*V2_FIELDS, *V3_ONLY_FIELDS)
# Text fields that may be given as a number, kept as given the same way while the text stands
# for that number.
_NUMERIC_TEXT_FIELDS = ("character_version",)


def _card_from_data(data: dict[str, Any], spec: str, spec_version: str | int | float) -> Card:
    """Build a card from a V2/V3 `data` object (V3-only fields are read whatever the spec says)."""
    fields: dict[str, Any] = {name: text(data.get(name), _field(name)) for name in V2_TEXT_FIELDS}
    fields["character_version"] = _character_version(data.get("character_version"))
    for name in ("alternate_greetings", "tags", "group_only_greetings"):
        fields[name] = text_list(data.get(name), _field(name))
    fields["extensions"] = json_object(data.get("extensions"), _field("extensions"))
    fields["character_book"] = normalize_character_book(data.get("character_book"))
    fields["nickname"] = optional_text(data.get("nickname"), _field("nickname"))
    fields["assets"] = _assets(data.get("assets"))
    fields["creator_notes_multilingual"] = _multilingual(data.get("creator_notes_multilingual"))
    fields["source"] = optional_text_list(data.get("source"), _field("source"))
    fields["creation_date"] = _date(data.get("creation_date"), "creation_date")
    fields["modification_date"] = _date(data.get("modification_date"), "modification_date")
    unknown = {key: value for key, value in data.items() if key not in KNOWN_DATA_FIELDS}
    for name in _NULLABLE_FIELDS:
        if name in data and data[name] is None:
            # Real cards say `character_book: null`, `creator_notes: null`, ...: a null is kept
            # among the unknown keys and written back while the field has no value (an export
            # of a value overwrites it), so such cards export back equal.
            unknown[name] = None
    for name in _NUMERIC_TEXT_FIELDS:
        if is_number(data.get(name)):
            unknown[name] = data[name]  # the same way: see `_kept_as_given`
    return Card(**fields, spec=spec, spec_version=spec_version, unknown_data=unknown)


def _card_from_v1(obj: dict[str, Any]) -> Card:
    obj = dict(obj)
    for old, new in _PYGMALION_NAMES.items():
        if new not in obj and old in obj:
            obj[new] = obj.pop(old)
    if not any(name in obj for name in V1_FIELDS):
        raise CardError(
            "This JSON is not a character card: it has no 'spec' and no character fields "
            "such as 'name'."
        )
    fields = {name: text(obj.get(name), _field(name)) for name in V1_FIELDS}
    unknown = {key: value for key, value in obj.items() if key not in V1_FIELDS}
    return Card(
        **fields,
        spec=SPEC_V1,
        spec_version=DEFAULT_SPEC_VERSION[SPEC_V1],
        unknown_top_level=unknown,
    )


def _spec_version(raw: Any, spec: str, warnings: list[str]) -> str | int | float:
    """Check `spec_version` as a number within the spec's major version; return it as given
    (text or a number), so that export writes it back unchanged."""
    default = DEFAULT_SPEC_VERSION[spec]
    if raw is None:
        return default
    if not (isinstance(raw, str) or is_number(raw)):
        raise CardError(f"The card's 'spec_version' must be text, not {json_kind(raw)}.")
    version = raw.strip() if isinstance(raw, str) else str(raw)
    try:
        value = float(version)
    except ValueError:
        raise CardError(
            f"The card's 'spec_version' {short_quote(version)} is not a version number."
        ) from None
    major = float(default)
    if not major <= value < major + 1:  # also false for NaN
        raise CardError(
            f"This {spec} card has spec_version {short_quote(version)}, which we cannot read "
            f"(we read {int(major)}.x)."
        )
    if value > major:
        warnings.append(
            f"This card was made for a newer version of the format ({version}); fields we do not "
            "know are kept but not used."
        )
    return raw


def card_from_dict(obj: Any, warnings: list[str] | None = None) -> Card:
    """Read a parsed card object (V1, V2 or V3) into a `Card`.

    Raises `CardError` for anything that is not a readable card. Notes for the user (such as a
    newer spec_version) are appended to `warnings` when a list is given.
    """
    if warnings is None:
        warnings = []
    obj = clean_json_value(obj)
    if not isinstance(obj, dict):
        raise CardError(f"The character data must be a JSON object, not {json_kind(obj)}.")
    spec = obj.get("spec")
    if spec is None:
        return _card_from_v1(obj)
    if not isinstance(spec, str):
        raise CardError(f"The card's 'spec' must be text, not {json_kind(spec)}.")
    spec = spec.strip()
    if spec.startswith("lorebook"):
        raise CardError("This file holds a lorebook, not a character card.")
    if spec not in (SPEC_V2, SPEC_V3):
        raise CardError(
            f"Unknown card format {short_quote(spec)} (expected 'chara_card_v2' or "
            "'chara_card_v3')."
        )
    version = _spec_version(obj.get("spec_version"), spec, warnings)
    data = obj.get("data")
    if data is None:
        raise CardError(f"The card says it is {spec} but has no 'data' object.")
    if not isinstance(data, dict):
        raise CardError(f"The card's 'data' must be an object, not {json_kind(data)}.")
    card = _card_from_data(data, spec, version)
    card.unknown_top_level = {key: value for key, value in obj.items() if key not in _ENVELOPE_KEYS}
    return card


def parse_card_json(data: bytes | str) -> Any:
    """Parse card JSON (UTF-8 bytes, a BOM is fine, or text) into plain JSON values.

    The size cap is checked before parsing; invalid JSON, NaN/Infinity and absurd nesting raise
    `CardError`. `card_from_dict` reads the result; the PNG reader also looks at which keys the
    V2 copy of a card holds.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_CARD_JSON_BYTES:
        raise CardError(
            f"The character data is larger than {format_bytes(MAX_CARD_JSON_BYTES)}, the limit."
        )
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CardError("The character data is not valid UTF-8 text.") from None
    try:
        return json.loads(decoded, parse_constant=_refuse_constant)
    except CardError:
        raise
    except json.JSONDecodeError as error:
        raise CardError(
            f"The character data is not valid JSON ({error.msg} at line {error.lineno}, "
            f"column {error.colno})."
        ) from None
    except RecursionError:
        raise CardError("The character data is nested too deeply.") from None
    except ValueError:
        # Python refuses to convert integers with thousands of digits.
        raise CardError("The character data contains a number that is too long.") from None


def card_from_json(data: bytes | str, warnings: list[str] | None = None) -> Card:
    """Parse card JSON (see `parse_card_json`) into a `Card`."""
    return card_from_dict(parse_card_json(data), warnings)


def _refuse_constant(name: str) -> Any:
    raise CardError(f"The character data contains {name}, which JSON does not allow.")


def _kept_as_given(data: dict[str, Any], name: str, value: Any) -> bool:
    """Whether the card gave the known field `name` in a form the `Card` does not hold, kept in
    `data` (its unknown keys), and `value` still stands for it: null while the field is empty
    (`_NULLABLE_FIELDS`), or a number its text still spells (`_NUMERIC_TEXT_FIELDS`). Export then
    writes back the form the card gave; an edited value overwrites it."""
    if name not in data:
        return False
    given = data[name]
    if given is None:
        return value in ("", [], {}, None)
    return name in _NUMERIC_TEXT_FIELDS and is_number(given) and _number_text(given) == value


def _common_data(card: Card) -> dict[str, Any]:
    """Unknown data keys first, so known fields win if a caller put a clash into the bucket."""
    data = copy.deepcopy(card.unknown_data)
    for name in V2_FIELDS:
        value = getattr(card, name)
        if name != "character_book" and not _kept_as_given(data, name, value):
            data[name] = copy.deepcopy(value)
    return data


def _envelope(card: Card, spec: str, data: dict[str, Any]) -> dict[str, Any]:
    version = card.spec_version if card.spec == spec and card.spec_version else None
    obj: dict[str, Any] = {
        "spec": spec,
        "spec_version": version or DEFAULT_SPEC_VERSION[spec],
        "data": data,
    }
    for key, value in card.unknown_top_level.items():
        if key in _ENVELOPE_KEYS:
            continue
        if key in V1_FIELDS and isinstance(value, str):
            # SillyTavern copies the V1 fields beside `data`; keep those copies current.
            obj[key] = getattr(card, key)
        else:
            obj[key] = copy.deepcopy(value)
    return obj


def card_to_v3_dict(card: Card) -> dict[str, Any]:
    """Export a card as a V3 object, keeping every field and every unknown key."""
    data = _common_data(card)
    book = character_book_for_v3(card.character_book)
    if book is not None:
        data["character_book"] = book
    if not _kept_as_given(data, "group_only_greetings", card.group_only_greetings):
        data["group_only_greetings"] = list(card.group_only_greetings)
    for name in V3_ONLY_FIELDS[1:]:
        value = getattr(card, name)
        if value is not None:
            data[name] = copy.deepcopy(value)
    return _envelope(card, SPEC_V3, data)


def card_to_v2_dict(card: Card) -> dict[str, Any]:
    """Export a card as a V2 object.

    V3-only fields are written only when they hold something (V2 readers ignore unknown fields,
    SillyTavern writes them the same way, and a V2 card that carried them stays lossless): a V3
    card's `group_only_greetings` even when empty, as SillyTavern's dual writer does; absent
    optional fields are left out. Lorebook decorators are
    stripped, because V2 apps would put them into the prompt.
    """
    data = _common_data(card)
    book = character_book_for_v2(card.character_book)
    if book is not None:
        data["character_book"] = book
    if (card.group_only_greetings or card.spec == SPEC_V3) and not _kept_as_given(
        data, "group_only_greetings", card.group_only_greetings
    ):
        # SillyTavern's dual writer copies a V3 card's (required) list, empty or not, into V2.
        data["group_only_greetings"] = list(card.group_only_greetings)
    for name in V3_ONLY_FIELDS[1:]:
        value = getattr(card, name)
        if value is not None:
            data[name] = copy.deepcopy(value)
    return _envelope(card, SPEC_V2, data)


def dump_card_json(card_object: dict[str, Any], *, indent: int | None = None) -> bytes:
    """Serialise an exported card object as UTF-8 JSON (compact unless `indent` is given)."""
    separators = (",", ":") if indent is None else (",", ": ")
    text_ = json.dumps(card_object, ensure_ascii=False, indent=indent, separators=separators)
    # "replace" only matters for cards built in code with lone surrogates; imports are cleaned.
    return text_.encode("utf-8", "replace")

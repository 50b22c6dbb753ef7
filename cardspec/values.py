"""Checks for the JSON values inside a card, raising `CardError` in words an end user understands.

Policy: `null` reads as the field's empty value (real cards write `null` for "nothing"), any
other wrong type is refused with a message naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from cardspec.model import MAX_JSON_NESTING, CardError

# NUL cannot be stored in PostgreSQL text; lone surrogates cannot be encoded as UTF-8.
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")


def is_number(value: Any) -> bool:
    """Whether `value` is a JSON number (true/false is not one here, although Python thinks so)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_kind(value: Any) -> str:
    """Name a JSON value's type in plain words ("text", "a number", "a list", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def clean_text(text: str) -> str:
    """Text safe to store: NUL dropped, lone surrogates replaced by U+FFFD."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE_CHARS.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def clean_json_value(value: Any, depth: int = 0) -> Any:
    """Return a copy of a parsed JSON value that is safe to store and to re-encode.

    Drops NUL characters, replaces lone surrogates with U+FFFD and refuses absurd nesting, in
    keys and values alike (unknown keys and extensions are stored too).
    """
    if depth > MAX_JSON_NESTING:
        raise CardError(
            f"The character data is nested too deeply (more than {MAX_JSON_NESTING} levels)."
        )
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {
            clean_text(str(key)): clean_json_value(item, depth + 1) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [clean_json_value(item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise CardError("The character data contains NaN or Infinity, which JSON does not allow.")
    if value is None or isinstance(value, bool | int | float):
        return value
    raise CardError(f"The character data contains {json_kind(value)}, which is not JSON.")


def text(value: Any, subject: str) -> str:
    """A required text field: null reads as ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CardError(f"{subject} must be text, not {json_kind(value)}.")
    return value


def optional_text(value: Any, subject: str) -> str | None:
    """An optional text field: null/absent stays None."""
    return None if value is None else text(value, subject)


def text_list(value: Any, subject: str) -> list[str]:
    """A list of text: null reads as []."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise CardError(f"{subject} must be a list of text, not {json_kind(value)}.")
    for number, item in enumerate(value, 1):
        if not isinstance(item, str):
            raise CardError(
                f"{subject} must be a list of text, but item {number} is {json_kind(item)}."
            )
    return list(value)


def optional_text_list(value: Any, subject: str) -> list[str] | None:
    """An optional list of text: null/absent stays None."""
    return None if value is None else text_list(value, subject)


def json_object(value: Any, subject: str) -> dict[str, Any]:
    """A JSON object: null reads as {}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CardError(f"{subject} must be an object, not {json_kind(value)}.")
    return value


def number(value: Any, subject: str) -> int | float:
    """A JSON number (see `is_number`)."""
    if not is_number(value):
        raise CardError(f"{subject} must be a number, not {json_kind(value)}.")
    return value


def boolean(value: Any, subject: str) -> bool:
    """A JSON true/false."""
    if not isinstance(value, bool):
        raise CardError(f"{subject} must be true or false, not {json_kind(value)}.")
    return value


def short_quote(value: str, limit: int = 40) -> str:
    """Quote user-supplied text for an error message, cut to a readable length."""
    shown = value if len(value) <= limit else value[: limit - 1] + "…"
    return repr(shown)

"""Shared checks for the chat readers: safe JSON from bytes, clean text, times, small numbers.

Every refusal is a `ChatFormatError` whose message names the problem in words a member can act
on. Nothing here imports Django or touches files.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

# The card readers' plain-word checks serve chat files too (both Django-free).
from cardspec.values import clean_text, json_kind
from chat.formats.model import (
    FIELD_CHARS,
    MAX_JSON_DEPTH,
    MAX_KEY_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TEXT_FIELD_CHARS,
    ChatFormatError,
)

MIB = 1024 * 1024
# Years 1970 to 9999: anything else in an export is noise, not a time.
_LAST_EPOCH_SECOND = 253_402_300_799
# Bare numbers above this are milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_ABOVE = 1e11
# PostgreSQL's integer column (PositiveIntegerField) stops here.
_MAX_COUNT = 2**31 - 1
# What json.loads builds for objects and arrays (exactly these types, never subclasses).
_CONTAINERS = (dict, list)


def format_bytes(size: int) -> str:
    """A byte limit in plain words for messages ("32 MiB")."""
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size / MIB:.1f} MiB"


def check_size(data: bytes, limit: int, what: str) -> None:
    """Refuse data over `limit` bytes before anything parses it."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("chat readers take the file's bytes")
    if len(data) > limit:
        raise ChatFormatError(f"{what} is larger than {format_bytes(limit)}, the limit.")


def decode_utf8(data: bytes, what: str) -> str:
    """UTF-8 text (a byte order mark is fine), or a refusal naming the first bad byte."""
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ChatFormatError(
            f"{what} is not valid UTF-8 text (byte {error.start + 1} cannot be read)."
        ) from None


def parse_json(text: str, what: str) -> Any:
    """Parse JSON text, refusing NaN/Infinity, absurd nesting and absurd numbers."""
    try:
        value = json.loads(text, parse_constant=lambda name: _refuse_constant(name, what))
    except ChatFormatError:
        raise
    except json.JSONDecodeError as error:
        raise ChatFormatError(
            f"{what} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})."
        ) from None
    except RecursionError:
        raise ChatFormatError(
            f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)."
        ) from None
    except ValueError:
        # Python refuses to convert integers with thousands of digits.
        raise ChatFormatError(f"{what} contains a number that is too long.") from None
    check_depth(value, what)
    return value


def load_json(data: bytes, *, limit: int, what: str) -> Any:
    """Size cap, UTF-8 and JSON checks, in that order: the cheap ones first."""
    check_size(data, limit, what)
    return parse_json(decode_utf8(data, what), what)


def check_depth(value: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH, walked level by level (no recursion)."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise ChatFormatError(
                f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)."
            )
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below += [child for child in children if type(child) in _CONTAINERS]
        level = below


def _refuse_constant(name: str, what: str) -> Any:
    raise ChatFormatError(f"{what} contains {name}, which JSON does not allow.")


def text(value: Any, subject: str) -> str:
    """Required text: null reads as ""; any other type is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ChatFormatError(f"{subject} must be text, not {json_kind(value)}.")
    return clean_text(value)


def message_text(value: Any, subject: str) -> str:
    """A message's text: like `text`, with the absurd-length refusal."""
    result = text(value, subject)
    if len(result) > MAX_MESSAGE_CHARS:
        raise ChatFormatError(
            f"{subject} is longer than {MAX_MESSAGE_CHARS:,} characters, which no chat message is."
        )
    return result


def short_text(value: Any, subject: str) -> str:
    """A title, name or model: refused when absurd, cut to fit the database's columns."""
    result = text(value, subject)
    if len(result) > MAX_TEXT_FIELD_CHARS:
        raise ChatFormatError(
            f"{subject} is longer than {MAX_TEXT_FIELD_CHARS:,} characters, which no name is."
        )
    result = " ".join(result.split()) if "\n" in result else result
    return result if len(result) <= FIELD_CHARS else result[: FIELD_CHARS - 1] + "…"


def loose_short_text(value: Any) -> str:
    """Like `short_text` for optional details of foreign files: a wrong type reads as ""."""
    if not isinstance(value, str) or len(value) > MAX_TEXT_FIELD_CHARS:
        return ""
    return short_text(value, "")


def key(value: Any, subject: str) -> str:
    """A message's key in the file (ids, node names): text of sane length."""
    if not isinstance(value, str):
        raise ChatFormatError(f"{subject} must be text, not {json_kind(value)}.")
    if not value:
        raise ChatFormatError(f"{subject} is empty.")
    if len(value) > MAX_KEY_CHARS:
        raise ChatFormatError(f"{subject} is longer than {MAX_KEY_CHARS} characters.")
    return clean_text(value)


def optional_key(value: Any, subject: str) -> str | None:
    return None if value is None else key(value, subject)


def count(value: Any) -> int | None:
    """A token count from a foreign file: a non-negative integer that fits, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    return number if 0 <= number <= _MAX_COUNT else None


def from_epoch(value: Any) -> datetime | None:
    """A bare Unix time (seconds, or milliseconds above 1e11) as an aware UTC time.

    None for null and for numbers that are no plausible time; callers that care count those.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if abs(value) > _MILLISECONDS_ABOVE else value
    if not math.isfinite(seconds) or not 0 <= seconds <= _LAST_EPOCH_SECOND:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def is_time_like(value: Any) -> bool:
    """Whether a value was meant as a time (for counting the ones we could not read)."""
    return value is not None and value != ""


def plural(number: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 message", "3 messages"."""
    word = singular if number == 1 else (plural_form or singular + "s")
    return f"{number:,} {word}"


def were(number: int) -> str:
    """The verb after `plural(number, ...)`: "was" or "were"."""
    return "was" if number == 1 else "were"

"""SillyTavern chat files (`.jsonl`): one JSON object per line, a header line, then the messages
oldest first (docs/chat-export-format.md, "SillyTavern"; /work/shared/notes/chat-formats.md §1).

Reading. The lines form a chain: each message's parent is the shown message of the line before.
A line's `swipes` become alternatives under that same parent (siblings, in swipe order); only
`swipes[swipe_id]`, the one `mes` holds, has descendants. Keys are the line numbers in the file
("3"), and "3.1" for swipe 1 of line 3 when it is not the shown one.

- `is_system: true` lines (hidden from the prompt: notes, `/comment`, `/hide`, ST's own help
  messages) are left out and counted in the warnings; the chain goes on from the line before.
- Narrator lines (`extra.type: "narrator"`, `/sys`) become assistant messages (story text the
  member did not write), counted in the warnings.
- `mes` is the message text (what the model saw); `extra.display_text`, shown by ST instead, is
  left out and counted. When `mes` differs from `swipes[swipe_id]`, `mes` wins.
- Times: `send_date` in any of ST's forms (ISO 8601; "June 19, 2023 2:20pm";
  "2024-6-5 @14h 56m 50s 682ms"; "2024-07-12@01h31m37s"; epoch milliseconds as a number or
  digits; JavaScript's `Date()` text). Forms without a zone are read as UTC, as ST itself does
  for its humanized forms, so the clock time shown stays the one written. An unreadable date
  leaves the time empty and is counted; reading goes on. Other swipes take their time and model
  from `swipe_info[i]` when it has them (it may be shorter than `swipes`).
- `extra.model` becomes the reply's model; an assistant line's `extra.token_count` its
  completion tokens.
- Names: the header's `user_name` / `character_name`, unless missing or "unused" (what ST writes
  since late 2025), then the first member's and the first character's line name. A file without
  a header line (group chats) is read the same way.
- Refused: a line that is not a JSON object, `mes`, `swipes` or `swipe_id` of the wrong type, a
  `swipe_id` outside its swipes, more than MAX_MESSAGES messages (swipes count), absurd lengths.

Writing: see `write_sillytavern`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from chat.formats.model import MAX_MESSAGES, Chat, ChatFormatError, ChatMessage
from chat.formats.values import (
    MIB,
    check_size,
    count,
    decode_utf8,
    from_epoch,
    is_time_like,
    json_kind,
    loose_short_text,
    message_text,
    parse_json,
    plural,
    were,
)

MAX_BYTES = 16 * MIB
"""Largest SillyTavern chat file we read (one chat per file; the biggest real ones are a few MiB)."""
_HEADER_KEYS = frozenset({"user_name", "character_name", "create_date", "chat_metadata"})
_UNUSED_NAME = "unused"
_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
# "June 19, 2023 2:20pm": ST's message dates until late 2025.
_MERIDIEM_DATE = re.compile(
    r"([A-Za-z]+)\.? (\d{1,2}), (\d{4}) (\d{1,2}):(\d{2}) ?([AaPp][Mm])", re.ASCII
)
# "2024-6-5 @14h 56m 50s 682ms" (server), "2024-07-12@01h31m37s" (client), and the
# space-free form with milliseconds.
_HUMANIZED_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2}) ?@ ?(\d{1,2})h ?(\d{1,2})m ?(\d{1,2})s(?: ?(\d{1,3}) ?ms)?",
    re.ASCII,
)
# `String(new Date())`: "Tue Jan 24 2023 13:30:00 GMT+0100 (Central European Standard Time)".
_JS_DATE = re.compile(
    r"[A-Za-z]{3} ([A-Za-z]{3}) (\d{1,2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT([+-])(\d{2})(\d{2})"
    r"(?: \(.*\))?",
    re.ASCII,
)
_DIGITS = re.compile(r"\d{1,17}", re.ASCII)


def read_sillytavern(data: bytes) -> list[Chat]:
    """Read a SillyTavern chat file into one chat (a list, like the other readers)."""
    check_size(data, MAX_BYTES, "The file")
    return [chat_from_text(decode_utf8(data, "The file"))]


def chat_from_text(source: str) -> Chat:
    """The chat of a SillyTavern file's text."""
    if source.lstrip().startswith("["):
        raise ChatFormatError(
            "This is a JSON list, not a SillyTavern chat (.jsonl): one JSON object per line."
        )
    lines = [(number, line.strip()) for number, line in enumerate(source.split("\n"), 1)]
    lines = [(number, line) for number, line in lines if line]
    if not lines:
        raise ChatFormatError("The file is empty.")
    if len(lines) > MAX_MESSAGES + 1:
        raise ChatFormatError(
            f"The file holds {len(lines) - 1:,} messages; at most {MAX_MESSAGES:,} can be "
            "imported at once."
        )
    objects = []
    for number, line in lines:
        obj = parse_json(line, f"Line {number}")
        if not isinstance(obj, dict):
            raise ChatFormatError(f"Line {number} must be a JSON object, not {json_kind(obj)}.")
        objects.append((number, obj))
    header: dict[str, Any] = {}
    first = objects[0][1]
    if "mes" not in first:
        if not _HEADER_KEYS & first.keys():
            raise ChatFormatError(
                "This is not a SillyTavern chat: line 1 is neither a chat header nor a message."
            )
        header = first
        objects = objects[1:]
    return _Reader(header).read(objects)


class _Reader:
    def __init__(self, header: dict[str, Any]) -> None:
        self.header = header
        self.messages: list[ChatMessage] = []
        self.hidden = 0
        self.narrator = 0
        self.display_text = 0
        self.bad_dates = 0
        self.user_name = _header_name(header.get("user_name"))
        self.character_name = _header_name(header.get("character_name"))

    def read(self, objects: list[tuple[int, dict[str, Any]]]) -> Chat:
        total = sum(_swipe_count(obj) for _, obj in objects)
        if total > MAX_MESSAGES:
            raise ChatFormatError(
                f"The file holds {total:,} messages with their swipes; at most "
                f"{MAX_MESSAGES:,} can be imported at once."
            )
        parent: str | None = None
        for number, obj in objects:
            shown = self._line(number, obj, parent)
            if shown is not None:
                parent = shown
        chat = Chat(
            character_name=self.character_name,
            user_name=self.user_name,
            created_at=self._date(self.header.get("create_date")),
            messages=self.messages,
            shown_leaf=parent,
            warnings=self._warnings(),
        )
        if chat.created_at is None and self.messages:
            chat.created_at = next((m.created_at for m in self.messages if m.created_at), None)
        chat.validate()
        return chat

    def _line(self, number: int, obj: dict[str, Any], parent: str | None) -> str | None:
        """Add a line's message and its swipes; return the shown one's key (None: skipped)."""
        where = f"Line {number}"
        if "mes" not in obj:
            raise ChatFormatError(f"{where} is not a message: it has no 'mes'.")
        mes = _text(obj["mes"], f"{where}: 'mes'")
        swipes, chosen = _swipes(obj, mes, where)  # checked on hidden lines too: all or nothing
        if obj.get("is_system") is True:
            self.hidden += 1
            return None
        is_user = obj.get("is_user") is True
        extra = obj.get("extra") if isinstance(obj.get("extra"), dict) else {}
        if extra.get("type") == "narrator":
            self.narrator += 1
        if extra.get("display_text"):
            self.display_text += 1
        name = loose_short_text(obj.get("name"))
        if is_user and not self.user_name:
            self.user_name = name
        if not is_user and not self.character_name and extra.get("type") != "narrator":
            self.character_name = name
        infos = obj.get("swipe_info") if isinstance(obj.get("swipe_info"), list) else []
        for index, swipe in enumerate(swipes):
            if index == chosen:
                details, date = extra, obj.get("send_date")
            else:
                info = infos[index] if index < len(infos) and isinstance(infos[index], dict) else {}
                details = info.get("extra") if isinstance(info.get("extra"), dict) else {}
                date = info.get("send_date")
            self.messages.append(
                ChatMessage(
                    key=str(number) if index == chosen else f"{number}.{index}",
                    parent=parent,
                    role="user" if is_user else "assistant",
                    content=swipe,
                    created_at=self._date(date),
                    model="" if is_user else loose_short_text(details.get("model")),
                    completion_tokens=None if is_user else count(details.get("token_count")),
                )
            )
        return str(number)

    def _date(self, value: Any) -> datetime | None:
        moment = parse_date(value)
        if moment is None and is_time_like(value):
            self.bad_dates += 1
        return moment

    def _warnings(self) -> list[str]:
        warnings = []
        if self.hidden:
            warnings.append(
                f"{plural(self.hidden, 'hidden message')} (SillyTavern's system notes, "
                f"comments and hidden lines) {were(self.hidden)} left out."
            )
        if self.narrator:
            warnings.append(
                f"{plural(self.narrator, 'narrator message')} became the character's messages."
            )
        if self.display_text:
            warnings.append(
                f"{plural(self.display_text, 'message')} had a separate display text; the "
                "message text was kept, the display text left out."
            )
        if self.bad_dates:
            warnings.append(
                f"{plural(self.bad_dates, 'date')} could not be read and {were(self.bad_dates)} "
                "left empty."
            )
        return warnings


def _header_name(value: Any) -> str:
    name = loose_short_text(value)
    return "" if name == _UNUSED_NAME else name


def _swipe_count(obj: dict[str, Any]) -> int:
    swipes = obj.get("swipes")
    return max(1, len(swipes)) if isinstance(swipes, list) else 1


def _text(value: Any, subject: str) -> str:
    """Message text; Chub's exports nest it as {"message": ...}."""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        value = value["message"]
    return message_text(value, subject)


def _swipes(obj: dict[str, Any], mes: str, where: str) -> tuple[list[str], int]:
    raw = obj.get("swipes")
    if raw is None or raw == []:
        return [mes], 0
    if not isinstance(raw, list):
        raise ChatFormatError(f"{where}: 'swipes' must be a list, not {json_kind(raw)}.")
    swipes = [_text(item, f"{where}: swipe {index}") for index, item in enumerate(raw, 1)]
    chosen = obj.get("swipe_id")
    if chosen is None:
        chosen = swipes.index(mes) if mes in swipes else 0
    elif isinstance(chosen, bool) or not isinstance(chosen, int):
        raise ChatFormatError(f"{where}: 'swipe_id' must be a number, not {json_kind(chosen)}.")
    elif not 0 <= chosen < len(swipes):
        raise ChatFormatError(
            f"{where}: 'swipe_id' {chosen} does not point at one of its "
            f"{plural(len(swipes), 'swipe')}."
        )
    swipes[chosen] = mes
    return swipes, chosen


def parse_date(value: Any) -> datetime | None:
    """A SillyTavern date in any of its forms, or None when it is none we can read."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_epoch(value)
    if not isinstance(value, str) or len(value) > 100:
        return None
    raw = value.strip()
    if _DIGITS.fullmatch(raw):
        return from_epoch(int(raw))
    try:
        if match := _HUMANIZED_DATE.fullmatch(raw):
            year, month, day, hour, minute, second, millis = match.groups()
            return datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second),
                int((millis or "0").ljust(3, "0")) * 1000, tzinfo=UTC,
            )  # fmt: skip
        if match := _MERIDIEM_DATE.fullmatch(raw):
            month_name, day, year, hour, minute, meridiem = match.groups()
            hour_24 = int(hour) % 12 + (12 if meridiem.lower() == "pm" else 0)
            return datetime(
                int(year), _month(month_name), int(day), hour_24, int(minute), tzinfo=UTC
            )
        if match := _JS_DATE.fullmatch(raw):
            month_name, day, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
            offset = timedelta(hours=int(zone_h), minutes=int(zone_m))
            zone = timezone(-offset if sign == "-" else offset)
            return datetime(
                int(year), _month(month_name), int(day), int(hour), int(minute), int(second),
                tzinfo=zone,
            )  # fmt: skip
        moment = datetime.fromisoformat(raw)
    except ValueError:  # also an unknown month name, or February 30
        return None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _month(name: str) -> int:
    """1-12 for an English month name or its abbreviation ("Jun", "Sept", "June")."""
    lowered = name.lower()
    for number, month in enumerate(_MONTHS, 1):
        if len(lowered) >= 3 and month.startswith(lowered):
            return number
    raise ValueError(name)


# --- Writing ---------------------------------------------------------------------------------


def write_sillytavern(chat: Chat) -> Iterator[bytes]:
    """One chat as a SillyTavern chat file (chunks of UTF-8; one line per chunk).

    The file holds the shown branch, root to `Chat.leaf_key()`, one line per message; at each
    position the shown message's alternatives (its siblings, greetings included) become
    `swipes`, with `swipe_id` pointing at the shown one. What SillyTavern cannot hold is left out:

    - everything below an alternative that is not shown (its replies and their branches:
      SillyTavern keeps one text per swipe, not a conversation under it), and anything below
      the shown leaf;
    - per message: the status (a stopped or failed reply is written as plain text), the finish
      reason, prompt tokens, "edited", the greeting index;
    - per chat: the title, the settings (model, temperature, max tokens) and the card reference.

    Kept: the header's `user_name` and `character_name` (with "User" / the character's name when
    the chat has none), `create_date` (SillyTavern's own form, to the millisecond), every
    line's `mes`, `swipes`, `swipe_id`, `send_date` (ISO 8601, what ST writes since late 2025),
    and per swipe its time and model in `swipe_info`; an assistant message's model and
    completion tokens in `extra.model` / `extra.token_count`. Member messages that have
    alternatives (edited questions) get `swipes` too: SillyTavern keeps them in the file but
    offers swiping only on the character's messages. `chat_metadata` is written empty.
    """
    chat.validate()
    character = chat.character_name or "Assistant"
    user = chat.user_name or "User"
    path = chat.shown_path()
    header: dict[str, Any] = {"user_name": user, "character_name": character}
    created = chat.created_at or next((m.created_at for m in path if m.created_at), None)
    if created is not None:
        header["create_date"] = _humanized(created)
    header["chat_metadata"] = {}
    yield _line(header)
    children = chat.children()
    for message in path:
        alternatives = children[message.parent]
        is_user = message.role == "user"
        line: dict[str, Any] = {
            "name": user if is_user else character,
            "is_user": is_user,
            "is_system": False,
        }
        if message.created_at is not None:
            line["send_date"] = _iso(message.created_at)
        line["mes"] = message.content
        line["extra"] = _extra(message)
        if not is_user or len(alternatives) > 1:
            line["swipe_id"] = alternatives.index(message)
            line["swipes"] = [alternative.content for alternative in alternatives]
            line["swipe_info"] = [_swipe_info(alternative) for alternative in alternatives]
        yield b"\n" + _line(line)


def _extra(message: ChatMessage) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if message.role == "assistant":
        if message.model:
            extra["model"] = message.model
        if message.completion_tokens is not None:
            extra["token_count"] = message.completion_tokens
    return extra


def _swipe_info(message: ChatMessage) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if message.created_at is not None:
        info["send_date"] = _iso(message.created_at)
    info["extra"] = _extra(message)
    return info


def _iso(moment: datetime) -> str:
    """JavaScript's `toISOString()`: UTC, milliseconds, "Z"."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _humanized(moment: datetime) -> str:
    """ST's `humanizedDateTime()` with milliseconds: "2024-07-12@01h31m37s123ms" (UTC)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d@%Hh%Mm%Ss") + f"{utc.microsecond // 1000:03d}ms"


def _line(obj: dict[str, Any]) -> bytes:
    # Compact like JSON.stringify; lines joined by "\n" with no newline at the end, as ST does.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")

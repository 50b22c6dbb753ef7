"""The in-memory character card: the `Card` dataclass, `CardError`, size limits and spec names.

This module (like every `card_*` module) imports nothing from Django, so it can be tested and
reused without a database. The Django model stores each known `Card` field in a column and the
two "unknown" buckets in JSON columns; `Card.to_fields()` / `Card.from_fields()` are the bridge.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

# --- Spec names ------------------------------------------------------------------------------

SPEC_V1 = "chara_card_v1"
"""Our own label for flat V1 cards; V1 files carry no `spec` key at all."""
SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"
DEFAULT_SPEC_VERSION = {SPEC_V1: "", SPEC_V2: "2.0", SPEC_V3: "3.0"}

# Our own data goes under namespaced extension keys, as the V2 spec asks
# (`extensions["serika_web/..."]`). What to put there is the caller's decision.
EXTENSION_NAMESPACE = "serika_web"

# --- Size limits, checked before any heavy parsing --------------------------------------------

MIB = 1024 * 1024
MAX_CARD_FILE_BYTES = 20 * MIB
"""Largest uploaded card file (PNG, JSON or CHARX) we look at."""
MAX_CARD_JSON_BYTES = 5 * MIB
"""Largest card JSON text (after base64 decoding or unzipping). Big lorebooks fit easily."""
MAX_CARD_TEXT_CHUNK_CHARS = (MAX_CARD_JSON_BYTES + 2) // 3 * 4 + 4096
"""Largest PNG text chunk holding a card: base64 of MAX_CARD_JSON_BYTES, plus slack for line
breaks some encoders insert."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest avatar we decode (64 MiB as RGBA). Pillow's own, larger bomb limit stays on too."""
MAX_JSON_NESTING = 100
"""Deepest nesting of objects/lists we keep; real cards stay far below."""
MAX_CHARX_MEMBERS = 10_000
MAX_CHARX_UNCOMPRESSED_BYTES = 100 * MIB
"""Sum of the sizes a CHARX archive *declares* for its members; more looks like a zip bomb."""


class CardError(ValueError):
    """A card file or card data we cannot read. The message is meant for the end user."""


def format_bytes(size: int) -> str:
    """Render a byte limit in plain words for error messages ("5 MiB", "700 KiB")."""
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    return f"{max(1, size // 1024)} KiB"


def check_file_size(data: bytes, limit: int = MAX_CARD_FILE_BYTES, what: str = "The file") -> None:
    """Refuse data over `limit` bytes before anything tries to parse it."""
    if len(data) > limit:
        raise CardError(
            f"{what} is larger than {format_bytes(limit)}, the limit for character cards."
        )


def extension_key(name: str) -> str:
    """Return the namespaced `extensions` key for our own data, e.g. "serika_web/model"."""
    return f"{EXTENSION_NAMESPACE}/{name}"


@dataclass(kw_only=True)
class Card:
    """A character card, normalised from V1, V2 or V3.

    Every field of V2 and V3 `data` is typed here. V3-only optional fields use None for
    "absent from the card" so that exporting gives back exactly what came in.
    `character_book` is the normalised lorebook dict (see `cardspec.lorebook`), which keeps unknown
    keys of the book and of each entry. What we do not understand lives in `unknown_data`
    (keys inside `data`) and `unknown_top_level` (keys beside `spec`/`data`), and is written back
    on export; `unknown_data` also remembers known fields the card gave as `null`, which export
    writes back as `null` while they stay empty, and a `character_version` given as a number,
    written back as that number while the text still spells it.
    """

    # The six V1 fields (inside `data` since V2).
    name: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    # The rest of V2 `data`.
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = field(default_factory=list)
    character_book: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    """Text, as V2 says; a number the card gave (`1.2`) reads as its JSON text ("1.2")."""
    extensions: dict[str, Any] = field(default_factory=dict)
    # V3 additions. None means "not in the card".
    group_only_greetings: list[str] = field(default_factory=list)
    nickname: str | None = None
    assets: list[dict[str, Any]] | None = None
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    creation_date: int | float | str | None = None
    """As the card gave it: Unix seconds, milliseconds or text are all found in the wild."""
    modification_date: int | float | str | None = None
    # Where the card came from: SPEC_V1/V2/V3 and its spec_version as given: text, or a number
    # in some cards ("" for V1).
    spec: str = SPEC_V3
    spec_version: str | int | float = "3.0"
    # What we do not understand, kept for export.
    unknown_data: dict[str, Any] = field(default_factory=dict)
    unknown_top_level: dict[str, Any] = field(default_factory=dict)

    def to_fields(self) -> dict[str, Any]:
        """Return every field as a plain, JSON-friendly dict (a deep copy)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_fields(cls, **fields: Any) -> Card:
        """Build a card from `to_fields()` output (e.g. model columns); missing fields get defaults.

        Values are deep-copied so the card never shares lists or dicts with the caller.
        An unknown field name raises TypeError, like the dataclass constructor.
        """
        return cls(**copy.deepcopy(fields))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all fields, in declaration order (handy for model <-> card copying)."""
        return tuple(f.name for f in dataclasses.fields(cls))

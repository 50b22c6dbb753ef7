"""Card macros: the one expander for ``{{char}}``, ``{{user}}`` and their V1 spellings.

Django-free, because macros are a card-spec rule (V1/V2/V3 define them) and every place that
shows or sends card text -- the prompt, the opening greeting, the home page and the character
page -- must fill them in identically; three copies used to disagree (``<CHAR>``, comments).
"""

from __future__ import annotations

import re

_MACRO_RE = re.compile(r"\{\{(char|user)\}\}|<(bot|char|user)>", re.IGNORECASE)
_COMMENT_RE = re.compile(r"\{\{(?://|comment:).*?\}\}", re.IGNORECASE | re.DOTALL)
_HIDDEN_KEY_RE = re.compile(r"\{\{hidden_key:(.*?)\}\}", re.IGNORECASE | re.DOTALL)


def normalize_newlines(text: str) -> str:
    """Turn ``\\r\\n`` and lone ``\\r`` line endings into ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def expand_macros(
    text: str, *, char_name: str, user_name: str, keep_hidden_keys: bool = False
) -> str:
    """Expand card macros in `text` and drop CBS comments.

    ``{{char}}``, ``<BOT>`` and ``<CHAR>`` become `char_name`; ``{{user}}`` and ``<USER>`` become
    `user_name` (case-insensitive, one pass, so substituted names are never re-expanded).
    ``{{// ...}}`` and ``{{comment: ...}}`` are removed; ``{{hidden_key: ...}}`` is removed too,
    or replaced by its text when `keep_hidden_keys` (that is what lorebook recursion scans).
    Anything else (``{{original}}``, unknown macros) is kept. Line endings become ``\\n``.
    """
    text = normalize_newlines(text)
    if "{{" not in text and "<" not in text:
        # Every macro starts with one of these; most chat turns hold neither, and each send
        # expands the whole history (twice with a lorebook).
        return text
    text = _COMMENT_RE.sub("", text)
    text = _HIDDEN_KEY_RE.sub(lambda m: m.group(1) if keep_hidden_keys else "", text)

    def replace(match: re.Match[str]) -> str:
        which = (match.group(1) or match.group(2)).lower()
        return user_name if which == "user" else char_name

    return _MACRO_RE.sub(replace, text)


def card_text(text: str, character: object, user_name: str) -> str:
    """`text` of `character` as a member reads it: macros filled in for `user_name`.

    ``{{char}}`` is the V3 ``nickname`` when set, else the ``name`` (the same rule the prompt
    applies), so the greeting in a chat and the card page always agree.
    """
    char_name = getattr(character, "nickname", "") or getattr(character, "name", "")
    return expand_macros(text, char_name=char_name, user_name=user_name)

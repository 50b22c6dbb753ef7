"""Form fields for a card's lists and its lorebook, used by the admin and the member's editor.

- `TagsField`: chips, each with a "Remove tag" button, and an "Add tag" box; without JavaScript,
  one comma-separated line.
- `GreetingsField`: one textarea per greeting, all posted under the field's name (read with
  `getlist`, in page order, empty ones dropped), and an empty one for adding without JavaScript.
- `LorebookField`: one fieldset per entry, the book's own settings above them; the rows are read
  and merged onto the entries they showed by `characters/lorebook_editor.py`.

Every widget works without JavaScript; static/js/card_editors.js adds the buttons (add, remove,
move) and keeps the posted names numbered in page order. Their `Media` brings that script and
static/css/card_editors.css, so the admin's change form loads them as the member's page does.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.template import loader
from django.utils.safestring import mark_safe

from cardspec.lorebook import split_keys
from cardspec.macros import normalize_newlines
from cardspec.values import clean_text
from characters.lorebook_editor import (
    NEW_ENTRY,
    OUTLET,
    POSITIONS,
    BookEdit,
    book_settings,
    book_without_entries,
    entry_json,
    entry_row,
    read_post,
)


def _getlist(data: Any, name: str) -> list[str]:
    """Every value posted under `name` (a QueryDict's list, or a plain dict's value in tests)."""
    if hasattr(data, "getlist"):
        return [str(value) for value in data.getlist(name)]
    value = data.get(name)
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, list | tuple) else [str(value)]


def _texts(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


class _EditorWidget(forms.Widget):
    """A widget rendered from templates/characters/widgets/ by the site's template engine (the
    default form renderer looks only in apps' template folders, and these ship with the site's
    templates)."""

    class Media:
        css = {"all": ["css/card_editors.css"]}
        js = ["js/card_editors.js"]

    def _render(self, template_name, context, renderer=None):
        return mark_safe(loader.render_to_string(template_name, context))  # noqa: S308

    def format_value(self, value):
        return value


# --- Tags --------------------------------------------------------------------------------------


class TagsInput(_EditorWidget):
    """A comma-separated line; the script turns it into chips, posting each tag as its own
    value plus ``<name>-chips``, so a tag may then hold a comma."""

    template_name = "characters/widgets/tags.html"

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        tags = _texts(value)
        context["widget"].update(line=", ".join(tags), tags_json=json.dumps(tags))
        return context

    def value_from_datadict(self, data, files, name):
        if f"{name}-chips" in data:
            return [tag for tag in _getlist(data, name) if tag.strip()]
        line = data.get(name)
        return None if line is None else split_keys(str(line))

    def value_omitted_from_data(self, data, files, name):
        return name not in data and f"{name}-chips" not in data


class TagsField(forms.Field):
    """The card's tags: a list of text."""

    widget = TagsInput

    def to_python(self, value):
        return [clean_text(tag) for tag in _texts(value)]

    @staticmethod
    def as_posted(stored: Any) -> list[str]:
        """What an unchanged page posts back for `stored` (the plain line splits commas)."""
        return split_keys(", ".join(_texts(stored)))


# --- Greetings ---------------------------------------------------------------------------------


class GreetingsInput(_EditorWidget):
    """One labelled textarea per greeting ("<item_label> N") and an empty one to add another.
    ``<name>-editor`` tells a page that removed every greeting from a post without the field."""

    template_name = "characters/widgets/greetings.html"
    use_fieldset = True

    def __init__(self, item_label: str = "Greeting", attrs=None):
        super().__init__(attrs)
        self.item_label = item_label

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        base_id = context["widget"]["attrs"].get("id") or f"id_{name}"
        greetings = _texts(value)

        def item(index: int | str, text: str, **flags: bool) -> dict[str, Any]:
            number = index + 1 if isinstance(index, int) else ""
            return {"id": f"{base_id}-{index}", "number": number, "value": text, **flags}

        context["widget"].update(
            base_id=base_id,
            item_label=self.item_label,
            items=[
                *(item(index, text) for index, text in enumerate(greetings)),
                item(len(greetings), "", blank=True),
            ],
            new_item=item("__prefix__", ""),
        )
        return context

    def value_from_datadict(self, data, files, name):
        return [normalize_newlines(text) for text in _getlist(data, name) if text.strip()]

    def value_omitted_from_data(self, data, files, name):
        return name not in data and f"{name}-editor" not in data

    def id_for_label(self, id_):
        return ""  # the field's label names the group; each textarea has its own label


class GreetingsField(forms.Field):
    """Greetings: a list of text, in the order the page shows them."""

    def __init__(self, *, item_label: str, **kwargs):
        kwargs.setdefault("widget", GreetingsInput(item_label=item_label))
        super().__init__(**kwargs)

    def to_python(self, value):
        return [clean_text(text) for text in _texts(value)]

    @staticmethod
    def as_posted(stored: Any) -> list[str]:
        """What an unchanged page posts back for `stored` (browsers send \\r\\n line endings)."""
        return [normalize_newlines(text) for text in _texts(stored) if text.strip()]


# --- The lorebook ------------------------------------------------------------------------------


class LorebookInput(_EditorWidget):
    """The lorebook editor. Its value is the stored book (a dict or None) or, once posted, the
    `BookEdit` read from the post (shown again as posted when the form has errors)."""

    template_name = "characters/widgets/lorebook.html"
    use_fieldset = True

    @staticmethod
    def _row(name: str, base_id: str, index: int | str, row: dict[str, Any], **flags: Any):
        position = row["position"]
        return {
            "prefix": f"{name}-{index}",
            "id": f"{base_id}-{index}",
            "number": index + 1 if isinstance(index, int) else "",
            "title": row["name"].strip() or row["comment"].strip(),
            "fields": row,
            "positions": [
                (value, label)
                for value, label in POSITIONS.items()
                if value != OUTLET or position == OUTLET
            ],
            **flags,
        }

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        base_id = context["widget"]["attrs"].get("id") or f"id_{name}"
        errors: dict[int, str] = {}
        if isinstance(value, BookEdit):
            original, settings, rows = value.original, value.settings, value.rows
            errors = value.row_errors
        else:
            book = value if isinstance(value, dict) else None
            entries = book.get("entries") if book is not None else None
            original, settings = book_without_entries(book), book_settings(book)
            rows = [
                {"original": entry_json(entry), **entry_row(entry)}
                for entry in (entries if isinstance(entries, list) else [])
                if isinstance(entry, dict)
            ]
        new_row = {"original": "", **entry_row(NEW_ENTRY)}
        context["widget"].update(
            base_id=base_id,
            original=original,
            settings=settings,
            rows=[
                self._row(name, base_id, index, row, error=errors.get(index, ""))
                for index, row in enumerate(rows)
            ],
            blank_row=self._row(name, base_id, len(rows), new_row, blank=True, new=True),
            template_row=self._row(name, base_id, "__prefix__", new_row, new=True),
        )
        return context

    def value_from_datadict(self, data, files, name):
        if self.value_omitted_from_data(data, files, name):
            return None
        return read_post(data, name)

    def value_omitted_from_data(self, data, files, name):
        return f"{name}-book" not in data

    def id_for_label(self, id_):
        return ""  # every field of every entry has its own label


MAX_ERRORS_SHOWN = 10  # of a post's lorebook errors: a pasted book can have one per entry


class LorebookField(forms.Field):
    """The card's `character_book`: a dict, or None for no lorebook. A post without the editor
    gives None here; the form keeps the stored book then."""

    widget = LorebookInput

    def to_python(self, value):
        if isinstance(value, BookEdit):
            if len(value.errors) > MAX_ERRORS_SHOWN:
                more = len(value.errors) - MAX_ERRORS_SHOWN
                raise ValidationError([*value.errors[:MAX_ERRORS_SHOWN], f"… and {more:,} more."])
            if value.errors:
                raise ValidationError(value.errors)
            return value.book
        return value

    def has_changed(self, initial, data):
        if data is None:
            return False
        try:
            return self.to_python(data) != initial
        except ValidationError:
            return True

"""What a browser without JavaScript posts for a form on a rendered page, for tests that post a
page's form back as it stands (or with a few fields changed).

`form_data(html, form_id=...)` reads the form's controls in page order: text, hidden and number
inputs with their values, checked boxes, each select's chosen option, textareas (less the first
newline, as the HTML parser drops it); not files, buttons, disabled controls, nor anything inside
a `<template>`. The result maps each name to its values in order, ready for Django's test client
(a list posts the name once per value).
"""

from __future__ import annotations

from html.parser import HTMLParser

_SKIPPED_INPUTS = {"file", "submit", "button", "image", "reset"}


class _FormReader(HTMLParser):
    def __init__(self, form_id: str | None, form_class: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id, self.form_class = form_id, form_class
        self.fields: list[tuple[str, str]] = []
        self.in_form = False
        self.done = False
        self.template_depth = 0
        self.textarea: tuple[str, list[str]] | None = None
        self.select: tuple[str, list[tuple[str, bool]]] | None = None
        self.option: tuple[str | None, bool, list[str]] | None = None

    def _wanted(self, attrs: dict[str, str | None]) -> bool:
        if self.form_id is not None:
            return attrs.get("id") == self.form_id
        if self.form_class is not None:
            return self.form_class in (attrs.get("class") or "").split()
        return True

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag == "template":
            self.template_depth += 1
        if self.done or self.template_depth:
            return
        if tag == "form" and not self.in_form and self._wanted(found):
            self.in_form = True
            return
        if not self.in_form or "disabled" in found or ("name" not in found and tag != "option"):
            return
        name = found.get("name") or ""
        if tag == "input":
            kind = (found.get("type") or "text").lower()
            if kind in _SKIPPED_INPUTS:
                return
            if kind in {"checkbox", "radio"}:
                if "checked" in found:
                    self.fields.append((name, found.get("value") or "on"))
                return
            self.fields.append((name, found.get("value") or ""))
        elif tag == "textarea":
            self.textarea = (name, [])
        elif tag == "select":
            self.select = (name, [])
        elif tag == "option" and self.select is not None:
            self.option = (found.get("value"), "selected" in found, [])

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea[1].append(data)
        elif self.option is not None:
            self.option[2].append(data)

    def handle_endtag(self, tag):
        if tag == "template":
            self.template_depth -= 1
            return
        if self.template_depth or self.done:
            return
        if tag == "form" and self.in_form:
            self.in_form, self.done = False, True
        elif tag == "textarea" and self.textarea is not None:
            name, parts = self.textarea
            text = "".join(parts)
            self.fields.append((name, text[1:] if text.startswith("\n") else text))
            self.textarea = None
        elif tag == "option" and self.option is not None and self.select is not None:
            value, selected, parts = self.option
            self.select[1].append((value if value is not None else "".join(parts), selected))
            self.option = None
        elif tag == "select" and self.select is not None:
            name, options = self.select
            chosen = [value for value, selected in options if selected] or [
                value for value, _ in options[:1]
            ]
            self.fields.extend((name, value) for value in chosen[-1:])
            self.select = None


def form_data(
    html: str, *, form_id: str | None = None, form_class: str | None = None
) -> dict[str, list[str]]:
    """The fields a browser without JavaScript posts for the first form with that id or class
    (or the first form at all)."""
    reader = _FormReader(form_id, form_class)
    reader.feed(html)
    reader.close()
    data: dict[str, list[str]] = {}
    for name, value in reader.fields:
        data.setdefault(name, []).append(value)
    return data

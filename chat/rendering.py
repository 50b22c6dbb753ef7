"""Markdown → sanitized HTML for model text, whole or while it streams.

Model text is untrusted: it is parsed with raw HTML disabled, highlighted with Pygments, and the
result always passes through nh3's allowlist as the last step. Links keep only http/https/mailto
and get rel="noopener noreferrer nofollow"; images are never loaded, they become links.
"""

from __future__ import annotations

import re
from html import escape

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)

_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "span": {"class"},
    "code": {"class"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
}
_URL_SCHEMES = {"http", "https", "mailto"}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""  # markdown-it escapes the code itself
    return highlight(code, lexer, _FORMATTER)


def _image_as_link(self, tokens, idx, options, env) -> str:
    # A remote image would load as soon as the reply is shown and could leak the conversation
    # through its URL; show a link the user may choose to follow instead.
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    return f'<a href="{escape(src)}">{escape("Image: " + alt)}</a>'


_md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight}).enable(
    ["table", "strikethrough"]
)
_md.add_render_rule("image", _image_as_link)


def sanitize(html: str) -> str:
    """The allowlist sanitizer: the last step before any HTML reaches a page or a frame."""
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        # Only text-align survives in table cells; no CSS tricks.
        filter_style_properties={"text-align"},
    )


def render_markdown(text: str) -> str:
    """Render untrusted markdown to safe HTML."""
    if not text:
        return ""
    return sanitize(_md.render(text))


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


class StreamingRenderer:
    """Renders a growing reply block by block, so a long reply costs O(n), not O(n²).

    Text up to the last blank line outside a code fence is "frozen": rendered once and never
    again. The open tail after it is left to the browser to show as plain text until it freezes
    too; the final render of the whole reply replaces everything when the reply ends.
    """

    def __init__(self) -> None:
        self.frozen_upto = 0  # characters of the reply rendered into frozen blocks
        self._frozen_html: list[str] = []
        self._tail = ""  # the text after frozen_upto
        self._line_start = 0  # where the current, unfinished line starts in _tail
        self._fence: str | None = None  # the fence marker of an open code block

    @property
    def frozen_html(self) -> str:
        return "".join(self._frozen_html)

    def feed(self, text: str) -> str:
        """Add text; return the HTML of blocks that froze because of it ("" if none)."""
        scan_from = len(self._tail)
        self._tail += text
        freeze_at = 0
        newline = self._tail.find("\n", scan_from)
        while newline != -1:
            line = self._tail[self._line_start : newline]
            self._line_start = newline + 1
            marker = _FENCE.match(line)
            if self._fence is None:
                if marker:
                    self._fence = marker.group(1)
                elif not line.strip():
                    freeze_at = self._line_start
            elif (
                marker
                and marker.group(1)[0] == self._fence[0]
                and len(marker.group(1)) >= len(self._fence)
            ):
                self._fence = None
            newline = self._tail.find("\n", self._line_start)
        if not freeze_at:
            return ""
        block, self._tail = self._tail[:freeze_at], self._tail[freeze_at:]
        self._line_start -= freeze_at
        self.frozen_upto += freeze_at
        html = render_markdown(block)
        self._frozen_html.append(html)
        return html

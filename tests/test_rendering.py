"""Markdown rendering: safe for untrusted text, and linear while a reply streams."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from serika_web.rendering import StreamingRenderer, render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<a href="javascript:alert(1)">x</a>',
    '<div style="position:fixed;inset:0">overlay</div>',
    "<iframe src=https://evil.example></iframe>",
    '<svg onload="alert(1)"></svg>',
    "```html\n<script>alert(1)</script>\n```",
    '```"><script>alert(1)</script>\nx\n```',
]


class Elements(HTMLParser):
    """Collects the real elements and attributes of an HTML fragment (escaped text is not one)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


# div and button are the code block's toolbar (class and type only, checked below).
SAFE_TAGS = {"p", "a", "pre", "code", "span", "strong", "em", "div", "button"}


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_markdown_cannot_inject_markup(text):
    for tag, attrs in Elements(render_markdown(text)).found:
        assert tag in SAFE_TAGS
        assert not any(name.startswith("on") or name == "style" for name in attrs)
        if tag in ("div", "button"):
            assert set(attrs) <= {"class", "type"}
        href = (attrs.get("href") or "").lower()
        assert not href or href.startswith(("http:", "https:", "mailto:"))


def test_links_keep_only_safe_schemes_and_get_rel():
    html = render_markdown("[a](https://example.com) [b](mailto:x@example.com) [c](ftp://x)")
    assert 'href="https://example.com"' in html
    assert 'href="mailto:x@example.com"' in html
    assert 'href="ftp' not in html
    assert html.count('rel="noopener noreferrer nofollow"') >= 2


def test_images_become_links_and_never_load():
    html = render_markdown("![a cat](https://cats.example/cat.png)")
    assert "<img" not in html
    assert 'href="https://cats.example/cat.png"' in html
    assert "Image: a cat" in html


def test_code_is_highlighted_with_classes_only():
    html = render_markdown("```python\nprint('hi')\n```")
    assert '<span class="nb">print</span>' in html
    assert "style=" not in html


def test_tables_and_strikethrough_render():
    html = render_markdown("| a | b |\n|---|--:|\n| 1 | 2 |\n\n~~gone~~")
    assert "<table>" in html and "<s>gone</s>" in html.replace("<del>", "<s>").replace(
        "</del>", "</s>"
    )


def feed_all(renderer: StreamingRenderer, text: str, step: int) -> str:
    html = ""
    for i in range(0, len(text), step):
        html += renderer.feed(text[i : i + step])
    return html


def test_frozen_blocks_render_once_and_match_the_text_before_the_freeze_point():
    text = "Para one.\n\nPara **two**.\n\n```py\nx = 1\n\ny = 2\n```\n\nTail text"
    renderer = StreamingRenderer()
    html = feed_all(renderer, text, 3)
    assert html == renderer.frozen_html
    assert text[: renderer.frozen_upto].endswith("```\n\n")
    assert "Tail text" not in html
    assert "<strong>two</strong>" in html
    # A blank line inside a code fence does not split the block.
    assert html.count("<pre>") == 1


def test_streaming_render_work_grows_linearly_with_the_reply(monkeypatch):
    rendered_chars = []
    import serika_web.rendering as rendering

    real = rendering.render_markdown

    def counting(text):
        rendered_chars.append(len(text))
        return real(text)

    monkeypatch.setattr(rendering, "render_markdown", counting)
    paragraph = "word " * 40 + "\n\n"
    for blocks in (50, 1000):
        rendered_chars.clear()
        feed_all(StreamingRenderer(), paragraph * blocks, 7)
        # Every character is rendered exactly once while streaming.
        assert sum(rendered_chars) == len(paragraph) * blocks


def test_fenced_code_gets_a_copy_button_and_its_language_label():
    html = render_markdown("```python\nx = 1\n```")
    assert '<span class="code-lang">python</span>' in html
    assert '<button type="button" class="copy-code">Copy code</button>' in html
    assert html.index("Copy code") < html.index("<pre>")


def test_a_hostile_info_string_is_escaped_in_the_language_label():
    html = render_markdown('```"><script>alert(1)</script> onclick=x\nx\n```')
    assert "<script" not in html
    assert "onclick" not in html.split("</span>")[0]
    assert '<span class="code-lang">"&gt;&lt;script&gt;alert(1)&lt;/script&gt;</span>' in html
    assert html.count("<button") == 1


def test_code_without_a_language_has_a_button_but_no_label_and_indented_code_has_neither():
    plain = render_markdown("```\nx\n```")
    assert "Copy code" in plain
    assert "code-lang" not in plain
    assert "Copy code" not in render_markdown("    indented code")


def test_model_text_cannot_make_its_own_buttons():
    html = render_markdown('<button onclick="steal()">Copy code</button>')
    assert "<button" not in html

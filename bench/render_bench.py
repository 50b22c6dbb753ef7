"""Server-side render CPU of a streaming reply: 1,000 vs 20,000 tokens.

Each reply is fed token by token through `serika_web.rendering.StreamingRenderer.feed` (what the
generation does when it forwards each token at once: the most feed calls a reply can cost), then
rendered whole by `render_markdown` (what `finish_reply` stores). O(n) means the 20 times longer
reply costs about 20 times the CPU; the target is at most 25 times.

    python -m bench.render_bench   (needs Django settings: run from bench.run, or DEBUG=true)
"""

from __future__ import annotations

import json
import os
import time

from bench.common import reply_tokens


def _code_tokens(n: int) -> list[str]:
    """One long fenced code block: the tail never freezes until the fence closes."""
    body = [f"    value_{i} = compute({i})\n" if i % 8 == 7 else f" x{i}" for i in range(n - 2)]
    return ["```python\n", *body, "\n```\n\n"]


def _no_break_tokens(n: int) -> list[str]:
    """Prose with no blank line at all: nothing freezes before the end."""
    return [t.replace("\n\n", " ") for t in reply_tokens(n)]


KINDS = {"prose": reply_tokens, "code_fence": _code_tokens, "no_blank_line": _no_break_tokens}


def _render_cpu(tokens: list[str]) -> float:
    from serika_web.rendering import StreamingRenderer, render_markdown

    start = time.process_time()
    renderer = StreamingRenderer()
    for token in tokens:
        renderer.feed(token)
    render_markdown("".join(tokens))
    return time.process_time() - start


def run(small: int = 1000, large: int = 20000, repeats: int = 3) -> dict:
    _render_cpu(reply_tokens(200))  # warm caches (lexers, regexes)
    out = {}
    for kind, make in KINDS.items():
        # The least of several runs: on a shared machine noise only ever adds, and the short
        # reply (a few ms) would otherwise swing the ratio by a third from run to run.
        a = min(_render_cpu(make(small)) for _ in range(repeats * 3))
        b = min(_render_cpu(make(large)) for _ in range(repeats))
        out[kind] = {
            f"cpu_ms_{small}": round(a * 1000, 2),
            f"cpu_ms_{large}": round(b * 1000, 2),
            "ratio": round(b / a, 2),
            "target_ratio": 25,
            "met": b / a <= 25,
        }
    return out


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    print(json.dumps(run(), indent=1))

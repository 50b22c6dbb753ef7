"""The data of server-sent events, read from text as it arrives (the WHATWG event-stream rules).

httpx-sse's public API (`aiter_sse`) reads the response itself, which hides the network reads
the relay batches on, and its decoders are private. The part of the format a completion stream
uses is small: lines ending in CR, LF or CRLF; `:` comments; `data` fields joined by newlines;
a blank line ends an event. Other fields (`event`, `id`, `retry`) carry nothing for us.
tests/test_sse.py checks this against httpx-sse's public reader on every chunking.
"""

from __future__ import annotations

import re

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDataReader:
    """Feed it decoded text in pieces; it returns the data of each event completed so far."""

    def __init__(self) -> None:
        self._partial_line = ""
        self._data: list[str] = []
        self._skip_lf = False

    def feed(self, text: str) -> list[str]:
        """The `data` of every event that `text` completes, in order (empty events skipped)."""
        if not text:  # e.g. a read that ended inside a UTF-8 sequence
            return []
        if self._skip_lf and text[:1] == "\n":
            text = text[1:]
        # A CR ending this piece ends a line now (the event must not wait for the next read);
        # if the next piece starts with LF, that LF was the second half of a CRLF.
        self._skip_lf = text[-1:] == "\r"
        lines = _LINE_END.split(self._partial_line + text)
        self._partial_line = lines.pop()
        events: list[str] = []
        for line in lines:
            if not line:
                data = "\n".join(self._data)
                self._data = []
                if data:
                    events.append(data)
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value[:1] == " " else value)
        return events

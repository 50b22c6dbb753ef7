"""chat.sse against httpx-sse's public reader, on every way the network may cut the bytes."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource

from chat.sse import SSEDataReader

STREAMS = [
    'data: {"a": 1}\n\ndata: [DONE]\n\n',
    'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n',
    "data: one\rdata: two\r\r",
    ": PROCESSING\n\n: keep-alive\ndata: x\n\n",
    "data:no-space\n\ndata:  two spaces\n\n",
    "data: first\ndata: second\n\n",
    "event: ping\nid: 7\nretry: 10\ndata: with fields\n\n",
    "data\n\ndata:\n\n",
    "data: é ü 中文 \u2028 line separator kept\n\n",
    "field-without-colon\ndata: after\n\n",
    "data: no blank line at the end",
    "\n\n\ndata: leading blank lines\n\n",
]


def reference(stream: str) -> list[str]:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=stream.encode()
    )
    return [event.data for event in EventSource(response).iter_sse() if event.data]


def read_in_pieces(stream: str, cuts: list[int]) -> list[str]:
    reader, events, start = SSEDataReader(), [], 0
    for cut in [*cuts, len(stream)]:
        events.extend(reader.feed(stream[start:cut]))
        start = cut
    return events


@pytest.mark.parametrize("stream", STREAMS)
def test_whole_stream_matches_httpx_sse(stream: str) -> None:
    assert read_in_pieces(stream, []) == reference(stream)


@pytest.mark.parametrize("stream", STREAMS)
def test_every_single_cut_matches_httpx_sse(stream: str) -> None:
    expected = reference(stream)
    for cut in range(1, len(stream)):
        assert read_in_pieces(stream, [cut]) == expected, cut


@pytest.mark.parametrize("stream", STREAMS)
def test_one_character_at_a_time_matches_httpx_sse(stream: str) -> None:
    assert read_in_pieces(stream, list(range(1, len(stream)))) == reference(stream)


@pytest.mark.parametrize("stream", STREAMS)
def test_empty_pieces_between_characters_change_nothing(stream: str) -> None:
    cuts = [cut for position in range(1, len(stream)) for cut in (position, position)]
    assert read_in_pieces(stream, cuts) == reference(stream)


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    reader = SSEDataReader()
    assert reader.feed("data: a\n") == []
    assert reader.feed("\ndata: b\n\ndata: c") == ["a", "b"]
    assert reader.feed("\r") == []
    assert reader.feed("") == []
    assert reader.feed("\n\r\n") == ["c"]

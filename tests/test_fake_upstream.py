"""Checks of the fake upstream itself, with a plain httpx + httpx_sse client (no Django)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.fake_upstream import DEFAULT_MODELS, FakeUpstream, Reply

BODY = {
    "model": "serika/test-model",
    "messages": [{"role": "user", "content": "Say hello to the team, please."}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def client(upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=upstream.base_url,
        headers={"Authorization": "Bearer test-key"},
        timeout=10,
    ) as c:
        yield c


async def collect(client: httpx.AsyncClient, body: dict | None = None) -> list[ServerSentEvent]:
    events = []
    async with aconnect_sse(client, "POST", "/chat/completions", json=body or BODY) as source:
        assert source.response.status_code == 200
        async for event in source.aiter_sse():
            events.append(event)
    return events


def chunks(events: list[ServerSentEvent]) -> list[dict]:
    return [json.loads(e.data) for e in events if e.data != "[DONE]"]


def text_of(events: list[ServerSentEvent]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks(events) if c["choices"]
    )


async def test_happy_path_with_usage_and_done(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    async with aconnect_sse(client, "POST", "/chat/completions", json=BODY) as source:
        response = source.response
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        events = [e async for e in source.aiter_sse()]

    assert events[-1].data == "[DONE]"
    data = chunks(events)
    first = data[0]
    assert first["id"] == "chatcmpl-fake"
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == "serika/test-model"
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert text_of(events) == "Hello, world!"
    content = [c for c in data[1:] if c["choices"]]
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "stop"]
    usage = data[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 4
    assert (
        usage["usage"]["total_tokens"]
        == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )

    [request] = await upstream.await_requests(1)
    assert request.method == "POST"
    assert request.path == "/api/openai/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["accept"] == "text/event-stream"
    assert request.json == BODY
    assert upstream.client_disconnects == 0


async def test_no_usage_chunk_unless_asked(client: httpx.AsyncClient) -> None:
    body = {k: v for k, v in BODY.items() if k != "stream_options"}
    events = await collect(client, body)
    assert all(c["choices"] for c in chunks(events))
    assert events[-1].data == "[DONE]"


async def test_wrong_key_gets_401_and_keeps_the_queue(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=["queued"]))
    response = await client.post(
        "/chat/completions", json=BODY, headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    missing = await client.post("/chat/completions", json=BODY, headers={"Authorization": ""})
    assert missing.status_code == 401
    assert text_of(await collect(client)) == "queued"


async def test_unknown_path_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/embeddings")
    assert response.status_code == 404
    assert "error" in response.json()


async def test_models_are_listed_and_can_fail(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    listed = await client.get("/models")
    assert [m["id"] for m in listed.json()["data"]] == list(DEFAULT_MODELS)
    upstream.models_status = 503
    assert (await client.get("/models")).status_code == 503


async def test_429_with_retry_after(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.enqueue(
        Reply(status=429, headers={"Retry-After": "7"}, error_message="Slow down, please.")
    )
    response = await client.post("/chat/completions", json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    error = response.json()["error"]
    assert error["message"] == "Slow down, please."
    assert error["code"] == 429
    assert error["type"]
    # The connection stays usable after an error response.
    assert text_of(await collect(client)) == "Hello, world!"


async def test_in_band_error_ends_without_done(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(error_after=2, error_message="Provider went away."))
    events = await collect(client)
    assert all(e.data != "[DONE]" for e in events)
    assert text_of(events) == "Hello,"
    last = chunks(events)[-1]
    assert last["error"]["message"] == "Provider went away."
    assert last["choices"][0]["finish_reason"] == "error"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks(events)[:-1])


async def test_reset_is_a_transport_error(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=["tok "], repeat=50, reset_after=3))
    seen: list[ServerSentEvent] = []
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        async with aconnect_sse(client, "POST", "/chat/completions", json=BODY) as source:
            async for event in source.aiter_sse():
                seen.append(event)
    assert text_of(seen) == "tok tok tok "
    assert upstream.client_disconnects == 0
    # The pool recovers on a fresh connection.
    assert text_of(await collect(client)) == "Hello, world!"


async def test_end_after_is_a_clean_truncated_stream(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(end_after=2))
    events = await collect(client)
    assert text_of(events) == "Hello,"
    assert all(e.data != "[DONE]" for e in events)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks(events))


async def test_no_finish_reason_and_no_done(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(finish_reason=None, send_done=False, usage=False))
    events = await collect(client)
    assert text_of(events) == "Hello, world!"
    assert all(e.data != "[DONE]" for e in events)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks(events))


async def test_empty_reply_puts_finish_reason_on_an_empty_delta(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=[], finish_reason="length"))
    data = chunks(await collect(client))
    assert data[1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]


@pytest.mark.parametrize("crlf", [False, True])
async def test_split_every_byte_keeps_utf8_intact(
    upstream: FakeUpstream, client: httpx.AsyncClient, crlf: bool
) -> None:
    tokens = ["héllo", " ", "世界", " ", "🙂"]
    upstream.enqueue(Reply(tokens=tokens, split_every=1, crlf=crlf))
    pieces: list[bytes] = []
    async with client.stream("POST", "/chat/completions", json=BODY) as response:
        async for piece in response.aiter_raw():
            pieces.append(piece)
    assert max(len(p) for p in pieces) == 1  # every byte came as its own piece
    raw = b"".join(pieces)
    assert "世界".encode() in raw  # raw UTF-8 on the wire, not \u escapes

    upstream.enqueue(Reply(tokens=tokens, split_every=1, crlf=crlf))
    events = await collect(client)
    assert text_of(events) == "héllo 世界 🙂"
    assert events[-1].data == "[DONE]"


async def test_split_pieces_straddle_events(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=["ab", "ç", "🙂"], repeat=5, split_every=7, crlf=True))
    events = await collect(client)
    assert text_of(events) == "abç🙂" * 5
    assert events[-1].data == "[DONE]"


async def test_crlf_line_endings(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.enqueue(Reply(crlf=True, keepalive_comments=1))
    async with client.stream("POST", "/chat/completions", json=BODY) as response:
        raw = await response.aread()
    assert raw.endswith(b"data: [DONE]\r\n\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert raw.startswith(b": OPENROUTER PROCESSING\r\n\r\ndata: {")

    upstream.enqueue(Reply(crlf=True))
    events = await collect(client)
    assert text_of(events) == "Hello, world!"
    assert events[-1].data == "[DONE]"


async def test_keepalive_comments_come_before_the_first_token(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(keepalive_comments=3, keepalive_interval=0.1))
    started = time.monotonic()
    async with client.stream("POST", "/chat/completions", json=BODY) as response:
        headers_at = time.monotonic() - started
        raw = await response.aread()
    elapsed = time.monotonic() - started
    assert headers_at < 0.25  # headers are not held back by the keep-alives
    assert elapsed >= 0.29
    assert raw.count(b": OPENROUTER PROCESSING\n\n") == 3
    assert raw.index(b": OPENROUTER PROCESSING") < raw.index(b"data:")

    upstream.enqueue(Reply(keepalive_comments=3, keepalive_interval=0.01))
    events = await collect(client)  # comments are not events
    assert text_of(events) == "Hello, world!"


async def test_malformed_line_then_the_stream_goes_on(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(malformed_after=2))
    events = await collect(client)
    data = [e.data for e in events]
    assert data[3] == "{not json"  # role, Hello, ",", then the bad one
    good = [e for e in events if e.data != "{not json"]
    assert text_of(good) == "Hello, world!"
    assert data[-1] == "[DONE]"


async def test_first_delay_and_gap(upstream: FakeUpstream, client: httpx.AsyncClient) -> None:
    upstream.enqueue(Reply(first_delay=0.3, gap=0.05))
    started = time.monotonic()
    arrivals = []
    async with aconnect_sse(client, "POST", "/chat/completions", json=BODY) as source:
        async for _event in source.aiter_sse():
            arrivals.append(time.monotonic() - started)
    assert arrivals[0] < 0.25  # the role chunk is not delayed
    assert arrivals[1] >= 0.29  # the first token is
    # Three gaps of 0.05 s; the fake keeps an absolute schedule, so a late first token on a busy
    # machine shortens the gaps after it.
    assert arrivals[4] - arrivals[1] >= 0.1


async def test_client_disconnect_mid_stream_is_counted(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=["x"], repeat=10_000, gap=0.005))
    async with aconnect_sse(client, "POST", "/chat/completions", json=BODY) as source:
        seen = 0
        async for _event in source.aiter_sse():
            seen += 1
            if seen == 3:
                break  # leaving the block closes the connection mid-stream
    assert await upstream.await_client_disconnects(1, timeout=5) == 1
    await wait_until(lambda: upstream.active_streams == 0)


async def test_client_leaving_a_stalled_stream_is_counted(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(stall_after=2))
    seen: list[ServerSentEvent] = []
    with pytest.raises(httpx.ReadTimeout):
        async with aconnect_sse(
            client, "POST", "/chat/completions", json=BODY, timeout=httpx.Timeout(10, read=0.3)
        ) as source:
            async for event in source.aiter_sse():
                seen.append(event)
    assert text_of(seen) == "Hello,"
    assert upstream.active_streams in (0, 1)
    await upstream.await_client_disconnects(1, timeout=5)
    await wait_until(lambda: upstream.active_streams == 0)
    # Completed streams are not counted.
    await collect(client)
    assert upstream.client_disconnects == 1


async def test_sync_waiters_work_from_another_thread(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    waiter = asyncio.create_task(asyncio.to_thread(upstream.wait_for_requests, 2, 5.0))
    await collect(client)
    await collect(client)
    assert len(await waiter) == 2
    with pytest.raises(TimeoutError):
        upstream.wait_for_requests(3, timeout=0.05)
    with pytest.raises(TimeoutError):
        await upstream.await_client_disconnects(1, timeout=0.05)


async def test_keep_alive_reuses_one_connection(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    await collect(client)
    await collect(client)
    response = await client.post("/chat/completions", json={**BODY, "stream": False})
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    first, second, third = await upstream.await_requests(3)
    assert first.connection_id == second.connection_id == third.connection_id

    # Connection: close is honoured; the next request needs a new connection.
    async with aconnect_sse(
        client, "POST", "/chat/completions", json=BODY, headers={"Connection": "close"}
    ) as source:
        assert source.response.headers["connection"] == "close"
        assert text_of([e async for e in source.aiter_sse()]) == "Hello, world!"
    await collect(client)
    requests = await upstream.await_requests(5)
    assert requests[3].connection_id == first.connection_id
    assert requests[4].connection_id != first.connection_id


async def test_replies_are_consumed_in_order_then_default(
    upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(Reply(tokens=["one"]), Reply(tokens=["two"]))
    upstream.default = Reply(tokens=["default"])
    got = [text_of(await collect(client)) for _ in range(3)]
    assert got == ["one", "two", "default"]


async def test_many_concurrent_streams(upstream: FakeUpstream) -> None:
    upstream.default = Reply(tokens=["t"], repeat=50, gap=0.001)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(
        base_url=upstream.base_url,
        headers={"Authorization": "Bearer test-key"},
        limits=limits,
        timeout=20,
    ) as c:
        results = await asyncio.gather(*(collect(c) for _ in range(100)))
    assert all(text_of(events) == "t" * 50 for events in results)
    assert upstream.client_disconnects == 0
    assert upstream.active_streams == 0


async def test_stop_ends_open_streams_promptly() -> None:
    upstream = FakeUpstream(api_key=None).start()
    upstream.enqueue(Reply(stall_after=1))
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=10) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with aconnect_sse(c, "POST", "/chat/completions", json=BODY) as source:
                async for event in source.aiter_sse():
                    if json.loads(event.data)["choices"][0]["delta"].get("content"):
                        started = time.monotonic()
                        await asyncio.to_thread(upstream.stop)
                        assert time.monotonic() - started < 5
    assert upstream.client_disconnects == 0
    upstream.stop()  # idempotent


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)

"""A local fake Serika/OpenAI Chat Completions server for tests and benchmarks.

It speaks real HTTP/1.1 (keep-alive, chunked transfer encoding) and SSE over a real TCP socket on
127.0.0.1, from its own thread with its own event loop, so in-process async tests and app servers
running in subprocesses can both use it. Standard library only, so that bytes, chunking, resets
and timing are exactly what a `Reply` asks for.

    with FakeUpstream() as up:  # api key "test-key"
        up.enqueue(Reply(tokens=["Hi", "!"], gap=0.01), Reply(status=429, headers={"Retry-After": "7"}))
        ...  # point the app at up.base_url
        up.wait_for_requests(2)

Replies are consumed one per chat-completions request, in order; `default` serves the rest.
Requests refused before that (401, 404, 400) do not consume a reply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import itertools
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

KEEPALIVE_COMMENT = b": OPENROUTER PROCESSING"
MALFORMED_EVENT = b"data: {not json"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_PENDING_BYTES = 1024 * 1024  # bytes a client may send while its response streams
MAX_REQUESTS_PER_CONNECTION = 100_000
IDLE_TIMEOUT = 60.0  # seconds a kept-alive connection may wait for its next request
STALL_LIMIT = 120.0  # seconds a stalled stream waits for the client to go away
READ_SIZE = 64 * 1024

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    411: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


# The fake's `GET /models` list unless a test sets another.
DEFAULT_MODELS = ("fake/model-a", "fake/model-b", "openai/gpt-4o-mini")


@dataclass
class Reply:
    """What the fake does for one chat-completions request.

    The `*_after` cuts count content chunks over the whole (repeated) token list. When several
    cuts are set the smallest wins (ties: error, reset, stall, end). A cut stream carries no
    finish_reason, no usage chunk and no [DONE].
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    first_delay: float = 0.0  # seconds before the first content chunk (after the role chunk)
    gap: float = 0.0  # seconds between content chunks
    # ": OPENROUTER PROCESSING" comments sent right after the headers, before the role chunk,
    # each followed by a pause of keepalive_interval seconds.
    keepalive_comments: int = 0
    keepalive_interval: float = 0.0
    finish_reason: str | None = "stop"  # None: no chunk carries a finish_reason
    send_done: bool = True  # send "data: [DONE]"
    # Seconds between [DONE] and the end of the body (0: the end goes out with [DONE]).
    end_after_done: float = 0.0
    usage: bool = True  # usage chunk, when the request asked stream_options.include_usage
    status: int = 200  # non-200: a JSON error body instead of a stream
    error_message: str = "The fake upstream failed on purpose."
    error_code: int | str | None = None  # default: the status (HTTP errors), 502 (in-band)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    error_after: int | None = (
        None  # in-band error event after N content chunks, then end, no [DONE]
    )
    reset_after: int | None = None  # TCP RST (SO_LINGER 0) after N content chunks
    stall_after: int | None = None  # silence after N content chunks until the client leaves
    end_after: int | None = None  # clean end of the body after N content chunks, nothing else
    malformed_after: int | None = None  # one "data: {not json" event after N chunks, then go on
    # Write the body in pieces of this many bytes, each its own HTTP chunk, write and drain, so
    # events, "data:" prefixes and UTF-8 characters arrive split (httpx yields one piece per
    # chunk). split_delay > 0 pauses after each piece, so pieces also travel in separate packets.
    split_every: int | None = None
    split_delay: float = 0.0
    crlf: bool = False  # \r\n line endings in the SSE body
    repeat: int = 1  # send `tokens` this many times


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body, or None
    body: bytes = b""
    connection_id: int = 0  # requests with the same id arrived on the same TCP connection


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes


class _Conn:
    __slots__ = ("buf", "id", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, id_: int):
        self.reader = reader
        self.writer = writer
        self.id = id_
        self.buf = bytearray()  # received, not yet parsed


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class _Body:
    """Writes an SSE body as HTTP/1.1 chunks: one chunk and one drain per event, or, with
    `split`, a continuous byte stream re-cut into `split`-byte chunks with a pause after each."""

    __slots__ = ("delay", "pending", "split", "writer")

    def __init__(self, writer: asyncio.StreamWriter, split: int | None, delay: float) -> None:
        self.writer = writer
        self.split = split if split and split > 0 else None
        self.delay = delay
        self.pending = bytearray()

    async def send(self, data: bytes) -> None:
        if self.split is None:
            self.writer.write(_chunk(data))
            await self.writer.drain()
            return
        self.pending += data
        while len(self.pending) >= self.split:  # shrinks every turn
            await self._piece()

    async def flush(self) -> None:
        """Put everything sent so far on the wire (before a pause, a stall or a reset)."""
        while self.pending:
            await self._piece()

    async def finish(self, data: bytes = b"") -> None:
        """Send `data` and the terminating chunk; the last piece goes out with the terminator."""
        if self.split is None:
            self.writer.write((_chunk(data) if data else b"") + b"0\r\n\r\n")
        else:
            self.pending += data
            while len(self.pending) > self.split:
                await self._piece()
            tail = bytes(self.pending)
            self.pending.clear()
            self.writer.write((_chunk(tail) if tail else b"") + b"0\r\n\r\n")
        await self.writer.drain()

    async def _piece(self) -> None:
        assert self.split is not None
        piece = bytes(self.pending[: self.split])
        del self.pending[: self.split]
        self.writer.write(_chunk(piece))
        await self.writer.drain()
        await asyncio.sleep(self.delay)  # 0: just let other streams run


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _error_body(status: int, message: str, code: int | str | None = None) -> bytes:
    error = {
        "message": message,
        "type": _ERROR_TYPES.get(status, "api_error"),
        "code": status if code is None else code,
    }
    return json.dumps({"error": error}).encode()


def _response_head(
    status: int, headers: list[tuple[str, str]], extra: dict[str, str], keep_alive: bool
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _full_response(
    status: int, body: bytes, keep_alive: bool, extra: dict[str, str] | None = None
) -> bytes:
    head = _response_head(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        extra or {},
        keep_alive,
    )
    return head + body


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    return max(1, chars // 4) if chars else 0


class FakeUpstream:
    """The fake server. `start()` (or `with`) runs it in a daemon thread; `stop()` ends it."""

    def __init__(
        self,
        api_key: str | None = "test-key",
        base_path: str = "/api/openai/v1",
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.api_key = api_key
        self.ssl_context = ssl_context  # serve HTTPS, as the real API does
        self.base_path = "/" + base_path.strip("/")
        self.chat_path = self.base_path + "/chat/completions"
        self.models_path = self.base_path + "/models"
        # What `GET /models` answers: these ids after `models_delay` s, or `models_status`.
        self.models = list(DEFAULT_MODELS)
        self.models_delay = 0.0
        self.models_status = 200
        self.host = "127.0.0.1"
        self.port = 0
        self.base_url = ""
        self.default = Reply()
        self.stall_limit = STALL_LIMIT
        self.requests: list[RecordedRequest] = []
        self.client_disconnects = 0
        self.active_streams = 0
        self._queue: collections.deque[Reply] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start within 10 s")
        if self._start_error is not None:
            self._thread = None
            raise RuntimeError("fake upstream failed to start") from self._start_error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve_connection, self.host, 0, backlog=2048, ssl=self.ssl_context
                )
            )
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        self.base_url = f"{scheme}://{self.host}:{self.port}{self.base_path}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._conn_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- test-facing API (any thread) ------------------------------------------------------

    def reset(self) -> None:
        """Forget queued replies, recorded requests and counters (between tests)."""
        with self._cond:
            self._queue.clear()
            self.requests.clear()
            self.client_disconnects = 0
            self.default = Reply()
            self.models = list(DEFAULT_MODELS)
            self.models_delay = 0.0
            self.models_status = 200

    def enqueue(self, *replies: Reply) -> None:
        with self._cond:
            self._queue.extend(replies)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"expected {n} requests, got {len(self.requests)}")
            return list(self.requests)

    async def await_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        await self._poll(lambda: len(self.requests) >= n, timeout, f"{n} requests")
        with self._cond:
            return list(self.requests)

    def wait_for_client_disconnects(self, n: int, timeout: float = 5.0) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self.client_disconnects >= n, timeout):
                raise TimeoutError(
                    f"expected {n} client disconnects, got {self.client_disconnects}"
                )
            return self.client_disconnects

    async def await_client_disconnects(self, n: int, timeout: float = 5.0) -> int:
        await self._poll(lambda: self.client_disconnects >= n, timeout, f"{n} disconnects")
        return self.client_disconnects

    async def _poll(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"fake upstream: timed out waiting for {what}")
            await asyncio.sleep(0.005)

    # -- HTTP ------------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        conn = _Conn(reader, writer, next(self._conn_ids))
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                try:
                    request = await asyncio.wait_for(self._read_request(conn), IDLE_TIMEOUT)
                except _BadRequest as exc:
                    writer.write(
                        _full_response(exc.status, _error_body(exc.status, exc.message), False)
                    )
                    await writer.drain()
                    break
                if request is None or not await self._respond(conn, request):
                    break
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            self._conn_tasks.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except Exception:  # a client that stopped reading, or one already reset
                writer.transport.abort()

    async def _read_more(self, conn: _Conn, size: int = READ_SIZE) -> bool:
        data = await conn.reader.read(size)
        conn.buf += data
        return bool(data)

    async def _read_request(self, conn: _Conn) -> _Request | None:
        buf = conn.buf
        while True:  # bounded: every turn adds bytes, and the header size is capped
            while buf[:2] == b"\r\n":  # tolerate stray CRLFs between requests
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEADER_BYTES:
                raise _BadRequest(431, "Request headers too large")
            if not await self._read_more(conn):
                return None
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "Malformed request line")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, "Malformed header line")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if "transfer-encoding" in headers:
            raise _BadRequest(411, "Send request bodies with Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "Bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BadRequest(413, "Request body too large")
        while len(buf) < length:  # bounded by length
            if not await self._read_more(conn, max(READ_SIZE, length - len(buf))):
                return None
        body = bytes(buf[:length])
        del buf[:length]
        return _Request(parts[0], parts[1], parts[2], headers, body)

    async def _respond(self, conn: _Conn, request: _Request) -> bool:
        """Answer one request; True if the connection stays open for the next one."""
        connection = request.headers.get("connection", "").lower()
        if request.version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        with self._cond:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    request.headers,
                    body,
                    request.body,
                    conn.id,
                )
            )
            self._cond.notify_all()

        writer = conn.writer
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path == self.models_path:
            with self._cond:
                models, delay, status = list(self.models), self.models_delay, self.models_status
            await asyncio.sleep(delay)
            if status != 200:
                writer.write(_full_response(status, _error_body(status, "models"), keep_alive))
            else:
                listing = {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
                writer.write(_full_response(200, json.dumps(listing).encode(), keep_alive))
        elif request.method != "POST" or path != self.chat_path:
            message = f"No route for {request.method} {path}"
            writer.write(_full_response(404, _error_body(404, message), keep_alive))
        elif self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            message = "Incorrect API key provided (fake upstream)."
            writer.write(_full_response(401, _error_body(401, message), keep_alive))
        elif not isinstance(body, dict):
            message = "The request body must be a JSON object."
            writer.write(_full_response(400, _error_body(400, message), keep_alive))
        else:
            with self._cond:
                reply = self._queue.popleft() if self._queue else self.default
            if reply.status != 200:
                error = _error_body(reply.status, reply.error_message, reply.error_code)
                writer.write(_full_response(reply.status, error, keep_alive, reply.headers))
            elif body.get("stream") is True:
                return await self._run_stream(conn, body, reply, keep_alive)
            else:
                writer.write(
                    _full_response(200, self._completion(body, reply), keep_alive, reply.headers)
                )
        await writer.drain()
        return keep_alive

    def _completion(self, body: dict[str, Any], reply: Reply) -> bytes:
        text = "".join(reply.tokens) * max(reply.repeat, 0)
        prompt = _prompt_tokens(body)
        completion = len(reply.tokens) * max(reply.repeat, 0)
        return json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": reply.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
            ensure_ascii=False,
        ).encode()

    # -- streaming -------------------------------------------------------------------------

    async def _run_stream(
        self, conn: _Conn, body: dict[str, Any], reply: Reply, keep_alive: bool
    ) -> bool:
        """Stream while watching the socket, so a client leaving is noticed even mid-stall."""
        with self._cond:
            self.active_streams += 1
        stream = asyncio.create_task(self._stream(conn, body, reply, keep_alive))
        watch = asyncio.create_task(self._watch(conn))
        outcome = "cancelled"
        try:
            await asyncio.wait((stream, watch), return_when=asyncio.FIRST_COMPLETED)
            if stream.done():
                try:
                    outcome = stream.result()
                except (ConnectionError, OSError):  # a write failed: the client is gone
                    outcome = "gone"
            else:
                outcome = "gone"  # the client closed its side
        finally:
            stream.cancel()
            watch.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            with self._cond:
                self.active_streams -= 1
                if outcome == "gone":
                    self.client_disconnects += 1
                self._cond.notify_all()
        return outcome == "done" and keep_alive

    async def _watch(self, conn: _Conn) -> None:
        """Return when the client closes the connection; keep whatever it sends meanwhile."""
        try:
            while len(conn.buf) < MAX_PENDING_BYTES:  # bounded by the cap (or EOF)
                if not await self._read_more(conn):
                    return
        except (ConnectionError, OSError):
            return
        await asyncio.Future()  # over the cap: stop reading, wait to be cancelled

    async def _stream(
        self, conn: _Conn, body: dict[str, Any], reply: Reply, keep_alive: bool
    ) -> str:
        """Write one SSE response. Returns "done" (complete response), "reset" or "close"."""
        writer = conn.writer
        end = b"\r\n\r\n" if reply.crlf else b"\n\n"
        model = body.get("model") or "fake-model"
        data_head = (
            b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":%d,"model":%b'
            % (
                int(time.time()),
                json.dumps(model, ensure_ascii=False).encode(),
            )
        )
        content_head = data_head + b',"choices":[{"index":0,"delta":{"content":'
        null_tail = b'},"finish_reason":null}]}' + end
        tokens = [json.dumps(t, ensure_ascii=False).encode() for t in reply.tokens]
        chunks = [content_head + t + null_tail for t in tokens]
        total = len(tokens) * max(reply.repeat, 0)

        cuts = [
            (max(n, 0), kind)
            for kind, n in (
                ("error", reply.error_after),
                ("reset", reply.reset_after),
                ("stall", reply.stall_after),
                ("end", reply.end_after),
            )
            if n is not None
        ]
        cut = min(cuts, key=lambda c: c[0])[1] if cuts else None
        sent = min(min(c[0] for c in cuts), total) if cuts else total
        malformed = reply.malformed_after
        if malformed is not None:
            malformed = max(malformed, 0)
            if cut is None:
                malformed = min(malformed, total)
        finish = reply.finish_reason if cut is None else None

        writer.write(
            _response_head(
                200,
                [
                    ("Content-Type", "text/event-stream"),
                    ("Cache-Control", "no-cache"),
                    ("Transfer-Encoding", "chunked"),
                ],
                reply.headers,
                keep_alive,
            )
        )
        await writer.drain()
        out = _Body(writer, reply.split_every, reply.split_delay)

        for _ in range(max(reply.keepalive_comments, 0)):
            await out.send(KEEPALIVE_COMMENT + end)
            if reply.keepalive_interval > 0:
                await out.flush()
                await asyncio.sleep(reply.keepalive_interval)
        await out.send(
            data_head
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
            + end
        )
        if reply.first_delay > 0:
            await out.flush()
            await asyncio.sleep(reply.first_delay)
        n_tokens = len(chunks)
        for i in range(sent):
            if i == malformed:
                await out.send(MALFORMED_EVENT + end)
            if i and reply.gap > 0:
                await out.flush()
                await asyncio.sleep(reply.gap)
            if finish is not None and i == total - 1:
                tail = b'},"finish_reason":%b}]}' % json.dumps(finish).encode()
                await out.send(content_head + tokens[i % n_tokens] + tail + end)
            else:
                await out.send(chunks[i % n_tokens])
        if malformed == sent:
            await out.send(MALFORMED_EVENT + end)

        if cut is None:
            if finish is not None and total == 0:
                await out.send(
                    data_head
                    + b',"choices":[{"index":0,"delta":{},"finish_reason":%b}]}'
                    % json.dumps(finish).encode()
                    + end
                )
            options = body.get("stream_options")
            if reply.usage and isinstance(options, dict) and options.get("include_usage"):
                prompt = _prompt_tokens(body)
                usage = (
                    b',"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
                    % (
                        prompt,
                        sent,
                        prompt + sent,
                    )
                )
                await out.send(data_head + usage + end)
            if reply.send_done and reply.end_after_done:
                await out.send(b"data: [DONE]" + end)
                await out.flush()
                await asyncio.sleep(reply.end_after_done)
                await out.finish()
                return "done"
            await out.finish(b"data: [DONE]" + end if reply.send_done else b"")
            return "done"
        if cut == "end":
            await out.finish()
            return "done"
        if cut == "error":
            code = 502 if reply.error_code is None else reply.error_code
            error = json.dumps(
                {"message": reply.error_message, "type": "server_error", "code": code}
            ).encode()
            await out.finish(
                data_head
                + b',"error":%b,"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}'
                % error
                + end
            )
            return "done"
        await out.flush()
        if cut == "reset":
            await self._reset(writer)
            return "reset"
        await asyncio.sleep(self.stall_limit)  # "stall": the watcher ends this when the client goes
        return "close"

    async def _reset(self, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        for _ in range(200):  # up to ~1 s for what was written to reach the kernel
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

"""A fast fake OpenAI-compatible upstream, run as its own process (so its CPU is not the load
client's or the app's), on uvloop when available.

    python -m bench.fake_upstream_server --tokens 200 --gap 0.02 --first-delay 0.05

Prints one JSON line `{"port": P}` when listening. POST <any>/chat/completions streams SSE:
a role chunk at once, the first content token `first_delay` seconds later, then one token every
`gap` seconds on an absolute schedule (token i is due at start + first_delay + i * gap, so a late
token does not delay the next), then finish_reason, usage and [DONE] with the last token. Each
token is one HTTP chunk and one write, as a real upstream sends them. A last user message starting
with `[[bench tokens=K]]` gets K tokens with no delays (the set-up probe).

GET /stats reports, since the last POST /reset: streams started/finished, peak concurrency, token
writes, the fake's own lateness (actual minus scheduled write time: p50/p99/max) and its CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from bench.common import OVERRIDE, percentile, reply_tokens

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
_PREFIX = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench"'
_ROLE = _chunk(
    _PREFIX
    + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
)


def _json_response(status: str, body: dict, keep_alive: bool = True) -> bytes:
    data = json.dumps(body).encode()
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %b\r\n\r\n%b"
        % (status.encode(), len(data), conn, data)
    )


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = 0
        self.connections = 0
        self.finished = 0
        self.gone = 0
        self.active = 0
        self.peak_active = 0
        self.lateness: list[float] = []
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = ru.ru_utime + ru.ru_stime
        self.t0 = time.monotonic()

    def report(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        late = self.lateness

        def ms(v):
            return None if v is None else round(v * 1000, 3)

        return {
            "streams_started": self.started,
            # TCP connections the app opened: with keep-alive, about the peak of its streams.
            "connections_opened": self.connections,
            "streams_finished": self.finished,
            "streams_abandoned": self.gone,
            "active": self.active,
            "peak_active": self.peak_active,
            "token_writes": len(late),
            "lateness_ms_p50": ms(percentile(late, 50)),
            "lateness_ms_p99": ms(percentile(late, 99)),
            "lateness_ms_max": ms(max(late) if late else None),
            "cpu_s": round(ru.ru_utime + ru.ru_stime - self.cpu0, 4),
            "wall_s": round(time.monotonic() - self.t0, 3),
        }


class Config:
    def __init__(self, tokens: int, gap: float, first_delay: float) -> None:
        self.tokens = tokens
        self.gap = gap
        self.first_delay = first_delay
        self._cache: dict[int, tuple[list[bytes], bytes]] = {}

    def chunks(self, n: int) -> tuple[list[bytes], bytes]:
        """Per-token HTTP chunks and the closing bytes (finish, usage, [DONE], terminator)."""
        if n not in self._cache:
            body = [
                _chunk(
                    _PREFIX
                    + b',"choices":[{"index":0,"delta":{"content":%b},"finish_reason":null}]}\n\n'
                    % json.dumps(t).encode()
                )
                for t in reply_tokens(n)
            ]
            tail = (
                _chunk(_PREFIX + b',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
                + _chunk(
                    _PREFIX
                    + b',"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}}\n\n'
                    % (n, n + 10)
                )
                + _chunk(b"data: [DONE]\n\n")
                + b"0\r\n\r\n"
            )
            self._cache[n] = (body, tail)
        return self._cache[n]


class Stream:
    """One SSE response, written on an absolute schedule by loop timers."""

    __slots__ = ("chunks", "gap", "i", "loop", "proto", "start", "stats", "tail")

    def __init__(self, proto, chunks, tail, start, gap, stats, loop) -> None:
        self.proto = proto
        self.chunks = chunks
        self.tail = tail
        self.start = start
        self.gap = gap
        self.i = 0
        self.stats = stats
        self.loop = loop

    def schedule(self) -> None:
        due = self.start + self.i * self.gap
        self.loop.call_later(max(0.0, due - time.monotonic()), self.tick)

    def tick(self) -> None:
        proto = self.proto
        if proto.closed:
            return
        now = time.monotonic()
        i = self.i
        self.stats.lateness.append(now - (self.start + i * self.gap))
        self.i = i + 1
        if self.i < len(self.chunks):
            proto.transport.write(self.chunks[i])
            self.schedule()
        else:
            proto.transport.write(self.chunks[i] + self.tail)
            proto.stream_finished()


class Handler(asyncio.Protocol):
    def __init__(self, config: Config, stats: Stats, api_key: str) -> None:
        self.config = config
        self.stats = stats
        self.auth = f"bearer {api_key}".encode()
        self.buf = bytearray()
        self.streaming = False
        self.closed = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats.connections += 1

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.streaming:
            self.streaming = False
            self.stats.active -= 1
            self.stats.gone += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.streaming:
            self._parse()

    def _parse(self) -> None:
        while not self.streaming and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._fail("431 Request Header Fields Too Large")
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, path, _ = lines[0].split(" ", 2)
            except ValueError:
                self._fail("400 Bad Request")
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._fail("413 Payload Too Large")
                return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self._handle(method, path, headers, body)

    def _fail(self, status: str) -> None:
        self.transport.write(_json_response(status, {"error": {"message": status}}, False))
        self.transport.close()
        self.closed = True

    def _handle(self, method: str, path: str, headers: dict, body: bytes) -> None:
        path = path.split("?", 1)[0]
        if method == "GET" and path.endswith("/stats"):
            self.transport.write(_json_response("200 OK", self.stats.report()))
            return
        if method == "POST" and path.endswith("/reset"):
            self.stats.reset()
            self.transport.write(_json_response("200 OK", {"ok": True}))
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            self.transport.write(_json_response("404 Not Found", {"error": {"message": path}}))
            return
        if headers.get("authorization", "").lower().encode() != self.auth:
            self.transport.write(
                _json_response("401 Unauthorized", {"error": {"message": "bad key"}})
            )
            return
        try:
            request = json.loads(body)
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            self.transport.write(_json_response("400 Bad Request", {"error": {"message": "?"}}))
            return
        n, first_delay, gap = self.config.tokens, self.config.first_delay, self.config.gap
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        match = OVERRIDE.match(str(last.get("content", ""))) if last else None
        if match:
            n, first_delay, gap = int(match.group(1)), 0.0, 0.0
        chunks, tail = self.config.chunks(n)
        stats = self.stats
        stats.started += 1
        stats.active += 1
        stats.peak_active = max(stats.peak_active, stats.active)
        self.streaming = True
        self.transport.write(_HEAD + _ROLE)
        if not chunks:
            self.transport.write(tail)
            self.stream_finished()
            return
        loop = asyncio.get_running_loop()
        Stream(self, chunks, tail, time.monotonic() + first_delay, gap, stats, loop).schedule()

    def stream_finished(self) -> None:
        self.streaming = False
        self.stats.active -= 1
        self.stats.finished += 1
        if self.buf:
            self._parse()  # a pipelined next request


async def serve(args) -> None:
    config = Config(args.tokens, args.gap, args.first_delay)
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Handler(config, stats, args.api_key), args.host, args.port, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--first-delay", type=float, default=0.05)
    parser.add_argument("--api-key", default="bench-key")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

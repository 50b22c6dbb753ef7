"""The load client, run as its own process: a lean hand-rolled websocket client (and a raw SSE
reader for the direct baseline) on asyncio Protocols over uvloop, so its CPU per frame is a few
microseconds and it can be measured apart from the app.

    python -m bench.load_client SPEC.json RESULT.json

SPEC "mode" is "relay" (N websockets to the app: connect all, warm up, a set-up probe burst of
one-token replies, then the main burst, each burst sent all at once and read to the end; with
"browser", each member first starts the chat from the home page and syncs as the page does,
bench/browser.py), "login" (every member logs in with the login form) or "direct" (the same N
streams read straight from the fake upstream). Timestamps are taken when
bytes reach the process (data_received), with time.perf_counter.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import resource
import sys
import time

from bench import browser as browser_steps
from bench.browser import for_each
from bench.common import cpu_both, read_counters, system_busy_seconds

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if not n:
        return key
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return key + masked


def ws_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + _mask(payload)


# --- relay: websocket ---------------------------------------------------------------------------
class Reply:
    """What one socket saw of one burst."""

    __slots__ = (
        "close",
        "deltas",
        "done",
        "error",
        "expected",
        "fut",
        "reply_id",
        "resyncs",
        "seq",
        "stored",
        "t_created",
        "t_done",
        "t_send",
        "text",
        "times",
    )

    def __init__(self, expected: str, fut: asyncio.Future) -> None:
        self.expected = expected
        self.fut = fut
        self.reply_id = None
        self.seq = 0
        self.text: list[str] = []
        self.times: list[float] = []
        self.deltas = 0
        self.resyncs = 0
        self.t_send = 0.0
        self.t_created = None
        self.t_done = None
        self.done = None  # the message of message.done
        self.error = None
        self.stored = None
        self.close = None

    def finish(self, error: str | None = None) -> None:
        if error and not self.error:
            self.error = error
        if not self.fut.done():
            self.fut.set_result(None)


class WebSocket(asyncio.Protocol):
    def __init__(self, index: int, target: dict, loop) -> None:
        self.index = index
        self.target = target
        self.loop = loop
        self.transport = None
        self.buf = bytearray()
        self.open = False
        self.opened = loop.create_future()
        self.fragments: list[bytes] = []
        self.reply: Reply | None = None
        self.synced: asyncio.Future | None = None
        self.close_code = None
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())  # noqa: S324
        self.key = key

    def connection_made(self, transport) -> None:
        self.transport = transport
        t = self.target
        transport.write(
            (
                f"GET {t['path']} HTTP/1.1\r\nHost: {t['host']}:{t['port']}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {self.key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {t['origin']}\r\nCookie: {t['cookie']}\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        if self.reply is not None:
            self.reply.finish(f"socket closed (code {self.close_code})")

    def send_text(self, text: str) -> None:
        self.transport.write(ws_frame(0x1, text.encode()))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                self.transport.close()
                return
            self.open = True
            self.opened.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if n - pos < hdr + length:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + length])
            pos += hdr + length
            opcode = b0 & 0x0F
            if opcode == 0x1 or opcode == 0x0:
                if not b0 & 0x80:
                    self.fragments.append(payload)
                    continue
                if self.fragments:
                    payload = b"".join(self.fragments) + payload
                    self.fragments.clear()
                self.on_text(payload, now)
            elif opcode == 0x9:
                self.transport.write(ws_frame(0xA, payload))
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.transport.write(ws_frame(0x8, payload[:2]))
                self.transport.close()
                break
        del buf[:pos]

    def on_text(self, payload: bytes, now: float) -> None:
        reply = self.reply
        if reply is None:
            synced = self.synced
            if synced is not None and not synced.done() and b'"conversation.sync"' in payload:
                synced.set_result(now)
            return
        frame = json.loads(payload)
        kind = frame["type"]
        if kind == "message.delta":
            if frame["id"] != reply.reply_id:
                return
            seq = frame["seq"]
            if seq <= reply.seq:
                return
            if seq != reply.seq + 1:
                reply.error = reply.error or f"seq jump {reply.seq}->{seq}"
            reply.seq = seq
            reply.text.append(frame["text"])
            reply.times.append(now)
            reply.deltas += 1
        elif kind == "message.created":
            message = frame["message"]
            if message["role"] == "assistant":
                reply.reply_id = message["id"]
                reply.t_created = now
        elif kind == "message.done":
            message = frame["message"]
            if message["id"] == reply.reply_id:
                reply.done = message
                reply.t_done = now
                reply.finish()
        elif kind == "message.snapshot":
            message = frame["message"]
            if message["id"] == reply.reply_id:
                reply.text = [message["content"]]
                reply.seq = message["seq"]
                reply.resyncs += 1
        elif kind == "error":
            reply.finish(f"error frame {frame.get('code')}")


def _reply_result(reply: Reply, tokens: int) -> dict:
    streamed = "".join(reply.text)
    expected = reply.expected
    error = reply.error
    status = reply.done.get("status") if reply.done else None
    if error is None:
        if reply.done is None:
            error = "no message.done"
        elif status != "complete":
            error = f"status {status}"
        elif reply.done.get("content") != expected:
            error = "done content differs"
        elif streamed != expected:
            error = "streamed text differs"
    times = reply.times
    ttft = times[0] - reply.t_send if times else None
    gaps = [b - a for a, b in itertools.pairwise(times)]
    delivered = round(tokens * min(1.0, len(streamed) / len(expected))) if expected else 0
    return {
        "error": error,
        "ttft": ttft,
        "gaps": gaps,
        "deltas": reply.deltas,
        "resyncs": reply.resyncs,
        "t_send": reply.t_send,
        "t_last": times[-1] if times else None,
        "t_done": reply.t_done,
        "duration": (reply.t_done - reply.t_created) if reply.t_done and reply.t_created else None,
        # Tokens that reached the reader (a cut-off reply counts its share of the text).
        "tokens": delivered,
        "reply_id": reply.reply_id,
    }


class Phase:
    """CPU and counters of the app processes and of this client around one burst."""

    def __init__(self, spec: dict) -> None:
        self.pids = spec.get("app_pids", [])
        self.fake_pids = spec.get("fake_pids", [])
        self.counter_files = spec.get("counter_files", [])

    def _counters(self) -> dict:
        if not self.counter_files:
            return {}
        total: dict[str, int] = {}
        for path in self.counter_files:
            for key, value in read_counters(path).items():
                total[key] = total.get(key, 0) + value
        return total

    def __enter__(self):
        self.c0 = self._counters()
        self.app0 = cpu_both(self.pids) if self.pids else (0.0, 0.0)
        self.fake0 = cpu_both(self.fake_pids)[1] if self.fake_pids else 0.0
        self.sys0 = system_busy_seconds()
        self.self0 = _self_cpu()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.client_cpu = _self_cpu() - self.self0
        self.system_cpu = system_busy_seconds() - self.sys0
        self.fake_cpu = (cpu_both(self.fake_pids)[1] if self.fake_pids else 0.0) - self.fake0
        app1 = cpu_both(self.pids) if self.pids else (0.0, 0.0)
        self.app_cpu_stat = app1[0] - self.app0[0]
        self.app_cpu_sched = app1[1] - self.app0[1]
        c1 = self._counters()
        self.counters = {k: c1[k] - self.c0.get(k, 0) for k in c1}

    def summary(self) -> dict:
        return {
            "wall_s": self.wall,
            "client_cpu_s": self.client_cpu,
            "app_cpu_stat_s": self.app_cpu_stat,
            "app_cpu_sched_s": self.app_cpu_sched,
            "fake_cpu_s": self.fake_cpu,
            # Everything else that ran on the machine meanwhile (other users' jobs): a busy
            # neighbour on 2 cores distorts every number, so it is reported with them.
            "foreign_cpu_s": self.system_cpu - self.app_cpu_stat - self.client_cpu - self.fake_cpu,
            "counters": self.counters,
        }


async def _burst(sockets: list[WebSocket], content: str, expected: str, timeout: float):
    loop = asyncio.get_running_loop()
    replies = []
    for ws in sockets:
        ws.reply = Reply(expected, loop.create_future())
        replies.append(ws.reply)
    frame = json.dumps({"type": "message.send", "content": content})
    for ws in sockets:  # all at once
        ws.reply.t_send = time.perf_counter()
        if ws.transport.is_closing():
            ws.reply.finish(f"socket already closed (code {ws.close_code})")
        else:
            ws.send_text(frame)
    await asyncio.wait([r.fut for r in replies], timeout=timeout)
    for reply in replies:
        if not reply.fut.done():
            reply.finish("timeout")
    for ws in sockets:
        ws.reply = None
    return replies


async def run_relay(spec: dict) -> dict:
    loop = asyncio.get_running_loop()
    targets = spec["targets"]
    limit = asyncio.Semaphore(spec.get("connect_concurrency", 32))
    errors: list[str] = []

    async def open_socket(i: int, target: dict) -> WebSocket | None:
        async with limit:
            try:
                _, ws = await loop.create_connection(
                    lambda: WebSocket(i, target, loop), target["host"], target["port"]
                )
                await asyncio.wait_for(ws.opened, 30)
                return ws
            except (OSError, TimeoutError) as exc:
                errors.append(f"connect {i}: {exc!r}")
                return None

    result: dict = {"mode": "relay", "n": len(targets)}
    browser = spec.get("browser", False)
    if browser:
        # What a member's browser does first: the home page, its form, the chat page.
        warm_pages, warm_errors, _ = await for_each(spec.get("warm", []), _start_chat, 4)
        errors.extend(warm_errors)
        spec["warm"] = _opened_pages(spec.get("warm", []), warm_pages)
        with Phase(spec) as phase:
            pages, page_errors, durations = await for_each(
                targets, _start_chat, spec.get("connect_concurrency", 32)
            )
        errors.extend(page_errors)
        result["start"] = {**phase.summary(), "seconds": sorted(durations)}
        targets = _opened_pages(targets, pages)
    # Warm-up: one short exchange per app process, not measured (imports, first queries).
    warm = [await open_socket(-1, t) for t in spec.get("warm", [])]
    warm = [w for w in warm if w is not None]
    if warm:
        wr = await _burst(warm, spec["warm_content"], spec["warm_expected"], 30)
        result["warm_errors"] = [_reply_result(r, 1)["error"] for r in wr]
        for w in warm:
            w.transport.close()

    with Phase(spec) as phase:
        opened = await asyncio.gather(*(open_socket(i, t) for i, t in enumerate(targets)))
    result["connect"] = phase.summary()
    await asyncio.sleep(0.3)  # an unauthenticated socket is closed right after the handshake
    sockets = []
    for ws in opened:
        if ws is None:
            continue
        if ws.transport.is_closing():
            errors.append(f"socket {ws.index} closed after connect (code {ws.close_code})")
        else:
            sockets.append(ws)
    result["connected"] = len(sockets)
    if browser:
        # The page's first frame after connecting: the tab asks for what it lacks.
        with Phase(spec) as phase:
            for ws in sockets:
                ws.synced = loop.create_future()
                ws.send_text(json.dumps(ws.target["sync"]))
            await asyncio.wait([ws.synced for ws in sockets], timeout=60)
        result["sync"] = phase.summary()
        for ws in sockets:
            if not ws.synced.done():
                errors.append(f"socket {ws.index}: no conversation.sync")
        sockets = [ws for ws in sockets if ws.synced.done()]

    timeout = spec["timeout"]
    with Phase(spec) as phase:
        probe = await _burst(sockets, spec["probe_content"], spec["probe_expected"], timeout)
    result["probe"] = phase.summary()
    result["probe"]["replies"] = [_reply_result(r, 1) for r in probe]
    for r in result["probe"]["replies"]:
        r.pop("gaps")
    await asyncio.sleep(0.2)

    with Phase(spec) as phase:
        main = await _burst(sockets, spec["content"], spec["expected"], timeout)
    result["main"] = phase.summary()
    result["main"]["replies"] = [_reply_result(r, spec["tokens"]) for r in main]
    result["errors"] = errors
    for ws in sockets:
        ws.transport.close()
    result["client_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


# --- direct: the fake upstream's SSE, read raw --------------------------------------------------
class SSEStream(asyncio.Protocol):
    """One POST to the fake upstream; HTTP/1.1 chunked body, SSE events, parsed leanly."""

    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut
        self.transport = None
        self.connected = asyncio.get_running_loop().create_future()
        self.raw = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.text: list[str] = []
        self.times: list[float] = []
        self.t_send = 0.0
        self.finished = False
        self.error = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connected.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.finished:
            self.error = self.error or f"connection lost: {exc!r}"
        if not self.fut.done():
            self.fut.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        raw = self.raw
        raw += data
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            if not raw.startswith(b"HTTP/1.1 200"):
                self.error = bytes(raw[:40]).decode("latin-1")
                self.transport.close()
                return
            del raw[: end + 4]
            self.head_done = True
        # De-chunk.
        pos = 0
        while True:
            eol = raw.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(raw[pos:eol], 16)
            if size == 0:
                pos = eol + 2
                break
            if len(raw) < eol + 2 + size + 2:
                break
            self.body += raw[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
        del raw[:pos]
        # SSE events.
        body = self.body
        start = 0
        while True:
            end = body.find(b"\n\n", start)
            if end < 0:
                break
            event = body[start:end]
            start = end + 2
            if not event.startswith(b"data: "):
                continue
            data = event[6:]
            if data == b"[DONE]":
                self.finished = True
                self.transport.close()
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or ():
                content = choice.get("delta", {}).get("content")
                if content:
                    self.text.append(content)
                    self.times.append(now)
        del body[:start]


async def run_direct(spec: dict) -> dict:
    loop = asyncio.get_running_loop()
    n = spec["n"]
    request_body = json.dumps(
        {
            "model": "bench",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": spec["content"]}],
        }
    ).encode()
    request = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
        f"Authorization: Bearer {spec['api_key']}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(request_body)}\r\n\r\n"
    ).encode() + request_body
    limit = asyncio.Semaphore(64)
    errors: list[str] = []

    async def open_stream() -> SSEStream | None:
        async with limit:
            fut = loop.create_future()
            try:
                _, stream = await loop.create_connection(
                    lambda: SSEStream(fut), spec["host"], spec["port"]
                )
                return stream
            except OSError as exc:
                errors.append(repr(exc))
                return None

    streams = [s for s in await asyncio.gather(*(open_stream() for _ in range(n))) if s]
    with Phase({"fake_pids": spec.get("fake_pids", [])}) as phase:
        for s in streams:  # all at once
            s.t_send = time.perf_counter()
            s.transport.write(request)
        await asyncio.wait([s.fut for s in streams], timeout=spec["timeout"])
    expected = spec["expected"]
    replies = []
    for s in streams:
        text = "".join(s.text)
        error = s.error or (None if text == expected else "text differs")
        if not s.fut.done():
            error = "timeout"
            s.transport.close()
        times = s.times
        replies.append(
            {
                "error": error,
                "ttft": times[0] - s.t_send if times else None,
                "gaps": [b - a for a, b in itertools.pairwise(times)],
                "deltas": len(times),
                "t_send": s.t_send,
                "t_last": times[-1] if times else None,
                "tokens": len(times) if text == expected else 0,
            }
        )
    return {
        "mode": "direct",
        "n": n,
        "main": {**phase.summary(), "replies": replies},
        "errors": errors,
        "client_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


async def _start_chat(target: dict) -> dict:
    return await browser_steps.start_chat(target, target["character"])


def _opened_pages(targets: list[dict], pages: list) -> list[dict]:
    """The targets whose chat started, each given its socket path, cookies and sync frame."""
    for target, page in zip(targets, pages, strict=True):
        if page is not None:
            target.update(page)
    return [target for target, page in zip(targets, pages, strict=True) if page is not None]


async def run_login(spec: dict) -> dict:
    """Every member logs in with the login form: their session cookies, in target order."""

    async def log_in(target: dict) -> dict:
        return await browser_steps.log_in(target, target["username"], target["password"])

    with Phase(spec) as phase:
        cookies, errors, durations = await for_each(spec["targets"], log_in, 16)
    return {
        "mode": "login",
        "cookies": cookies,
        "errors": errors,
        "phase": {**phase.summary(), "seconds": sorted(durations)},
    }


def main() -> None:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runs = {"relay": run_relay, "direct": run_direct, "login": run_login}
    coro = runs[spec["mode"]](spec)
    result = runner(coro)
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

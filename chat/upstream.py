"""The one module that talks to the Serika API: request building, streaming and error mapping.

Nothing else imports httpx. `stream_completion` yields `Delta`, `Finish` and `Usage` events and
raises `UpstreamError` with a sentence a user can read. The API key is sent in a header and
scrubbed from anything the upstream says back.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from chat.sse import SSEDataReader
from chat.upstream_network import PooledTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionRequest:
    """What one reply asks of the upstream."""

    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None
    character_id: str = ""
    stream: bool = True

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.character_id:
            body["character_id"] = self.character_id
        return body


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finish:
    reason: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


Event = Delta | Finish | Usage


@dataclass
class UpstreamError(Exception):
    """A failed request or stream. `code` is stable; `message` is for people."""

    code: str
    message: str
    status: int | None = None
    retry_after: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class MissingApiKey(UpstreamError):
    pass


# One pooled client per event loop: connections are reused across replies, and a client must
# not be shared between loops (tests run several).
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


# httpcore's pool, each time a request starts or ends, counts all its connections once per
# idle connection (`_assign_requests_to_connections`): with hundreds kept idle (the titles after
# a burst of first replies), every request of the next burst cost milliseconds of CPU, and
# the relay's CPU per token rose by half (docs/benchmarks.md, "Why these figures differ").
KEEPALIVE_CONNECTIONS = 16


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for stale in [lp for lp in _clients if lp.is_closed()]:
            del _clients[stale]
        # Idle connections are kept 30 s (httpx's default: 5 s), so the next requests skip a
        # TCP and TLS handshake; a connection the upstream closed meanwhile is dropped at
        # checkout. At most KEEPALIVE_CONNECTIONS of them: see there.
        transport = PooledTransport(
            keepalive_expiry=30, max_keepalive_connections=KEEPALIVE_CONNECTIONS
        )
        client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.SERIKA_CONNECT_TIMEOUT,
                # A read timeout is exactly "no byte for this long": SSE keep-alive comments
                # count as bytes, so a long ": PROCESSING" phase is not a stall.
                read=settings.SERIKA_STREAM_IDLE_TIMEOUT,
                write=settings.SERIKA_CONNECT_TIMEOUT,
                pool=settings.SERIKA_CONNECT_TIMEOUT,
            ),
            # The upstream is an admin-set URL; never follow redirects elsewhere with the key.
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


def redact(text: str) -> str:
    """Remove the API key from text that came back from the upstream or an exception."""
    key = settings.SERIKA_API_KEY
    if key and key in text:
        text = text.replace(key, "[redacted]")
    return text


def _error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "")[:300]
    if isinstance(error, str):
        return error[:300]
    return ""


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0, int(float(value)))
    except ValueError:
        return None


def error_for_status(status: int, body: bytes, retry_after: int | None) -> UpstreamError:
    """Map an HTTP error response to the error users see."""
    detail = redact(_error_detail(body))
    suffix = f" ({detail})" if detail else ""
    if status == 401 or status == 403:
        return UpstreamError(
            "auth",
            f"The Serika API rejected the API key (HTTP {status}). "
            "An administrator must check SERIKA_API_KEY.",
            status,
        )
    if status == 429:
        wait = f" Try again in {retry_after} s." if retry_after is not None else " Try again soon."
        return UpstreamError(
            "rate_limited", f"The Serika API is rate limiting requests.{wait}", status, retry_after
        )
    if status == 402:
        return UpstreamError(
            "payment", f"The Serika account is out of credits (HTTP 402){suffix}.", status
        )
    if status >= 500:
        return UpstreamError(
            "server_error",
            f"The Serika API failed (HTTP {status}){suffix}. Try again.",
            status,
            retry_after,
        )
    return UpstreamError(
        "bad_request", f"The Serika API refused the request (HTTP {status}){suffix}.", status
    )


def _events_of(data: str) -> list[Event]:
    """The events of one `data:` payload; a malformed one is logged and skipped."""
    try:
        return _parse_chunk(data)
    except ValueError:
        # One bad line must not cost the user the rest of the reply.
        log.warning("Skipped a malformed SSE data line (%d bytes)", len(data))
        return []


def _parse_chunk(data: str) -> list[Event]:
    """The events in one `data:` payload. Raises UpstreamError for an in-band error object."""
    chunk = json.loads(data)
    if not isinstance(chunk, dict):
        raise ValueError("chunk is not an object")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(
            "stream_error",
            f"The Serika API reported an error mid-reply: {redact(str(message))[:300]}",
        )
    events: list[Event] = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(text, str) and text:
            events.append(Delta(text))
        reason = choice.get("finish_reason")
        if reason == "error":
            raise UpstreamError("stream_error", "The Serika API ended the reply with an error.")
        if isinstance(reason, str) and reason:
            events.append(Finish(reason))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        events.append(Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")))
    return events


# After [DONE] only the end of the body is due, normally in the same packet. Read so far, the
# connection goes back to the pool for the next reply: a new one costs a TCP and a TLS handshake,
# round trips to the upstream before that reply's first token. A server that goes on past
# these bounds loses the connection instead (closed when the response is).
AFTER_DONE_SECONDS = 0.5
AFTER_DONE_BYTES = 65536


async def _read_to_end(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows [DONE], within AFTER_DONE_SECONDS and AFTER_DONE_BYTES."""
    received = 0
    with contextlib.suppress(TimeoutError, httpx.TransportError, httpx.StreamError):
        async with asyncio.timeout(AFTER_DONE_SECONDS):
            async for rest in chunks:
                received += len(rest)
                if received > AFTER_DONE_BYTES:
                    return


async def stream_completion(request: CompletionRequest) -> AsyncIterator[list[Event]]:
    """Stream one completion: each item holds the events of one received HTTP chunk.

    A network read costs the same CPU whatever it carries; the caller may wait between reads
    so that several chunks arrive per read. The stream ends normally only after
    `[DONE]` or a clean end of stream; one that ends without a finish reason yields no `Finish`,
    and the caller stores it as truncated. Closing this generator (Stop) closes the upstream
    response at once.
    """
    if not settings.SERIKA_API_KEY:
        raise MissingApiKey(
            "no_api_key",
            "No Serika API key is configured. An administrator must set SERIKA_API_KEY.",
        )
    url = settings.SERIKA_BASE_URL.rstrip("/") + "/chat/completions"
    headers = {
        "Authorization": f"Bearer {settings.SERIKA_API_KEY}",
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
    }
    try:
        async with _client().stream(
            "POST", url, json=request.payload(), headers=headers
        ) as response:
            if response.status_code != 200:
                body = await response.aread()
                raise error_for_status(response.status_code, body[:65536], _retry_after(response))
            if "text/event-stream" not in response.headers.get("content-type", ""):
                raise UpstreamError(
                    "bad_response", "The Serika API answered with something other than a stream."
                )
            # Events are read one network read at a time (see chat/sse.py).
            events = SSEDataReader()
            # SSE is always UTF-8 (the spec ignores any charset); decoding here skips httpx's
            # text layers, a per-read cost.
            utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            chunks = response.aiter_bytes()
            async for data in chunks:
                text = utf8.decode(data)
                batch: list[Event] = []
                for data in events.feed(text):
                    if data == "[DONE]":
                        if batch:
                            yield batch
                        await _read_to_end(chunks)
                        return
                    batch.extend(_events_of(data))
                if batch:
                    yield batch
    except UpstreamError:
        raise
    except httpx.ReadTimeout as exc:
        raise UpstreamError(
            "stalled",
            f"The Serika API sent nothing for {settings.SERIKA_STREAM_IDLE_TIMEOUT:g} s; "
            "the reply was abandoned.",
        ) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", "The Serika API did not answer in time.") from exc
    except httpx.ConnectError as exc:
        raise UpstreamError("connection", "Could not connect to the Serika API.") from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise UpstreamError(
            "connection", "The connection to the Serika API was lost mid-reply."
        ) from exc


@dataclass(frozen=True)
class Completion:
    """The answer to a non-streaming request."""

    text: str
    usage: Usage


async def complete(request: CompletionRequest, seconds: float) -> Completion:
    """One short non-streaming completion (`request.stream` false), within `seconds`.

    For small side tasks such as a conversation's title; raises UpstreamError like a stream.
    """
    if not settings.SERIKA_API_KEY:
        raise MissingApiKey("no_api_key", "No Serika API key is configured.")
    url = settings.SERIKA_BASE_URL.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {settings.SERIKA_API_KEY}", "Cache-Control": "no-store"}
    try:
        response = await _client().post(
            url, json=request.payload(), headers=headers, timeout=seconds
        )
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", "The Serika API did not answer in time.") from exc
    except httpx.TransportError as exc:
        raise UpstreamError("connection", "Could not connect to the Serika API.") from exc
    if response.status_code != 200:
        raise error_for_status(
            response.status_code, response.content[:65536], _retry_after(response)
        )
    try:
        body = response.json()
        text = body["choices"][0]["message"]["content"]
        usage = body.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UpstreamError("bad_response", "The Serika API sent an unreadable answer.") from exc
    if not isinstance(text, str) or not isinstance(usage, dict):
        raise UpstreamError("bad_response", "The Serika API sent an unreadable answer.")

    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return Completion(text, Usage(count("prompt_tokens"), count("completion_tokens")))


async def close_loop_client() -> None:
    """Close this event loop's client (a loop made for one task, e.g. a background refresh)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


async def list_models(seconds: float) -> list[str]:
    """The model ids of the upstream's `GET {base}/models`, within `seconds`."""
    if not settings.SERIKA_API_KEY:
        raise MissingApiKey("no_api_key", "No Serika API key is configured.")
    url = settings.SERIKA_BASE_URL.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {settings.SERIKA_API_KEY}"}
    try:
        response = await _client().get(url, headers=headers, timeout=seconds)
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", "The Serika API did not list its models in time.") from exc
    except httpx.TransportError as exc:
        raise UpstreamError("connection", "Could not connect to the Serika API.") from exc
    if response.status_code != 200:
        raise error_for_status(response.status_code, response.content[:65536], None)
    try:
        data = response.json()["data"]
        ids = [item["id"] for item in data if isinstance(item, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(
            "bad_response", "The Serika API sent an unreadable model list."
        ) from exc
    return sorted({i for i in ids if isinstance(i, str) and 0 < len(i) <= 200})

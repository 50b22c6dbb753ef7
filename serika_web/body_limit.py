"""Request bodies are bounded as they arrive, before daphne hands them to Django.

Twisted receives a whole request body before daphne sees the request (to a temporary file when
it is large), and daphne then reads all of it into the application's queue at once, as 8 KiB
chunks, before Django reads the first one. So a 200 MB anonymous POST to any URL costs the process
200 MB of memory however early Django or a middleware would refuse it: the limit has to act in
Twisted, while the body is still arriving.

`install()` makes daphne's server build its HTTP protocol with `BoundedWebRequest`, which
answers 413 as soon as a Content-Length above `HTTP_MAX_BODY_BYTES` is announced, or a chunked
body grows past it, and stores nothing more. The hooks are Twisted's `Request.gotLength` and
`Request.handleContentChunk` (documented on `twisted.web.http.Request`, "not intended for
users", but stable since Twisted 16) and the `HTTPFactory` name in `daphne.server`, which daphne
does not document: `install()` refuses to start if that name is not daphne's factory any more,
and tests/test_body_limit.py fails if a real oversized POST is not refused.
"""

from __future__ import annotations

import logging

import daphne.server  # first: importing it installs Twisted's asyncio reactor (on uvloop)
from daphne import http_protocol
from twisted.internet import reactor

log = logging.getLogger(__name__)

# Seconds a refused request's connection stays open, its data read and dropped, so that the
# client reads the 413 before the connection closes (closing on unread data sends a reset,
# which makes the client drop the response unread).
LINGER_SECONDS = 2.0
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def max_body_bytes() -> int:
    """The largest request body accepted, from settings (read per request, once Django is set up)."""
    from django.conf import settings

    return getattr(settings, "HTTP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)


class BoundedWebRequest(http_protocol.WebRequest):
    """daphne's request, refusing a body larger than `max_body_bytes()` while it arrives."""

    _refused = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        limit = max_body_bytes()
        if length is not None and length > limit:
            self._refuse(limit)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped
        self._received += len(data)
        limit = max_body_bytes()
        if self._received > limit:  # a chunked body (or one longer than it said)
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; never reaches the application
        super().requestReceived(command, path, version)

    def _refuse(self, limit: int) -> None:
        self._refused = True
        self.content = None
        # Twisted would answer "Expect: 100-continue" right after this: the client must not be
        # invited to send a body we have refused.
        self.requestHeaders.removeHeader(b"Expect")
        body = (
            f"Request too large: this server accepts bodies of up to {limit // (1024 * 1024)} "
            "MiB.\n"
        ).encode()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        peer = transport.getPeer()
        log.warning(
            "Refused a request body over %d bytes from %s", limit, getattr(peer, "host", peer)
        )
        reactor.callLater(LINGER_SECONDS, transport.abortConnection)


class BoundedHTTPFactory(http_protocol.HTTPFactory):
    """daphne's HTTP factory, building requests that bound their bodies."""

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedWebRequest
        return protocol


def install() -> None:
    """Make daphne's server use `BoundedHTTPFactory`; call before daphne's server starts."""
    if daphne.server.HTTPFactory is BoundedHTTPFactory:
        return
    if daphne.server.HTTPFactory is not http_protocol.HTTPFactory:
        raise RuntimeError(
            "daphne.server.HTTPFactory is not daphne's HTTPFactory any more (a daphne upgrade?): "
            "the request body limit cannot be installed; see serika_web/body_limit.py."
        )
    daphne.server.HTTPFactory = BoundedHTTPFactory

"""Request bodies are refused while they arrive, before they cost the server their size.

Against a real daphne process started through our launcher; the server's peak memory (VmHWM)
is read from /proc before and after a 200 MB upload.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import live

static_root = live.static_root
daphne_servers = live.daphne_servers
daphne_server = live.daphne_server

pytestmark = [pytest.mark.multiprocess, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
UPLOAD = 200 * MiB
# The bound asserted on the server's growth: well under the upload, above what a request that
# is refused at once costs (Python's allocator, Twisted's buffers).
MAX_GROWTH = 64 * MiB
BOUNDARY = "serika-test-boundary"


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def post(port: int, head: str, body: Iterator[bytes], timeout: float = 15.0) -> tuple[bytes, int]:
    """Send a request as a browser would (reading while it sends): headers, then body chunks
    until the server answers or stops reading. Returns the response bytes and the body bytes
    sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for chunk in body:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # answered before the end of the body
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        response = b""
        try:
            while data := sock.recv(65536):
                response += data
        except (ConnectionResetError, TimeoutError):
            pass
    return response, sent


PART_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="card"; filename="card.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
).encode()
PART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def multipart_head(size: int | None) -> str:
    """The head of a multipart POST to the login page, anonymous, of a file of `size` bytes
    (chunked when None)."""
    length = (
        f"Content-Length: {len(PART_HEAD) + size + len(PART_TAIL)}\r\n"
        if size is not None
        else "Transfer-Encoding: chunked\r\n"
    )
    return (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{length}\r\n"
    )


def multipart_body(size: int, chunked: bool = False) -> Iterator[bytes]:
    """A file of `size` zero bytes in a multipart body, sent a MiB at a time."""
    pieces = [PART_HEAD, *(b"\0" * MiB for _ in range(size // MiB)), PART_TAIL]
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


def warm_up(server) -> int:
    """Serve one request (Django loaded, the first connection made); then the peak so far."""
    response, _ = post(
        server.port,
        "GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        iter(()),
    )
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    return peak_rss(server.process.pid)


def test_a_200_mb_post_with_a_content_length_is_refused_before_its_body(daphne_server):
    before = warm_up(daphne_server)
    response, sent = post(daphne_server.port, multipart_head(UPLOAD), multipart_body(UPLOAD))
    growth = peak_rss(daphne_server.process.pid) - before
    print(f"Content-Length: sent {sent / MiB:.0f} MiB, server peak grew {growth / MiB:.1f} MiB")

    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"accepts bodies of up to 32 MiB" in response
    assert growth < MAX_GROWTH, f"the server grew by {growth / MiB:.0f} MiB"


def test_a_200_mb_chunked_post_is_refused_once_it_passes_the_limit(daphne_server):
    before = warm_up(daphne_server)
    response, sent = post(
        daphne_server.port, multipart_head(None), multipart_body(UPLOAD, chunked=True)
    )
    growth = peak_rss(daphne_server.process.pid) - before
    print(f"chunked: sent {sent / MiB:.0f} MiB, server peak grew {growth / MiB:.1f} MiB")

    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < UPLOAD
    assert growth < MAX_GROWTH, f"the server grew by {growth / MiB:.0f} MiB"


def test_a_body_within_the_limit_still_reaches_django(daphne_server):
    warm_up(daphne_server)
    response, _ = post(daphne_server.port, multipart_head(2 * MiB), multipart_body(2 * MiB))
    # Django's answer: no CSRF token (the body itself was read and parsed).
    assert response.startswith(b"HTTP/1.1 403"), response[:200]

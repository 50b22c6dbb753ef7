"""The upstream client's network layer: reads go through the asyncio backend, over TCP and TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpcore
import httpx
import pytest
import trustme

from chat.upstream import CompletionRequest, Delta, stream_completion
from chat.upstream_network import AsyncioBackend, AsyncioStream
from tests.fake_upstream import FakeUpstream, Reply


@pytest.fixture
def asyncio_reads(monkeypatch) -> list[int]:
    """The sizes of the reads made through `AsyncioStream`."""
    sizes: list[int] = []
    read = AsyncioStream.read

    async def counted(self, max_bytes, timeout=None):
        data = await read(self, max_bytes, timeout)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(AsyncioStream, "read", counted)
    return sizes


async def test_the_app_client_reads_the_upstream_through_the_lean_backend(upstream, asyncio_reads):
    # If an httpx or httpcore upgrade stops using the backend, no read comes through here.
    upstream.enqueue(Reply(tokens=["Hel", "lo"], gap=0.01))
    request = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    text = ""
    async for batch in stream_completion(request):
        text += "".join(event.text for event in batch if isinstance(event, Delta))
    assert text == "Hello"
    assert len(asyncio_reads) >= 2
    assert sum(asyncio_reads) > 0


@pytest.fixture(scope="module")
def tls_upstream():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with FakeUpstream(api_key="test-key", ssl_context=server_context) as server:
        yield server, ca


async def test_a_stream_over_tls_is_read_through_the_lean_backend(tls_upstream, asyncio_reads):
    # The real API is HTTPS: TLS starts in httpcore's code, and reads then go through ours.
    server, ca = tls_upstream
    server.enqueue(Reply(tokens=["Over", " TLS"], gap=0.01))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
    async with (
        httpcore.AsyncConnectionPool(
            ssl_context=client_context, network_backend=AsyncioBackend()
        ) as pool,
        pool.stream(
            "POST",
            server.base_url + "/chat/completions",
            headers={"Authorization": "Bearer test-key", "Content-Type": "application/json"},
            content=body,
        ) as response,
    ):
        assert response.status == 200
        assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
        received = b"".join([chunk async for chunk in response.aiter_stream()])
    assert b'"Over"' in received
    assert b'" TLS"' in received
    assert b"data: [DONE]" in received
    assert len(asyncio_reads) >= 2


async def test_an_idle_connection_the_server_closed_is_readable_and_a_live_one_is_not():
    # httpcore asks this before reusing a kept-alive connection: readable means "do not reuse".
    async def serve(reader, writer):
        if (await reader.read(5)) == b"close":
            writer.close()
        else:
            await reader.read()  # hold the connection open until the client leaves

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = AsyncioBackend()
    async with server:
        closed = await backend.connect_tcp("127.0.0.1", port, timeout=5)
        live = await backend.connect_tcp("127.0.0.1", port, timeout=5)
        await closed.write(b"close")
        await live.write(b"hello")
        for _ in range(100):  # bounded: up to 1 s for the close to arrive
            if closed.get_extra_info("is_readable"):
                break
            await asyncio.sleep(0.01)
        assert closed.get_extra_info("is_readable")
        assert not live.get_extra_info("is_readable")
        assert live.get_extra_info("server_addr")[1] == port
        await closed.aclose()
        await live.aclose()


async def test_a_refused_connection_is_httpcores_connect_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(httpcore.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)


async def test_the_transport_raises_httpx_errors_for_httpcore_ones():
    from chat.upstream_network import PooledTransport
    from tests.live import free_port

    async with httpx.AsyncClient(transport=PooledTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")


async def test_the_pool_keeps_a_bounded_number_of_idle_connections(upstream):
    # httpcore's pool does work proportional to idle times all connections on every request; after
    # a burst of titles it must not keep one idle connection per request (chat/upstream.py).
    from chat import upstream as upstream_module

    request = CompletionRequest(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=False
    )
    many = 3 * upstream_module.KEEPALIVE_CONNECTIONS
    completions = await asyncio.gather(
        *(upstream_module.complete(request, 10) for _ in range(many))
    )

    assert [c.text for c in completions] == ["Hello, world!"] * many
    pool = upstream_module._client()._transport._pool
    assert 0 < len(pool.connections) <= upstream_module.KEEPALIVE_CONNECTIONS
    await upstream_module.close_loop_client()


async def read_text(request: CompletionRequest) -> str:
    text = ""
    async for batch in stream_completion(request):
        text += "".join(event.text for event in batch if isinstance(event, Delta))
    return text


async def test_replies_one_after_another_share_one_connection(upstream):
    # Read to the body's end after [DONE], the connection goes back to the pool: the next reply
    # skips the TCP (and, for the real API, TLS) handshake.
    from chat import upstream as upstream_module

    request = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    for word in ("One", "Two", "Three"):
        upstream.enqueue(Reply(tokens=[word]))
        assert await read_text(request) == word

    connections = {r.connection_id for r in upstream.wait_for_requests(3)}
    assert len(connections) == 1
    await upstream_module.close_loop_client()


async def test_a_body_that_goes_on_after_done_ends_the_reply_all_the_same(upstream):
    # The body's end comes a minute after [DONE]: the reply ends within AFTER_DONE_SECONDS,
    # complete, and its connection is closed rather than waited for.
    from chat import upstream as upstream_module

    request = CompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    upstream.enqueue(Reply(tokens=["Late", " end"], end_after_done=60), Reply(tokens=["Next"]))

    assert await asyncio.wait_for(read_text(request), 10) == "Late end"
    assert await read_text(request) == "Next"
    first, second = upstream.wait_for_requests(2)
    assert first.connection_id != second.connection_id
    await upstream_module.close_loop_client()

"""What reusing the upstream connection saves per reply.

Sequential short replies over TLS from the fake upstream (tests/fake_upstream.py, on a thread of
this process), read with `chat.upstream.stream_completion`, the app's own client: with the
connection kept for the next reply (the stream reads on to the body's end after [DONE]) and
without (AFTER_DONE_SECONDS = 0: closed at [DONE], as before issue 15). On loopback there is no
network latency, so the figures are the handshake's CPU and local latency only; over the
internet each new connection also costs two round trips (TCP, then TLS 1.3) before the request
leaves. The client trusts the fake's test CA (the only patch: the app trusts certifi's CAs).

    python -m bench.connection_reuse [--replies 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("SERIKA_API_KEY", "bench-key")


async def _replies(count: int) -> dict:
    from chat import upstream

    request = upstream.CompletionRequest(model="bench", messages=[{"role": "user", "content": "x"}])
    first_event_ms = []
    cpu = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        first = None
        async for _batch in upstream.stream_completion(request):
            if first is None:
                first = time.perf_counter() - start
        first_event_ms.append(first * 1000)
    cpu = time.process_time() - cpu
    await upstream.close_loop_client()
    return {
        "first_event_ms_median": round(statistics.median(first_event_ms), 2),
        "cpu_ms_per_reply": round(cpu / count * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=200)
    args = parser.parse_args()

    import trustme

    from tests.fake_upstream import FakeUpstream, Reply

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    with FakeUpstream(api_key="bench-key", ssl_context=server_context) as server:
        os.environ["SERIKA_BASE_URL"] = server.base_url
        import django

        django.setup()
        import httpx

        from chat import upstream

        httpx.create_ssl_context = lambda **_: client_context
        results = {}
        for name, seconds in (("kept", upstream.AFTER_DONE_SECONDS), ("closed at [DONE]", 0)):
            upstream.AFTER_DONE_SECONDS = seconds
            server.enqueue(*[Reply(tokens=["Hi", "!"]) for _ in range(5)])
            asyncio.run(_replies(5))  # warm: imports, the first handshake
            server.reset()
            server.enqueue(*[Reply(tokens=["Hi", "!"]) for _ in range(args.replies)])
            results[name] = asyncio.run(_replies(args.replies))
            results[name]["connections"] = len({r.connection_id for r in server.requests})
            server.reset()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

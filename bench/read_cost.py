"""CPU of the upstream read path per token, by how many tokens each network read brings.

Streams replies from the bench's fake upstream through `chat.upstream.stream_completion` (the
app's own code: httpx, httpcore, h11, chat/sse.py, our chunk parser) on uvloop, or on
asyncio's default loop, and divides this process's CPU by the tokens received. Three token gaps
give three read patterns:

- 20 ms apart: every token is a network read of its own (how an idle relay reads);
- 2 ms apart: a few tokens per network read (how a batching relay reads under load);
- no gap: a whole reply in a handful of reads (the floor: per-HTTP-chunk cost alone).

The difference between the first and the last is what a network read costs on top of the
tokens it carries; the last is what each token costs however they are batched (each token is
one HTTP chunk, as the real upstream sends them).

    python -m bench.read_cost [--streams 40] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = [("one token per read", 200, 0.02), ("a few per read", 1000, 0.002), ("floor", 2000, 0)]


async def _measure(upstream, streams: int) -> dict:
    from chat.upstream_network import AsyncioStream

    request = upstream.CompletionRequest(model="bench", messages=[{"role": "user", "content": "x"}])
    reads = 0
    read = AsyncioStream.read

    async def counting_read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        nonlocal reads
        reads += 1
        return await read(self, max_bytes, timeout)

    async def one() -> int:
        tokens = 0
        async for batch in upstream.stream_completion(request):
            tokens += sum(1 for event in batch if isinstance(event, upstream.Delta))
        return tokens

    await asyncio.gather(*(one() for _ in range(4)))  # warm: connections, imports
    AsyncioStream.read = counting_read
    try:
        cpu = time.process_time()
        tokens = sum(await asyncio.gather(*(one() for _ in range(streams))))
        cpu = time.process_time() - cpu
    finally:
        AsyncioStream.read = read
    return {"tokens": tokens, "network_reads": reads, "cpu_us_per_token": cpu / tokens * 1e6}


def run(streams: int = 40, loop: str = "uvloop") -> list[dict]:
    """Measure each pattern with a fresh fake upstream; returns one dict per pattern."""
    import uvloop
    from django.conf import settings

    run_loop = uvloop.run if loop == "uvloop" else asyncio.run

    from chat import upstream

    results = []
    for name, tokens, gap in PATTERNS:
        fake = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.fake_upstream_server", "--tokens", str(tokens)),
                *("--gap", str(gap), "--first-delay", "0.01", "--api-key", "bench-key"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = json.loads(fake.stdout.readline())["port"]
            settings.SERIKA_BASE_URL = f"http://127.0.0.1:{port}/v1"
            settings.SERIKA_API_KEY = "bench-key"
            result = run_loop(_measure(upstream, streams))
        finally:
            fake.terminate()
            fake.wait(10)
        result.update(
            pattern=name, gap_s=gap, tokens_per_read=result["tokens"] / result["network_reads"]
        )
        results.append(result)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "serika_web.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    for row in run(args.streams, args.loop):
        print(
            f"{row['pattern']:>20}: {row['tokens_per_read']:6.1f} tokens per network read, "
            f"{row['cpu_us_per_token']:6.1f} µs CPU per token"
        )

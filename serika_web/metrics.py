"""The process's Prometheus metrics (prometheus_client), served at `/metrics` with a token.

Each daphne process keeps and serves its own registry: Prometheus scrapes every process by its
own address and port (as it scrapes any multi-process service) and sums across them. That
avoids prometheus_client's multiprocess mode, whose files are made for forking servers, not
for independent processes that start and stop on their own.

Updates are a lock and an addition each, made per reply (the time to first token once, at the
first text), never per token or websocket frame (docs/benchmarks.md).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

STREAMS = Gauge("serika_streams_live", "Replies streaming in this process.")
REPLIES = Counter("serika_replies", "Replies finished, by final status.", ["status"])
UPSTREAM_ERRORS = Counter(
    "serika_upstream_errors", "Failed replies by stable error code.", ["code"]
)
TOKENS = Counter(
    "serika_tokens_relayed", "Text pieces (tokens) received from the upstream, added per reply."
)
TIME_TO_FIRST_TOKEN = Histogram(
    "serika_time_to_first_token_seconds",
    "From the start of a reply's upstream request to its first text.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
REPLY_SECONDS = Histogram(
    "serika_reply_seconds",
    "From the start of a reply's upstream request to its final save.",
    buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 600),
)
FLUSH_SECONDS = Histogram(
    "serika_flush_seconds",
    "One save of the partial text of every live reply of the process.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SOCKETS = Gauge("serika_websockets_open", "Chat websockets open on this process.")
DATABASE_ERRORS = Counter(
    "serika_database_errors", "Database calls of live replies that failed (outages)."
)
LAYER_ERRORS = Counter(
    "serika_channel_layer_errors", "Events that could not be published to the channel layer."
)


def metrics_response(request: HttpRequest) -> HttpResponse:
    """The metrics for a request bearing `METRICS_TOKEN`; 404 when no token is configured."""
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse("Not found\n", status=404, content_type="text/plain")
    offered = request.headers.get("Authorization", "")
    if not secrets.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    response = HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response

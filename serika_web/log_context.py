"""Ids that log lines carry (`LOG_FORMAT=json`): request, member, conversation and reply.

They live in context variables: a websocket consumer sets the member and conversation when it
connects (its frames run in its own task), a generation adds its reply (its task starts from the
consumer's context, so it inherits the rest), and `RequestIdMiddleware` sets a request id per
HTTP request (the proxy's `X-Request-ID` when it sends a sane one). `ContextFilter` copies them
onto every record, so any logger's lines carry them without passing them around.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id: ContextVar[int | None] = ContextVar("user_id", default=None)
conversation_id: ContextVar[int | None] = ContextVar("conversation_id", default=None)
reply_id: ContextVar[int | None] = ContextVar("reply_id", default=None)

_FIELDS = {
    "request_id": request_id,
    "user_id": user_id,
    "conversation_id": conversation_id,
    "reply_id": reply_id,
}
# A proxy's request id is logged as given only when it looks like one (no log injection).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ContextFilter(logging.Filter):
    """Adds the ids set in the current context to each record (None where unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _FIELDS.items():
            setattr(record, name, var.get())
        return True


class RequestIdMiddleware:
    """Gives each HTTP request an id for its log lines, echoed in `X-Request-ID`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _begin(self, request: HttpRequest) -> str:
        offered = request.headers.get("X-Request-ID", "")
        rid = offered if _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        request_id.set(rid)
        return rid

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_async:
            return self._acall(request)
        rid = self._begin(request)
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        rid = self._begin(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = rid
        return response

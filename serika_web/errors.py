"""Error pages: a database that cannot be reached (down, or every pooled connection busy past
DATABASE_POOL_TIMEOUT) is a readable 503 that says to try again, never a traceback."""

from __future__ import annotations

import logging
import sys

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """The 503 page. Rendered without the request: its context processors would ask the
    database for the session and the user again."""
    response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django calls it while handling the uncaught exception (from a view or any
    middleware, e.g. the session's), so sys.exc_info() tells which error it was."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError):
        return database_unavailable(request)
    return defaults.server_error(request)

"""Login throttling hooks for django-axes: whose address a login comes from, and the page a
locked-out login gets."""

from __future__ import annotations

import math
import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.debug import SafeExceptionReporterFilter


def client_ip(request: HttpRequest) -> str | None:
    """The client address of a login attempt, as daphne saw it.

    Behind a proxy, daphne's `--proxy-headers` already replaced it with the client's own
    address from X-Forwarded-For; reading that header here instead would let any client pick
    an address and escape the per-address limit.
    """
    return request.META.get("REMOTE_ADDR")


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict | None = None,
) -> HttpResponse:
    """The page of a refused login while its username or address is locked out: HTTP 429,
    when to try again (also as Retry-After), and that an administrator can unlock it."""
    cooloff_seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    response = render(
        request,
        "registration/locked_out.html",
        {
            "cooloff_minutes": max(1, math.ceil(cooloff_seconds / 60)),
            "failure_limit": settings.AXES_FAILURE_LIMIT,
        },
        status=429,
    )
    response["Retry-After"] = str(cooloff_seconds)
    return response


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's, also hiding settings that end in _URL (EMAIL_URL, REDIS_URL): they may carry
    a password, and their names match none of Django's own patterns (KEY, PASS, TOKEN…)."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|_URL$", flags=re.IGNORECASE
    )

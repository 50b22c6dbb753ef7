"""Usage pages: a member's own ("Usage") and the team's for staff, with its CSV export.

Both read the daily aggregates (`DailyUsage`) only: a handful of rows per member and day, never
the messages, so their cost does not grow with the conversations.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import F, Max, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from usage import charts
from usage import models as usage
from usage.models import DailyUsage

CHART_DAYS = 30
# The longest period the team page shows at once (its chart has a bar a day).
MAX_PERIOD_DAYS = 366
CSV_PAGE_ROWS = 2000


def utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


def _summed(rows: QuerySet) -> QuerySet:
    """`rows` (already `.values(...)`) with their tokens and requests added up."""
    return rows.annotate(
        n_requests=Sum("requests"),
        n_prompt=Sum("prompt_tokens"),
        n_completion=Sum("completion_tokens"),
        n_estimated=Sum("estimated_tokens"),
        n_tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
    )


def _by_day(rows: QuerySet) -> dict[date, dict]:
    return {row["day"]: row for row in _summed(rows.values("day"))}


def _chart(by_day: dict[date, dict], days: list[date]) -> charts.Chart:
    counts = {
        day: (row["n_tokens"] - row["n_estimated"], row["n_estimated"])
        for day, row in by_day.items()
    }
    return charts.daily_chart(days, counts)


@dataclass(frozen=True)
class QuotaLine:
    """One of a member's quotas, as the usage page shows it."""

    name: str
    limit: int
    used: int
    reserved: int
    resets: str

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used - self.reserved)

    @property
    def shown_used(self) -> int:
        return min(self.limit, self.used + self.reserved)


@require_GET
@login_required
def my_usage(request: HttpRequest) -> HttpResponse:
    """The member's own usage: today, this month by model and by character, the last 30 days,
    and what their quotas leave."""
    now = timezone.now()
    today = now.astimezone(UTC).date()
    month_start = today.replace(day=1)
    mine = DailyUsage.objects.filter(user=request.user)
    days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
    by_day = _by_day(mine.filter(day__gte=days[0]))
    chart = _chart(by_day, days)
    this_month = mine.filter(day__gte=month_start)
    by_model = list(_summed(this_month.values("model")).order_by("-n_tokens", "model"))
    by_character = [
        {**row, "name": row["name"] or "No character"}
        for row in _summed(this_month.values("character_pk"))
        .annotate(name=Max("character_name"))
        .order_by("-n_tokens", "name")
    ]
    exempt = usage.is_exempt(request.user)
    standing = None if exempt else usage.standing(request.user.pk, now)
    quotas = []
    if standing is not None:
        limits = standing.limits
        if limits.tokens_per_day is not None:
            quotas.append(
                QuotaLine(
                    "Today", limits.tokens_per_day, standing.today, standing.reserved, "00:00 UTC"
                )
            )
        if limits.tokens_per_month is not None:
            quotas.append(
                QuotaLine(
                    "This month",
                    limits.tokens_per_month,
                    standing.this_month,
                    standing.reserved,
                    "the 1st, 00:00 UTC",
                )
            )
    month = {
        "tokens": sum(row["n_tokens"] for row in by_model),
        "requests": sum(row["n_requests"] for row in by_model),
        "estimated": sum(row["n_estimated"] for row in by_model),
    }
    today_bar = chart.bars[-1]
    return render(
        request,
        "usage/mine.html",
        {
            "chart": chart,
            "today": today_bar,
            "today_requests": by_day.get(today, {}).get("n_requests", 0),
            "month": month,
            "month_start": month_start,
            "by_model": by_model,
            "by_character": by_character,
            "exempt": exempt,
            "quotas": quotas,
            "requests_per_minute": standing.limits.requests_per_minute if standing else None,
            "reserved": standing.reserved if standing else 0,
        },
    )


def staff_only(view: Callable) -> Callable:
    """Logged-in staff only; anyone else gets 404, as if the page did not exist."""

    @wraps(view)
    @login_required
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapped


class PeriodForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    by = forms.ChoiceField(
        required=False,
        choices=[
            ("member", "Member"),
            ("group", "Group"),
            ("character", "Character"),
            ("model", "Model"),
        ],
    )

    def clean(self) -> dict:
        data = super().clean()
        end = data.get("end") or utc_today()
        start = data.get("start") or end - timedelta(days=CHART_DAYS - 1)
        if start > end:
            raise forms.ValidationError("The period must start before it ends.")
        if (end - start).days >= MAX_PERIOD_DAYS:
            raise forms.ValidationError(f"Choose a period of at most {MAX_PERIOD_DAYS} days.")
        return {**data, "start": start, "end": end, "by": data.get("by") or "member"}


def _period(request: HttpRequest) -> tuple[PeriodForm, dict]:
    """The period and breakdown asked for, else the last 30 days by member (with the form's
    errors to show)."""
    form = PeriodForm(request.GET or None)
    if form.is_valid():
        return form, form.cleaned_data
    end = utc_today()
    return form, {"start": end - timedelta(days=CHART_DAYS - 1), "end": end, "by": "member"}


# How each breakdown groups the rows, and the column that names a row.
_DIMENSIONS = {
    "member": ["user__username"],
    "group": ["user__groups__name"],
    "character": ["character_pk"],
    "model": ["model"],
}
SORTS = {
    "name": "name",
    "requests": "n_requests",
    "prompt": "n_prompt",
    "completion": "n_completion",
    "estimated": "n_estimated",
    "tokens": "n_tokens",
}


def _breakdown(rows: QuerySet, by: str) -> list[dict]:
    grouped = _summed(rows.values(*_DIMENSIONS[by]))
    if by == "character":
        grouped = grouped.annotate(name=Max("character_name"))
    result = []
    for row in grouped:
        if by == "member":
            name = row["user__username"]
        elif by == "group":
            name = row["user__groups__name"] or "No group"
        elif by == "character":
            name = row["name"] or "No character"
        else:
            name = row["model"]
        result.append({**row, "name": name})
    return result


def _sort_key(sort: str) -> tuple[str, bool]:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    return (key, descending) if key in SORTS else ("tokens", True)


@require_GET
@staff_only
def team_usage(request: HttpRequest) -> HttpResponse:
    """Everyone's usage over a period, by member, group, character or model, sortable, with a
    chart of the days and a CSV export."""
    form, period = _period(request)
    start, end, by = period["start"], period["end"], period["by"]
    sort, descending = _sort_key(request.GET.get("sort", "-tokens"))
    rows = DailyUsage.objects.filter(day__gte=start, day__lte=end)
    table = _breakdown(rows, by)
    field = SORTS[sort]
    table.sort(key=lambda row: str(row[field]).casefold() if field == "name" else row[field])
    if descending:
        table.reverse()
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    by_day = _by_day(rows)
    chart = _chart(by_day, days)
    query = {"start": start.isoformat(), "end": end.isoformat(), "by": by}
    columns = [
        (
            key,
            label,
            urlencode({**query, "sort": key if (key != sort or descending) else f"-{key}"}),
        )
        for key, label in [
            ("name", dict(PeriodForm.base_fields["by"].choices)[by]),
            ("tokens", "Tokens"),
            ("requests", "Replies"),
            ("prompt", "Prompt tokens"),
            ("completion", "Reply tokens"),
            ("estimated", "Estimated"),
        ]
    ]
    today = utc_today()
    presets = [
        ("Last 7 days", today - timedelta(days=6), today),
        ("Last 30 days", today - timedelta(days=29), today),
        ("This month", today.replace(day=1), today),
        ("Last 365 days", today - timedelta(days=364), today),
    ]
    return render(
        request,
        "usage/team.html",
        {
            # The period shown, or what was typed with what is wrong with it.
            "form": form if form.errors else PeriodForm(initial=period),
            "start": start,
            "end": end,
            "by": by,
            "sort": sort,
            "descending": descending,
            "columns": columns,
            "table": table,
            # From the days, not the table: by group, a member in two groups is in two rows.
            "totals": {
                key: sum(row[SORTS[key]] for row in by_day.values())
                for key in ("requests", "prompt", "completion", "estimated", "tokens")
            },
            "chart": chart,
            "csv_url": f"{reverse('team_usage_csv')}?{urlencode(query)}",
            "presets": [
                (label, urlencode({"start": a.isoformat(), "end": b.isoformat(), "by": by}))
                for label, a, b in presets
            ],
            "breakdowns": [
                (key, label, urlencode({**query, "by": key}))
                for key, label in PeriodForm.base_fields["by"].choices
            ],
        },
    )


class _Echo:
    """A file-like object whose write returns the line: csv.writer writes one row at a time."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with = + - @ as a formula: character names come from
    # strangers' cards.
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return f"'{value}"
    return value


CSV_HEADER = [
    "day",
    "member",
    "groups",
    "character",
    "model",
    "replies",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
]


def _member_groups(start: date, end: date) -> dict[int, str]:
    """The groups of each member with usage in the period, as one cell: one query."""
    groups: dict[int, list[str]] = {}
    memberships = get_user_model().groups.through.objects.filter(
        user_id__in=DailyUsage.objects.filter(day__gte=start, day__lte=end).values("user_id")
    )
    for user_id, name in memberships.values_list("user_id", "group__name").order_by("group__name"):
        groups.setdefault(user_id, []).append(name)
    return {user_id: "; ".join(names) for user_id, names in groups.items()}


def _csv_page(start: date, end: date, after: tuple[date, int] | None) -> list[tuple]:
    rows = DailyUsage.objects.filter(day__gte=start, day__lte=end)
    if after is not None:
        day, pk = after
        rows = rows.filter(day__gte=day).exclude(day=day, pk__lte=pk)
    return list(
        rows.order_by("day", "pk").values_list(
            "pk",
            "day",
            "user_id",
            "user__username",
            "character_name",
            "model",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "estimated_tokens",
        )[:CSV_PAGE_ROWS]
    )


async def _csv_lines(start: date, end: date) -> AsyncIterator[str]:
    """The CSV, a page of rows per query (keyset on day and id), so a long period never sits
    in memory whole and no query holds a cursor open across the response."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    groups = await sync_to_async(_member_groups)(start, end)
    after = None
    while True:
        page = await sync_to_async(_csv_page)(start, end, after)
        for _pk, day, user_id, username, character, model, *counts in page:
            yield writer.writerow(
                [
                    day.isoformat(),
                    _cell(username),
                    _cell(groups.get(user_id, "")),
                    _cell(character),
                    _cell(model),
                    *counts,
                ]
            )
        if len(page) < CSV_PAGE_ROWS:
            return
        after = (page[-1][1], page[-1][0])


@require_GET
@staff_only
def team_usage_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every daily row of the period (day, member, groups, character, model, counts), streamed."""
    _, period = _period(request)
    start, end = period["start"], period["end"]
    response = StreamingHttpResponse(_csv_lines(start, end), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-to-{end}.csv"'
    return response

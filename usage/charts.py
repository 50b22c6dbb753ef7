"""Tokens per day as a bar chart: the geometry of a server-rendered SVG (templates/usage/_chart.html).

No script and no inline style (the CSP allows neither): bars are SVG rectangles in a viewBox
stretched to the page's width, colours come from app.css, and the axis labels are HTML around
the SVG, so they keep their size on a phone. Each bar stacks the tokens the upstream counted and
the estimated ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

WIDTH = 600
HEIGHT = 160
GAP = 0.2  # of a bar's slot, left empty between bars
TICKS = 4  # gridlines above zero; the axis labels in the template are the same five


@dataclass(frozen=True)
class Bar:
    day: date
    counted: int
    estimated: int
    x: float
    width: float
    counted_y: float
    counted_height: float
    estimated_y: float
    estimated_height: float

    @property
    def total(self) -> int:
        return self.counted + self.estimated


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    top: int  # the value of the top gridline
    labels: list[str]  # the gridlines' values, top first
    gridlines: list[float]  # their y
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def total(self) -> int:
        return sum(bar.total for bar in self.bars)

    @property
    def peak(self) -> Bar | None:
        best = max(self.bars, key=lambda bar: bar.total, default=None)
        return best if best is not None and best.total else None

    @property
    def axis_days(self) -> list[date]:
        """The days labelled under the chart: the first, the middle and the last."""
        days = [bar.day for bar in self.bars]
        if len(days) <= 2:
            return days
        return [days[0], days[len(days) // 2], days[-1]]


def nice_top(value: int) -> int:
    """The smallest 1, 2, 4, 6 or 8 times 10^k (at least TICKS) that is ≥ `value`, so that the four
    gridlines below it fall on round numbers."""
    if value <= TICKS:
        return TICKS
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover (10 always fits)


def compact(value: float) -> str:
    """12,345 → "12.3k", 2,000,000 → "2M", 7.5 → "7.5": axis labels."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k"), (1, "")):
        if value >= size:
            return f"{value / size:.1f}".removesuffix(".0") + suffix
    return "0"


def daily_chart(days: list[date], counts: dict[date, tuple[int, int]]) -> Chart:
    """Bars for `days` (oldest first) from `counts`: day → (counted, estimated) tokens."""
    top = nice_top(max((sum(counts.get(day, (0, 0))) for day in days), default=0))
    slot = WIDTH / max(len(days), 1)
    bars = []
    for index, day in enumerate(days):
        counted, estimated = counts.get(day, (0, 0))
        counted_height = HEIGHT * counted / top
        estimated_height = HEIGHT * estimated / top
        bars.append(
            Bar(
                day=day,
                counted=counted,
                estimated=estimated,
                x=round(index * slot + slot * GAP / 2, 2),
                width=round(slot * (1 - GAP), 2),
                counted_y=round(HEIGHT - counted_height, 2),
                counted_height=round(counted_height, 2),
                estimated_y=round(HEIGHT - counted_height - estimated_height, 2),
                estimated_height=round(estimated_height, 2),
            )
        )
    values = [top * (TICKS - i) / TICKS for i in range(TICKS + 1)]
    return Chart(
        bars=bars,
        top=top,
        labels=[compact(value) for value in values],
        gridlines=[round(HEIGHT * i / TICKS, 2) for i in range(TICKS + 1)],
    )

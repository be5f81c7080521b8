"""The deadlines chart, drawn on the server as inline SVG: no script, no CDN, prints as is.

Pure: takes a DeadlineChart, returns markup. Text is escaped here because the
result is inserted into the page as trusted markup.
"""

from __future__ import annotations

import math
from html import escape

from worker.ops.dashboard.figures import DeadlineChart

# Colour-blind-safe qualitative palette (Okabe-Ito, then Tol's muted), one per activity.
PALETTE = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#332288",
    "#117733",
    "#882255",
    "#999933",
    "#44AA99",
]

WIDTH, HEIGHT = 960, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 24, 40


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def axis(peak: int, most_ticks: int = 5) -> tuple[int, int]:
    """(top, step) of a y axis with whole-number ticks at 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return 1, 1
    power = 1
    while True:
        for step in (power, 2 * power, 5 * power):
            ticks = math.ceil(peak / step)
            if ticks <= most_ticks:
                return ticks * step, step
        power *= 10


def colours(activities: list[str]) -> dict[str, str]:
    """One colour per activity, by its place among all activities, so it stays put between
    pages whatever falls due."""
    return {activity: colour(i) for i, activity in enumerate(sorted(activities))}


def deadlines_svg(chart: DeadlineChart, palette: dict[str, str] | None = None) -> str:
    """A stacked bar per month, one colour per activity, each bar part titled with its count."""
    palette = palette or colours(chart.activities)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    peak = max((chart.total(month=m.label) for m in chart.months), default=0)
    top, step = axis(peak)
    slot = plot_w / max(len(chart.months), 1)
    bar_w = slot * 0.7
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="chart-title" data-testid="deadline-chart">',
        '<title id="chart-title">Deadlines falling due per month and activity, '
        "next 12 months</title>",
    ]
    for value in range(0, top + 1, step):
        y = TOP + plot_h - plot_h * value / top
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#555">{value:,}</text>'
        )
    for index, month in enumerate(chart.months):
        x = LEFT + index * slot + (slot - bar_w) / 2
        base = TOP + plot_h
        total = 0
        for activity in chart.activities:
            count = chart.counts.get((activity, month.label), 0)
            if not count:
                continue
            height = plot_h * count / top
            base -= height
            total += count
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{max(height, 0.5):.1f}" fill="{palette[activity]}" '
                f'data-activity="{escape(activity)}" data-month="{month.label}" '
                f'data-count="{count}"><title>{escape(activity)}, {month.label}: '
                f"{count}</title></rect>"
            )
        if total:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{base - 4:.1f}" text-anchor="middle" '
                f'font-size="11" fill="#222" data-month-total="{month.label}">{total}</text>'
            )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11" fill="#333">{month.label}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'stroke="#333" stroke-width="1"/>'
    )
    if not chart.counts:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'font-size="14" fill="#555">No deadline falls due in the next 12 months</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(
    chart: DeadlineChart, palette: dict[str, str] | None = None
) -> list[tuple[str, str, int]]:
    """(activity, colour, total over the 12 months), in the bars' stacking order."""
    palette = palette or colours(chart.activities)
    return [
        (activity, palette[activity], chart.total(activity=activity))
        for activity in chart.activities
    ]

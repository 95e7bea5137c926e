"""Inline SVG charts for the console, drawn on the server (no script, no
assets from outside): stacked bars per hour, and horizontal bars."""

from __future__ import annotations

from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 160
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 10, 10, 22
COLOURS = {"succeeded": "#2e7d32", "partial": "#b26a00", "failed": "#ba2121", "items": "#205493"}


def ceiling(value: float) -> int:
    """A round axis top at or above `value` (1, 2 or 5 times a power of ten)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def stacked_bars(
    *, title: str, hours: list[datetime], series: dict[str, list[int]], unit: str = "runs"
) -> SafeString:
    """One bar per hour, its series stacked; each bar says its numbers on hover."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(hours))]
    top = ceiling(max([*totals, 1]))
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / max(len(hours), 1)

    def y(value: float) -> float:
        return PAD_TOP + inner_h - inner_h * value / top

    parts = [
        format_html(
            '<svg class="jobs-chart" viewBox="0 0 {} {}" role="img" aria-label="{}">'
            "<title>{}</title>",
            WIDTH,
            HEIGHT,
            title,
            title,
        )
    ]
    for tick in (0, top / 2, top):
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
                PAD_LEFT,
                WIDTH - PAD_RIGHT,
                f"{y(tick):.1f}",
                f"{y(tick):.1f}",
                PAD_LEFT - 4,
                f"{y(tick) + 4:.1f}",
                f"{tick:,.0f}",
            )
        )
    labels = {0, len(hours) // 2, len(hours) - 1}
    for i in sorted(labels):
        if 0 <= i < len(hours):
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>',
                    f"{PAD_LEFT + step * (i + 0.5):.1f}",
                    HEIGHT - 6,
                    f"{hours[i]:%m-%d %H:00}",
                )
            )
    for i, hour in enumerate(hours):
        base = 0
        for name, values in series.items():
            value = values[i]
            if not value:
                continue
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="bar-{}">'
                    "<title>{} UTC: {} {} {}</title></rect>",
                    f"{PAD_LEFT + step * i + step * 0.1:.1f}",
                    f"{y(base + value):.1f}",
                    f"{max(step * 0.8, 0.5):.1f}",
                    f"{y(base) - y(base + value):.1f}",
                    COLOURS.get(name, "#666"),
                    name,
                    f"{hour:%Y-%m-%d %H:00}",
                    f"{value:,}",
                    name,
                    unit,
                )
            )
            base += value
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def legend(names: list[str]) -> SafeString:
    return format_html_join(
        " ",
        '<span class="jobs-legend"><span class="swatch" style="background:{}"></span>{}</span>',
        ((COLOURS.get(n, "#666"), n) for n in names),
    )


def hbar(value: float, top: float, colour: str = "#205493") -> SafeString:
    """A small horizontal bar, for a table cell."""
    width = 0 if not top else max(1.0, 120 * value / top)
    return format_html(
        '<svg width="124" height="10" role="img" aria-label="{}"><rect width="{}" height="10" '
        'fill="{}"/></svg>',
        f"{value:.1f}",
        f"{width:.1f}",
        colour,
    )

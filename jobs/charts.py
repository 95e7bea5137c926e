"""Inline SVG charts for the console, drawn on the server (no script, no
assets from outside): stacked bars per hour, and horizontal bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Frame:
    """A chart's box: the SVG's size and the padding around its plot."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def inner_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def inner_h(self) -> int:
        return self.height - self.top - self.bottom


FRAME = Frame(WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM)


def axes(
    frame: Frame,
    *,
    css_class: str,
    title: str,
    top: float,
    tick_text: Callable[[float], str],
    x_labels: list[str],
) -> tuple[list[SafeString], Callable[[float], float], float]:
    """A chart's opening tag, its grid at 0, half and `top` with their labels,
    and the first, middle and last of `x_labels` under their slots. Returns
    those parts, the value -> y mapping and the width of one x slot (the
    console's and the analytics page's charts both start here)."""
    step = frame.inner_w / max(len(x_labels), 1)

    def y(value: float) -> float:
        return frame.top + frame.inner_h - frame.inner_h * value / top

    parts = [
        format_html(
            '<svg class="{}" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>',
            css_class,
            frame.width,
            frame.height,
            title,
            title,
        )
    ]
    for tick in (0, top / 2, top):
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
                frame.left,
                frame.width - frame.right,
                f"{y(tick):.1f}",
                f"{y(tick):.1f}",
                frame.left - 4,
                f"{y(tick) + 4:.1f}",
                tick_text(tick),
            )
        )
    for i in sorted({0, len(x_labels) // 2, len(x_labels) - 1}):
        if 0 <= i < len(x_labels):
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>',
                    f"{frame.left + step * (i + 0.5):.1f}",
                    frame.height - 6,
                    x_labels[i],
                )
            )
    return parts, y, step


def stacked_bars(
    *, title: str, hours: list[datetime], series: dict[str, list[int]], unit: str = "runs"
) -> SafeString:
    """One bar per hour, its series stacked; each bar says its numbers on hover."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(hours))]
    top = ceiling(max([*totals, 1]))
    parts, y, step = axes(
        FRAME,
        css_class="jobs-chart",
        title=title,
        top=top,
        tick_text=lambda tick: f"{tick:,.0f}",
        x_labels=[f"{hour:%m-%d %H:00}" for hour in hours],
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

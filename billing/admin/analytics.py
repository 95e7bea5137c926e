"""Billing admin: analytics.

DailyMetrics rows are computed by billing.aggregate_daily_analytics, so they
are read-only here. The chart page (`chart/` under the DailyMetrics admin)
draws one organization's last 30 days as inline SVG, rendered on the server:
no script, no CDN, nothing fetched from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from billing.models import DailyMetrics
from billing.selectors import daily_series
from billing.services.pdf import format_money
from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.charts import Frame, axes
from jobs.tenants import search as tenant_search
from subscriptions.models import Organization

CHART_DAYS = 30
WIDTH, HEIGHT = 640, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 64, 12, 10, 22
FRAME = Frame(WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM)
COLOURS = ("#205493", "#ba2121", "#2e7d32", "#b26a00", "#6a1b9a")


def chart_url(organization_id: int, end: date | None = None) -> str:
    url = reverse("admin:billing_dailymetrics_chart") + f"?organization={organization_id}"
    return url + (f"&end={end.isoformat()}" if end else "")


@dataclass(frozen=True)
class Series:
    label: str
    values: list[int | None]  # None: no row that day
    colour: str


def _number(value: float, *, money: bool) -> str:
    return f"{value / 100:,.2f}" if money else f"{value:,.0f}"


def nice_ceiling(value: float, *, floor: int) -> int:
    """The smallest 2, 4 or 10 times a power of ten at or above `value` (and `floor`),
    so the axis ticks at 0, half and top are round numbers."""
    value = max(value, floor)
    magnitude = 1
    while True:
        for step in (2, 4, 10):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def svg_chart(
    *, title: str, days: list[str], series: list[Series], bars: bool, money: bool = False
) -> SafeString:
    """A small chart: bars side by side per day, or one line per series."""
    known = [v for s in series for v in s.values if v is not None]
    top = nice_ceiling(max([*known, 0]), floor=200 if money else 2)
    inner_h = FRAME.inner_h
    parts, y, step = axes(
        FRAME,
        css_class="billing-chart",
        title=title,
        top=top,
        tick_text=lambda tick: _number(tick, money=money),
        x_labels=[day[5:] for day in days],
    )
    for n, s in enumerate(series):
        if bars:
            width = step * 0.8 / len(series)
            for i, value in enumerate(s.values):
                if not value:
                    continue
                x = PAD_LEFT + step * (i + 0.1) + width * n
                parts.append(
                    format_html(
                        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                        "<title>{} {}: {}</title></rect>",
                        f"{x:.1f}",
                        f"{y(value):.1f}",
                        f"{width:.1f}",
                        f"{PAD_TOP + inner_h - y(value):.1f}",
                        s.colour,
                        days[i],
                        s.label,
                        _number(value, money=money),
                    )
                )
            continue
        segment: list[str] = []
        for i, value in enumerate([*s.values, None]):
            if value is not None:
                segment.append(f"{PAD_LEFT + step * (i + 0.5):.1f},{y(value):.1f}")
                continue
            if len(segment) == 1:
                cx, cy = segment[0].split(",")
                parts.append(
                    format_html('<circle cx="{}" cy="{}" r="2.5" fill="{}"/>', cx, cy, s.colour)
                )
            elif segment:
                parts.append(
                    format_html(
                        '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
                        " ".join(segment),
                        s.colour,
                    )
                )
            segment = []
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def charts_for(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The charts of one organization's series (see billing.selectors.daily_series)."""
    days = [row["day"] for row in series]

    def values(key: str) -> list[int | None]:
        return [None if row["missing"] else row[key] for row in series]

    currency = next((row["currency"] for row in reversed(series) if row["currency"]), "")
    charts = [
        {
            "title": f"Revenue ({currency})" if currency else "Revenue",
            "svg": svg_chart(
                title="Revenue",
                days=days,
                series=[Series("revenue", values("revenue_minor"), COLOURS[0])],
                bars=True,
                money=True,
            ),
        },
        {
            "title": f"MRR ({currency})" if currency else "MRR",
            "svg": svg_chart(
                title="MRR",
                days=days,
                series=[Series("MRR", values("mrr_minor"), COLOURS[0])],
                bars=False,
                money=True,
            ),
        },
        {
            "title": "Active subscriptions",
            "svg": svg_chart(
                title="Active subscriptions",
                days=days,
                series=[Series("active", values("active_subscriptions"), COLOURS[2])],
                bars=False,
            ),
        },
        {
            "title": "New (blue) and churned (red) subscriptions",
            "svg": svg_chart(
                title="New and churned subscriptions",
                days=days,
                series=[
                    Series("new", values("new_subscriptions"), COLOURS[0]),
                    Series("churned", values("churned_subscriptions"), COLOURS[1]),
                ],
                bars=True,
            ),
        },
    ]
    metrics = sorted({code for row in series for code in row["usage"]})
    for n, code in enumerate(metrics):
        usage = [None if row["missing"] else row["usage"].get(code, 0) for row in series]
        charts.append(
            {
                "title": f"Usage: {code}",
                "svg": svg_chart(
                    title=f"Usage: {code}",
                    days=days,
                    series=[Series(code, usage, COLOURS[(n + 3) % len(COLOURS)])],
                    bars=False,
                ),
            }
        )
    return charts


@admin.register(DailyMetrics)
class DailyMetricsAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "day",
        "organization",
        "currency",
        "revenue",
        "new_subscriptions",
        "churned_subscriptions",
        "active_subscriptions",
        "mrr",
        "chart_link",
    )
    list_filter = ("day",)
    list_select_related = ("organization",)
    search_fields = ("=organization__key",)
    search_help_text = "Exact organization key, e.g. org_acme."
    ordering = ("-day", "organization")
    show_full_result_count = False
    change_list_template = "admin/billing/dailymetrics/change_list.html"

    @admin.display(description="revenue", ordering="revenue_minor")
    def revenue(self, obj: DailyMetrics) -> str:
        return format_money(obj.revenue_minor, obj.currency)

    @admin.display(description="MRR", ordering="mrr_minor")
    def mrr(self, obj: DailyMetrics) -> str:
        return format_money(obj.mrr_minor, obj.currency)

    @admin.display(description="chart")
    def chart_link(self, obj: DailyMetrics) -> str:
        return format_html('<a href="{}">30 days</a>', chart_url(obj.organization_id, obj.day))

    def get_urls(self) -> list:
        chart = self.admin_site.admin_view(self.chart_view)
        return [path("chart/", chart, name="billing_dailymetrics_chart"), *super().get_urls()]

    def chart_view(self, request: HttpRequest) -> HttpResponse:
        """One organization's last 30 days (`?organization=<id or key>&end=<date>`)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        wanted = (request.GET.get("organization") or "").strip()
        organization = None
        if wanted:
            lookup = {"pk": wanted} if wanted.isdigit() else {"key": wanted}
            organization = Organization.objects.filter(**lookup).first()
        yesterday = timezone.now().date() - timedelta(days=1)
        end = parse_date(request.GET.get("end") or "") or yesterday
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Daily analytics" + (f": {organization}" if organization else ""),
            "opts": self.model._meta,
            "organization": organization,
            "wanted": wanted,
            "end": end,
            "days": CHART_DAYS,
            "previous": end - timedelta(days=CHART_DAYS),
            "next": end + timedelta(days=CHART_DAYS) if end < yesterday else None,
            "tenant_search_url": reverse("jobs_tenant_search"),
            # No organization yet: a few to pick from, beside the search box.
            "suggestions": [] if organization else tenant_search(wanted, limit=20),
        }
        if organization is not None:
            series = daily_series(organization_id=organization.pk, last_day=end, days=CHART_DAYS)
            context["series"] = series
            context["charts"] = charts_for(series)
            context["has_data"] = any(not row["missing"] for row in series)
        return TemplateResponse(request, "admin/billing/dailymetrics/chart.html", context)

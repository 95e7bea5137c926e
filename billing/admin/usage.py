"""Billing admin: usage.

Metrics and their plan prices are edited here. Events and hourly aggregates
are evidence (read-only) in tables that grow by millions of rows an hour, so
their lists never count the whole table (`show_full_result_count = False`),
filter only on cheap lookups (metric codes from BillableMetric, not a
DISTINCT over the table) and search by exact keys.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.models import (
    BillableMetric,
    PlanMetricPrice,
    UsageAggregate,
    UsageEvent,
    UsageLateHour,
)
from jobs.admin_readonly import ReadOnlyAdminMixin


class PlanMetricPriceInline(admin.TabularInline):
    model = PlanMetricPrice
    extra = 0
    fields = ("plan", "unit_price_minor")


@admin.register(BillableMetric)
class BillableMetricAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "aggregation", "unit")
    list_filter = ("aggregation",)
    search_fields = ("code", "name")
    inlines = [PlanMetricPriceInline]


@admin.register(PlanMetricPrice)
class PlanMetricPriceAdmin(admin.ModelAdmin):
    list_display = ("metric", "plan", "unit_price_minor", "plan_currency")
    list_filter = ("metric", "plan")
    list_select_related = ("metric", "plan")
    search_fields = ("metric__code", "plan__name")

    @admin.display(description="currency")
    def plan_currency(self, obj: PlanMetricPrice) -> str:
        return obj.plan.currency


class MetricCodeFilter(admin.SimpleListFilter):
    """Metric codes as BillableMetric lists them (no DISTINCT over millions of rows)."""

    title = "metric"
    parameter_name = "metric"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(code, code) for code in BillableMetric.objects.values_list("code", flat=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(metric=self.value()) if self.value() else queryset


class BigTableAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    show_full_result_count = False
    list_per_page = 100
    list_select_related = ("organization",)
    list_filter = (MetricCodeFilter,)
    # Exact lookups only: each is served by an index.
    search_fields = ("=organization__key",)
    search_help_text = "Exact organization key, e.g. org_acme."


@admin.register(UsageEvent)
class UsageEventAdmin(BigTableAdmin):
    list_display = (
        "id",
        "organization",
        "metric",
        "quantity",
        "value_key",
        "occurred_at",
        "received_at",
        "idempotency_key",
    )
    ordering = ("-id",)


@admin.register(UsageAggregate)
class UsageAggregateAdmin(BigTableAdmin):
    list_display = ("hour", "organization", "metric", "total", "event_count", "updated_at")
    ordering = ("-hour",)


@admin.register(UsageLateHour)
class UsageLateHourAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Hours waiting for the next billing.aggregate_usage run to rebuild them."""

    list_display = ("hour", "marked_at")

"""Billing admin: usage.

Metrics and their plan prices are edited here; a price is saved through
billing.services.pricing.set_metric_price (tiers inline, checked together),
so bad input is a form error and nothing is written. Events and hourly
aggregates are evidence (read-only) in tables that grow by millions of rows
an hour, so their lists never count the whole table
(`show_full_result_count = False`), filter only on cheap lookups (metric
codes from BillableMetric, not a DISTINCT over the table) and search by exact
keys. The usage ledgers (aggregated hours, months whose usage changed after
aggregation, and what each invoice billed) are read-only too.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.forms import PlanMetricPriceForm, TierFormSet
from billing.models import (
    BillableMetric,
    BilledUsage,
    PlanMetricPrice,
    PriceTier,
    UsageAggregate,
    UsageEvent,
    UsageHour,
    UsageLateHour,
    UsageRevision,
)
from billing.services.pdf import format_money
from billing.services.pricing import price_of, set_metric_price
from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.paginator import EstimatedCountPaginator


def describe(price: PlanMetricPrice) -> str:
    return price_of(price).describe()


class PlanMetricPriceInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The metric's prices, as a person reads them; edited on the price's own page."""

    model = PlanMetricPrice
    extra = 0
    fields = ("plan", "price", "edit")
    readonly_fields = fields

    @admin.display(description="price")
    def price(self, obj: PlanMetricPrice) -> str:
        return describe(obj)

    @admin.display(description="")
    def edit(self, obj: PlanMetricPrice) -> str:
        url = reverse("admin:billing_planmetricprice_change", args=[obj.pk])
        return format_html('<a href="{}">edit</a>', url)


@admin.register(BillableMetric)
class BillableMetricAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "aggregation", "unit")
    list_filter = ("aggregation",)
    search_fields = ("code", "name")
    inlines = [PlanMetricPriceInline]


class PriceTierInline(admin.TabularInline):
    model = PriceTier
    formset = TierFormSet
    extra = 0
    fields = ("first_unit", "last_unit", "unit_price_minor")
    verbose_name = "graduated tier (units first-last inclusive; leave the last one open)"


@admin.register(PlanMetricPrice)
class PlanMetricPriceAdmin(admin.ModelAdmin):
    form = PlanMetricPriceForm
    list_display = ("metric", "plan", "charge_model", "price", "plan_currency")
    list_filter = ("charge_model", "metric", "plan")
    list_select_related = ("metric", "plan")
    search_fields = ("metric__code", "plan__name")
    inlines = [PriceTierInline]

    @admin.display(description="currency")
    def plan_currency(self, obj: PlanMetricPrice) -> str:
        return obj.plan.currency

    @admin.display(description="price")
    def price(self, obj: PlanMetricPrice) -> str:
        return describe(obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """A price belongs to its plan and metric; another pair is another price."""
        return ("plan", "metric") if obj is not None else ()

    def save_model(
        self, request: HttpRequest, obj: PlanMetricPrice, form: BaseForm, change: bool
    ) -> None:
        """Written with its tiers in save_related, through the pricing service."""

    def save_related(
        self, request: HttpRequest, form: BaseForm, formsets: list[Any], change: bool
    ) -> None:
        tiers = next((fs.tiers for fs in formsets if isinstance(fs, TierFormSet)), [])
        data = form.cleaned_data
        price = set_metric_price(
            plan=data.get("plan") or form.instance.plan,
            metric=data.get("metric") or form.instance.metric,
            charge_model=data["charge_model"],
            unit_price_minor=data["unit_price_minor"],
            package_size=data["package_size"],
            tiers=tiers,
        )
        form.instance.pk = price.pk
        for formset in formsets:  # what the admin's change message reads
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


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
    paginator = EstimatedCountPaginator  # no COUNT(*) of millions of rows per page
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


@admin.register(UsageHour)
class UsageHourAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The ledger of aggregated hours the invoice runs check before they bill."""

    list_display = ("hour", "aggregated_at")
    date_hierarchy = "hour"
    show_full_result_count = False


@admin.register(UsageRevision)
class UsageRevisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Months whose usage changed after aggregation: the organization's next
    invoice rechecks them and bills late usage of invoiced months."""

    list_display = ("organization", "period_start", "version", "revised_at")
    list_select_related = ("organization",)
    search_fields = ("=organization__key",)


@admin.register(BilledUsage)
class BilledUsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The usage ledger: what each invoice billed of which month's usage."""

    list_display = (
        "organization",
        "period_start",
        "metric",
        "revision",
        "quantity",
        "amount",
        "invoice_link",
        "created_at",
    )
    list_select_related = ("organization", "invoice")
    list_filter = ("metric",)
    search_fields = ("=organization__key", "=invoice__number")
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: BilledUsage) -> str:
        return format_money(obj.amount_minor, obj.invoice.currency)

    @admin.display(description="invoice")
    def invoice_link(self, obj: BilledUsage) -> str:
        url = reverse("admin:billing_invoice_change", args=[obj.invoice_id])
        return format_html('<a href="{}">{}</a> ({})', url, obj.invoice, obj.invoice.status)

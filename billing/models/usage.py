"""Metered usage: raw events as the product reports them, and hourly aggregates."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone

from maintenance.models import BrinOnPostgresIndex


class AggregationType(models.TextChoices):
    SUM = "sum", "Sum of quantities"
    COUNT = "count", "Number of events"
    MAX = "max", "Largest quantity"
    UNIQUE_COUNT = "unique_count", "Distinct values"


class BillableMetric(models.Model):
    """What the product meters (`api_calls`, `storage_gb`), and how it adds up."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    aggregation = models.CharField(max_length=12, choices=AggregationType.choices)
    unit = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(aggregation__in=[a.value for a in AggregationType]),
                name="billablemetric_aggregation_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.code


class PlanMetricPrice(models.Model):
    """A metric's unit price on one plan, in the plan's currency."""

    plan = models.ForeignKey(
        "subscriptions.Plan", on_delete=models.CASCADE, related_name="metric_prices"
    )
    metric = models.ForeignKey(BillableMetric, on_delete=models.PROTECT, related_name="prices")
    unit_price_minor = models.BigIntegerField(help_text="Price per unit in minor units.")

    class Meta:
        ordering = ["plan", "metric"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "metric"], name="planmetricprice_unique"),
            models.CheckConstraint(
                condition=Q(unit_price_minor__gte=0), name="planmetricprice_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric} on {self.plan}: {self.unit_price_minor}"


class UsageEvent(models.Model):
    """One metered occurrence. A resent event (same idempotency key for the
    organization) is refused by the database, so it is never counted twice."""

    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="usage_events",
        db_index=False,  # led by usageevent_unique_idempotency_key
    )
    metric = models.SlugField(max_length=64, db_index=False, help_text="BillableMetric code.")
    quantity = models.BigIntegerField(default=1)
    # What a unique-count metric counts distinct values of (a user id, say);
    # required for those, ignored by the other types.
    value_key = models.CharField(max_length=128, blank=True, default="")
    occurred_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=128)
    received_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"],
                name="usageevent_unique_idempotency_key",
            ),
        ]
        indexes = [
            # billing.aggregate_usage reads one hour at a time and the cleanup
            # finds old events: events arrive in time order, so a BRIN index
            # (24 kB per 2M rows, against 43 MB of B-tree) serves both and
            # costs next to nothing per insert (measured: bench aggregate_usage).
            BrinOnPostgresIndex(fields=["occurred_at"], name="usageevent_occurred_at_idx"),
            # Unique counts: the hour's (or period's) distinct values come from
            # this index alone, without reading the other events of the hour.
            models.Index(
                fields=["occurred_at", "organization", "metric", "value_key"],
                condition=~Q(value_key=""),
                name="usageevent_values_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric} x{self.quantity} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class UsageAggregate(models.Model):
    """An organization's usage of one metric in one hour (rebuilt, never added to)."""

    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="usage_aggregates",
        db_index=False,  # led by usageaggregate_unique_hour
    )
    metric = models.SlugField(max_length=64)
    hour = models.DateTimeField()
    total = models.BigIntegerField()
    event_count = models.BigIntegerField()
    updated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["organization", "metric", "hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "metric", "hour"], name="usageaggregate_unique_hour"
            ),
        ]
        indexes = [models.Index(fields=["hour"], name="usageaggregate_hour_idx")]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.metric} {self.hour:%Y-%m-%d %H:00}: {self.total}"


class UsageLateHour(models.Model):
    """An hour that received events after it was aggregated: the next
    billing.aggregate_usage run rebuilds it, then removes the mark."""

    hour = models.DateTimeField(unique=True)
    marked_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["hour"]

    def __str__(self) -> str:
        return f"late events in {self.hour:%Y-%m-%d %H:00}"

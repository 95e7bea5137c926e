"""Metered usage: raw events as the product reports them, and hourly aggregates."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone

from core.indexes import BrinOnPostgresIndex


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


class ChargeModel(models.TextChoices):
    """How a metric's period total becomes money (as Lago and Stripe define them)."""

    PER_UNIT = "per_unit", "Per unit"
    PACKAGE = "package", "Package (per block of units, partial blocks rounded up)"
    GRADUATED = "graduated", "Graduated tiers"


class PlanMetricPrice(models.Model):
    """A metric's price on one plan, in the plan's currency.

    * per unit: `unit_price_minor` per unit;
    * package: `unit_price_minor` per block of `package_size` units, a partial
      block billed as a whole one;
    * graduated: the PriceTier rows, each unit at the price of the tier it falls in.

    Written through billing.services.pricing.set_metric_price (or the admin,
    which validates the same way), so tiers are contiguous and start at 0.
    """

    plan = models.ForeignKey(
        "subscriptions.Plan", on_delete=models.CASCADE, related_name="metric_prices"
    )
    metric = models.ForeignKey(BillableMetric, on_delete=models.PROTECT, related_name="prices")
    charge_model = models.CharField(
        max_length=10,
        choices=ChargeModel.choices,
        default=ChargeModel.PER_UNIT,
        db_default=ChargeModel.PER_UNIT,
    )
    unit_price_minor = models.BigIntegerField(
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Minor units (cents): per unit, or per package. Unused by graduated prices.",
    )
    package_size = models.PositiveIntegerField(
        default=1,
        db_default=1,
        validators=[MinValueValidator(1)],
        help_text="Units per package (package prices only).",
    )

    class Meta:
        ordering = ["plan", "metric"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "metric"], name="planmetricprice_unique"),
            models.CheckConstraint(
                condition=Q(unit_price_minor__gte=0), name="planmetricprice_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(charge_model__in=[c.value for c in ChargeModel]),
                name="planmetricprice_charge_model_valid",
            ),
            models.CheckConstraint(
                condition=Q(package_size__gte=1), name="planmetricprice_package_size_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.metric} on {self.plan}: {self.charge_model}"


class PriceTier(models.Model):
    """One tier of a graduated price: units `first_unit`..`last_unit` (inclusive,
    as "0-1,000, 1,001-10,000, 10,001 and above" reads; the first tier starts at
    0, each next one right after the previous, the last has no end) at
    `unit_price_minor` each."""

    price = models.ForeignKey(PlanMetricPrice, on_delete=models.CASCADE, related_name="tiers")
    first_unit = models.BigIntegerField(validators=[MinValueValidator(0)])
    last_unit = models.BigIntegerField(
        null=True, blank=True, help_text="Inclusive; empty for the last tier (and above)."
    )
    unit_price_minor = models.BigIntegerField(
        validators=[MinValueValidator(0)], help_text="Minor units (cents) per unit in this tier."
    )

    class Meta:
        ordering = ["price", "first_unit"]
        constraints = [
            models.UniqueConstraint(fields=["price", "first_unit"], name="pricetier_unique_start"),
            models.CheckConstraint(condition=Q(first_unit__gte=0), name="pricetier_start_positive"),
            models.CheckConstraint(
                condition=Q(unit_price_minor__gte=0), name="pricetier_price_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(last_unit__isnull=True) | Q(last_unit__gte=models.F("first_unit")),
                name="pricetier_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        end = f"{self.last_unit:,}" if self.last_unit is not None else "and above"
        return f"{self.first_unit:,}-{end}: {self.unit_price_minor}"


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


class UsageHour(models.Model):
    """The ledger of aggregated hours: written by every full aggregation of an
    hour (all organizations), so "every hour of the period was aggregated" is
    one indexed read, also for hours that had no events."""

    hour = models.DateTimeField(unique=True)
    aggregated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["-hour"]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} aggregated {self.aggregated_at:%Y-%m-%d %H:%M}"


class UsageRevision(models.Model):
    """An organization's usage of a month changed when an hour of it was rebuilt
    (late events). `version` goes up with every such rebuild. The invoice that
    bills the month, or the next one (as an adjustment line), rechecks the
    month and removes the row only if its version is the one it read, so a
    rebuild racing the invoice leaves its mark for the next invoice."""

    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="usage_revisions",
        db_index=False,  # led by usagerevision_unique_month
    )
    period_start = models.DateField(help_text="First day of the month whose usage changed.")
    version = models.PositiveIntegerField(default=1)
    revised_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["-revised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start"], name="usagerevision_unique_month"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.period_start:%Y-%m} v{self.version}"

"""Tenants, what they can buy, and what they bought.

Status rules live in the database (check constraints), so a bulk UPDATE from
a job, a raw SQL fix or the admin cannot leave a subscription in a state the
code does not understand.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone


class OrganizationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CLOSED = "closed", "Closed"


class PlanInterval(models.TextChoices):
    MONTH = "month", "Monthly"
    YEAR = "year", "Yearly"


class Organization(models.Model):
    """The tenant. `key` is what the API and CLI call `--tenant`."""

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    billing_email = models.EmailField()
    status = models.CharField(
        max_length=10, choices=OrganizationStatus.choices, default=OrganizationStatus.ACTIVE
    )
    timezone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(default=django_timezone.now)
    # What an invoice says about the buyer, and how it is taxed (billing reads
    # these). Database defaults too, so raw-SQL inserts need not know them.
    legal_name = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="On invoices; empty: the name.",
    )
    billing_address = models.TextField(blank=True, default="", db_default="")
    country = models.CharField(
        max_length=2,
        blank=True,
        default="",
        db_default="",
        validators=[RegexValidator(r"^[A-Z]{2}$", "an ISO 3166 code of two capitals, e.g. DE")],
        help_text="ISO 3166-1 alpha-2, e.g. DE.",
    )
    tax_id = models.CharField(
        max_length=40, blank=True, default="", db_default="", help_text="e.g. a VAT id."
    )
    tax_rate_bps = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(10_000, "a tax rate is at most 100%% (10000 bps)")],
        help_text="Basis points (2000 = 20%); empty: INVOICE_TAX_RATE_BPS.",
    )
    tax_name = models.CharField(
        max_length=40,
        blank=True,
        default="",
        db_default="",
        help_text="e.g. VAT; empty: INVOICE_TAX_NAME.",
    )
    stripe_bills_plan_fees = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Stripe already bills the plan fees of this tenant's Stripe-linked "
        "subscriptions: its invoices here carry usage only for those.",
    )

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in OrganizationStatus]),
                name="organization_status_valid",
            ),
            models.CheckConstraint(condition=~Q(key=""), name="organization_key_not_empty"),
            models.CheckConstraint(
                condition=Q(tax_rate_bps__isnull=True) | Q(tax_rate_bps__lte=10_000),
                name="organization_tax_rate_at_most_100_percent",
            ),
            models.CheckConstraint(
                condition=Q(country="") | Q(country__regex=r"^[A-Z]{2}$"),
                name="organization_country_iso3166",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"


class Plan(models.Model):
    name = models.CharField(max_length=100)
    price_minor = models.BigIntegerField(help_text="Price in minor units (cents).")
    currency = models.CharField(max_length=3, help_text="ISO 4217 code, e.g. EUR.")
    interval = models.CharField(max_length=5, choices=PlanInterval.choices)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(price_minor__gte=0), name="plan_price_not_negative"),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="plan_currency_iso4217"
            ),
            models.CheckConstraint(
                condition=Q(interval__in=[i.value for i in PlanInterval]),
                name="plan_interval_valid",
            ),
            models.UniqueConstraint(
                fields=["name", "currency", "interval"], name="plan_unique_name_currency_interval"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.price_minor / 100:.2f} {self.currency}/{self.interval})"


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    EXPIRED = "expired", "Expired (grace, still has access)"
    SUSPENDED = "suspended", "Suspended (no access)"
    CANCELED = "canceled", "Canceled"


class ReconciliationStatus(models.TextChoices):
    """Where the local row stands against the payment provider's copy."""

    PENDING = "PENDING", "Pending"
    SYNCED = "SYNCED", "Synced"
    MISMATCH = "MISMATCH", "Mismatch (local side kept)"
    ERROR = "ERROR", "Error"


# States whose period end moves the subscription to `expired`.
RUNNING_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
)


class Subscription(models.Model):
    # Indexed by subscription_org_status_idx, which leads with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="subscriptions", db_index=False
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(
        max_length=10, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    auto_renew = models.BooleanField(default=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # The provider's copy (payments.gateway), kept in step by subscriptions.sync_renewals.
    # Database defaults too, so rows inserted by raw SQL (bulk loads, benches,
    # fixes by hand) need not know about the Stripe sync's columns.
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="", db_default="")
    cancel_at_period_end = models.BooleanField(default=False, db_default=False)
    last_stripe_sync_at = models.DateTimeField(null=True, blank=True)
    reconciliation_status = models.CharField(
        max_length=10,
        choices=ReconciliationStatus.choices,
        default=ReconciliationStatus.PENDING,
        db_default=ReconciliationStatus.PENDING,
    )
    reconciliation_error = models.TextField(blank=True, default="", db_default="")
    created_at = models.DateTimeField(default=django_timezone.now)
    updated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in SubscriptionStatus]),
                name="subscription_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(reconciliation_status__in=[s.value for s in ReconciliationStatus]),
                name="subscription_reconciliation_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(current_period_end__gt=models.F("current_period_start")),
                name="subscription_period_ends_after_start",
            ),
            models.CheckConstraint(
                condition=~Q(status=SubscriptionStatus.EXPIRED) | Q(expired_at__isnull=False),
                name="subscription_expired_has_expired_at",
            ),
            models.CheckConstraint(
                condition=~Q(status=SubscriptionStatus.SUSPENDED) | Q(suspended_at__isnull=False),
                name="subscription_suspended_has_suspended_at",
            ),
            models.CheckConstraint(
                condition=~Q(status=SubscriptionStatus.CANCELED) | Q(canceled_at__isnull=False),
                name="subscription_canceled_has_canceled_at",
            ),
        ]
        indexes = [
            # subscriptions.expire: running subscriptions by period end ...
            models.Index(
                fields=["current_period_end"],
                condition=Q(status__in=[s.value for s in RUNNING_STATUSES]),
                name="subscription_running_end_idx",
            ),
            # ... and expired ones by when they entered grace.
            models.Index(
                fields=["expired_at"],
                condition=Q(status=SubscriptionStatus.EXPIRED),
                name="subscription_grace_idx",
            ),
            # subscriptions.sync_renewals: linked subscriptions by period end.
            models.Index(
                fields=["organization", "current_period_end"],
                condition=~Q(stripe_subscription_id=""),
                name="subscription_stripe_end_idx",
            ),
            # Per-tenant lists, filters and the expiry guard's counts.
            models.Index(fields=["organization", "status"], name="subscription_org_status_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.organization_id}/{self.plan_id} {self.status}"

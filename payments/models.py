"""Payments taken through a tenant's payment provider, mirrored locally.

Status rules live in the database, so a bulk UPDATE from the reconciliation
job cannot leave a payment in a state the code does not understand.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    REFUNDED = "refunded", "Refunded"


# Payments the reconciliation job checks against the provider.
OPEN_STATUSES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)


class Payment(models.Model):
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="payments"
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        on_delete=models.PROTECT,
        related_name="payments",
        null=True,
        blank=True,
    )
    amount_minor = models.BigIntegerField(help_text="Amount in minor units (cents).")
    currency = models.CharField(max_length=3, help_text="ISO 4217 code, e.g. EUR.")
    provider_reference = models.CharField(
        max_length=255, blank=True, default="", help_text="The Stripe PaymentIntent id."
    )
    status = models.CharField(
        max_length=10, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, default="")
    succeeded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=django_timezone.now)
    updated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in PaymentStatus]),
                name="payment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(amount_minor__gte=0), name="payment_amount_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="payment_currency_iso4217"
            ),
            models.CheckConstraint(
                condition=~Q(status=PaymentStatus.SUCCEEDED) | Q(succeeded_at__isnull=False),
                name="payment_succeeded_has_succeeded_at",
            ),
            models.UniqueConstraint(
                fields=["organization", "provider_reference"],
                condition=~Q(provider_reference=""),
                name="payment_unique_provider_reference",
            ),
        ]
        indexes = [
            # payments.reconcile: open payments by age.
            models.Index(
                fields=["created_at"],
                condition=Q(status__in=[s.value for s in OPEN_STATUSES]),
                name="payment_open_created_idx",
            ),
            # Daily analytics: revenue per organization and day.
            models.Index(
                fields=["succeeded_at"],
                condition=Q(status=PaymentStatus.SUCCEEDED),
                name="payment_succeeded_at_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment {self.pk} {self.amount_minor / 100:.2f} {self.currency} ({self.status})"

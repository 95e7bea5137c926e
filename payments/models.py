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
            # payments.reconcile: one tenant's open payments.
            models.Index(
                fields=["organization", "created_at"],
                condition=Q(status__in=[s.value for s in OPEN_STATUSES]),
                name="payment_open_org_created_idx",
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


class Provider(models.TextChoices):
    STRIPE = "stripe", "Stripe"


class PaymentProviderConfig(models.Model):
    """A tenant's keys for its payment provider.

    Keys are stored encrypted (payments.crypto, FIELD_ENCRYPTION_KEY) and only
    ever shown masked; set them through `payments.services.set_provider_keys`.
    """

    organization = models.OneToOneField(
        "subscriptions.Organization", on_delete=models.CASCADE, related_name="payment_provider"
    )
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.STRIPE)
    secret_key_encrypted = models.TextField(blank=True, default="", editable=False)
    webhook_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    publishable_key = models.CharField(max_length=255, blank=True, default="")
    # The last four characters, kept apart so listing configs decrypts nothing.
    secret_key_last4 = models.CharField(max_length=4, blank=True, default="", editable=False)
    secret_key_prefix = models.CharField(max_length=8, blank=True, default="", editable=False)
    enabled = models.BooleanField(default=False)
    requests_per_second = models.FloatField(
        null=True,
        blank=True,
        help_text="Overrides STRIPE_RATE_LIMIT_PER_SECOND for this tenant.",
    )
    created_at = models.DateTimeField(default=django_timezone.now)
    updated_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["organization_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(provider__in=[p.value for p in Provider]),
                name="payment_provider_valid",
            ),
            models.CheckConstraint(
                condition=Q(enabled=False) | ~Q(secret_key_encrypted=""),
                name="payment_provider_enabled_has_key",
            ),
        ]

    def __str__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"{self.get_provider_display()} for org {self.organization_id} ({state})"

    @property
    def masked_secret_key(self) -> str:
        if not self.secret_key_encrypted:
            return ""
        return f"{self.secret_key_prefix}…{self.secret_key_last4}"


from payments.webhooks.models import StripeWebhookEvent, WebhookEventStatus  # noqa: E402, F401

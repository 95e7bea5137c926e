"""Monthly invoices: one per organization and period, numbered gaplessly."""

from __future__ import annotations

from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone


def invoice_storage() -> Storage:
    """The "invoices" storage alias (MEDIA_ROOT, or S3 when INVOICE_ENABLE_S3)."""
    return storages["invoices"]


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALIZED = "finalized", "Finalized"
    SENT = "sent", "Sent"
    VOID = "void", "Void"


class InvoiceLineKind(models.TextChoices):
    PLAN = "plan", "Plan fee"
    USAGE = "usage", "Usage"
    ADJUSTMENT = "adjustment", "Adjustment"


class InvoiceNumberSequence(models.Model):
    """The last number given out in a year. Locked (SELECT ... FOR UPDATE) while
    an invoice is finalized, so numbers are gapless and never reused."""

    year = models.PositiveSmallIntegerField(primary_key=True)
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last_number}"


class Invoice(models.Model):
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="invoices"
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive: the first day after the period.")
    number = models.CharField(max_length=32, null=True, blank=True, unique=True)
    status = models.CharField(
        max_length=10, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    currency = models.CharField(max_length=3)
    subtotal_minor = models.BigIntegerField(default=0)
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField(default=0)
    pdf = models.FileField(upload_to="invoices/", storage=invoice_storage, blank=True, default="")
    stripe_invoice_id = models.CharField(max_length=255, blank=True, default="")
    email_id = models.BigIntegerField(
        null=True, blank=True, help_text="The OutboundEmail that carries this invoice."
    )
    created_at = models.DateTimeField(default=django_timezone.now)
    finalized_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-period_start", "organization"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in InvoiceStatus]),
                name="invoice_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="invoice_currency_iso4217"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=models.F("period_start")),
                name="invoice_period_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(total_minor=models.F("subtotal_minor") + models.F("tax_minor")),
                name="invoice_total_is_subtotal_plus_tax",
            ),
            # Finalized, sent and void invoices carry a number; drafts don't.
            models.CheckConstraint(
                condition=Q(status=InvoiceStatus.DRAFT, number__isnull=True)
                | (~Q(status=InvoiceStatus.DRAFT) & Q(number__isnull=False)),
                name="invoice_number_iff_not_draft",
            ),
            models.CheckConstraint(
                condition=~Q(status=InvoiceStatus.VOID) | Q(voided_at__isnull=False),
                name="invoice_void_has_voided_at",
            ),
            # One live invoice per organization and period; voided ones stay as history.
            models.UniqueConstraint(
                fields=["organization", "period_start"],
                condition=~Q(status=InvoiceStatus.VOID),
                name="invoice_one_live_per_org_period",
            ),
        ]
        indexes = [
            models.Index(fields=["period_start", "status"], name="invoice_period_status_idx"),
        ]

    def __str__(self) -> str:
        return self.number or f"draft {self.organization_id} {self.period_start:%Y-%m}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=10, choices=InvoiceLineKind.choices)
    description = models.CharField(max_length=300)
    metric = models.SlugField(max_length=64, blank=True, default="")
    quantity = models.BigIntegerField(default=1)
    unit_price_minor = models.BigIntegerField(default=0)
    amount_minor = models.BigIntegerField()

    class Meta:
        ordering = ["invoice", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in InvoiceLineKind]),
                name="invoiceline_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount_minor}"

"""Monthly invoices: one per organization and period, numbered gaplessly;
what usage each invoice billed (the ledger that keeps late usage from being
billed twice)."""

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


class StripeInvoiceStatus(models.TextChoices):
    PAID = "paid", "Paid"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    VOIDED = "voided", "Voided in Stripe"


class InvoiceLineKind(models.TextChoices):
    PLAN = "plan", "Plan fee"
    USAGE = "usage", "Usage"
    ADJUSTMENT = "adjustment", "Adjustment (late usage of an earlier period)"
    MANUAL = "manual", "Manual line (added by staff)"


class NumberSequence(models.Model):
    """The last number given out in a series (INV invoices, CN credit notes) and
    year. Locked (SELECT ... FOR UPDATE) while a document is numbered, so
    numbers are gapless and never reused."""

    series = models.CharField(max_length=8)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["series", "year"]
        constraints = [
            models.UniqueConstraint(fields=["series", "year"], name="numbersequence_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.series}-{self.year}: {self.last_number}"


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
    tax_rate_bps = models.PositiveIntegerField(
        default=0, help_text="The rate applied, in basis points (2000 = 20%)."
    )
    tax_name = models.CharField(max_length=40, blank=True, default="")
    reverse_charge = models.BooleanField(
        default=False, help_text="No tax charged: the buyer accounts for it (reverse charge)."
    )
    # The plan whose metric prices priced the usage (late usage of this period
    # is priced with it too).
    price_plan = models.ForeignKey(
        "subscriptions.Plan",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    issued_on = models.DateField(null=True, blank=True)
    due_on = models.DateField(null=True, blank=True)
    grace_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A draft is finalized once this has passed (kept after: it came from a draft).",
    )
    pdf = models.FileField(upload_to="invoices/", storage=invoice_storage, blank=True, default="")
    stripe_invoice_id = models.CharField(max_length=255, blank=True, default="")
    # What Stripe last said of this invoice (its webhooks: billing.webhooks).
    stripe_payment_status = models.CharField(
        max_length=20, choices=StripeInvoiceStatus.choices, blank=True, default="", db_default=""
    )
    stripe_status_at = models.DateTimeField(
        null=True, blank=True, help_text="When Stripe created the event that set it."
    )
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
            models.CheckConstraint(
                condition=Q(tax_rate_bps__lte=10_000), name="invoice_tax_rate_at_most_100_percent"
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
            # billing.finalize_invoices: drafts by the end of their grace.
            models.Index(
                fields=["grace_until"],
                condition=Q(status=InvoiceStatus.DRAFT),
                name="invoice_draft_grace_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.number or f"draft {self.organization_id} {self.period_start:%Y-%m}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=10, choices=InvoiceLineKind.choices)
    description = models.CharField(max_length=300)
    metric = models.SlugField(max_length=64, blank=True, default="")
    quantity = models.BigIntegerField(default=1)
    unit = models.CharField(max_length=64, blank=True, default="")
    unit_price_minor = models.BigIntegerField(default=0)
    amount_minor = models.BigIntegerField()
    # Adjustment lines: the earlier month whose late usage they bill.
    adjusts_period_start = models.DateField(null=True, blank=True)
    # Manual lines: why, and who added them.
    reason = models.TextField(blank=True, default="")
    added_by = models.CharField(max_length=150, blank=True, default="")

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


class BilledUsage(models.Model):
    """The usage ledger: one row each time an invoice bills an organization's
    usage of a metric for a month (the month's own invoice, or an adjustment
    on a later one). Rows of void invoices no longer count. `revision` numbers
    the billings of one organization, month and metric; two invoices computed
    from the same state would write the same revision, which the unique
    constraint refuses: late usage is never billed twice."""

    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # led by billedusage_unique_revision
    )
    period_start = models.DateField(help_text="The month whose usage was billed.")
    metric = models.SlugField(max_length=64)
    revision = models.PositiveIntegerField()
    quantity = models.BigIntegerField(help_text="Units of the metric this billing added.")
    amount_minor = models.BigIntegerField()
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="billed_usage")
    created_at = models.DateTimeField(default=django_timezone.now)

    class Meta:
        ordering = ["organization", "period_start", "metric", "revision"]
        verbose_name_plural = "billed usage"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start", "metric", "revision"],
                name="billedusage_unique_revision",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.period_start:%Y-%m} {self.metric} r{self.revision}"

"""Credit notes: corrections of finalized invoices, numbered in their own series."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone

from billing.models.invoices import Invoice, InvoiceLine, invoice_storage


class CreditNoteKind(models.TextChoices):
    FULL = "full", "Whole invoice (void or regenerate)"
    LINE = "line", "One line"
    AMOUNT = "amount", "An amount"


class CreditNoteStatus(models.TextChoices):
    ISSUED = "issued", "Issued"
    SENT = "sent", "Sent"


class CreditNote(models.Model):
    """Money given back on one finalized invoice, as its own document
    (CN-<year>-<000001>, a PDF, emailed). Amounts are positive: what is credited."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="credit_notes"
    )
    number = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=6, choices=CreditNoteKind.choices)
    status = models.CharField(
        max_length=6, choices=CreditNoteStatus.choices, default=CreditNoteStatus.ISSUED
    )
    reason = models.TextField()
    currency = models.CharField(max_length=3)
    subtotal_minor = models.BigIntegerField()
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField()
    issued_at = models.DateTimeField(default=django_timezone.now)
    issued_by = models.CharField(max_length=150)
    pdf = models.FileField(
        upload_to="invoices/", storage=invoice_storage, blank=True, default="", max_length=200
    )
    # What happened on the Stripe side: "voided", "deleted", "credit note cn_..." ...
    stripe_result = models.CharField(max_length=255, blank=True, default="")
    email_id = models.BigIntegerField(
        null=True, blank=True, help_text="The OutboundEmail that carries this credit note."
    )
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in CreditNoteKind]),
                name="creditnote_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in CreditNoteStatus]),
                name="creditnote_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(total_minor=models.F("subtotal_minor") + models.F("tax_minor")),
                name="creditnote_total_is_subtotal_plus_tax",
            ),
            models.CheckConstraint(
                condition=Q(total_minor__gte=0), name="creditnote_total_not_negative"
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="creditnote_has_reason"),
            # An invoice is credited in full at most once.
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(kind=CreditNoteKind.FULL),
                name="creditnote_one_full_per_invoice",
            ),
        ]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    invoice_line = models.ForeignKey(
        InvoiceLine, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField(default=1)
    unit = models.CharField(max_length=64, blank=True, default="")
    unit_price_minor = models.BigIntegerField(default=0)
    amount_minor = models.BigIntegerField()

    class Meta:
        ordering = ["credit_note", "id"]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount_minor}"

"""Usage, invoices, credit notes and daily analytics: one module each."""

from billing.models.analytics import DailyMetrics
from billing.models.credit_notes import (
    CreditNote,
    CreditNoteKind,
    CreditNoteLine,
    CreditNoteStatus,
)
from billing.models.invoices import (
    BilledUsage,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
    NumberSequence,
    StripeInvoiceStatus,
)
from billing.models.usage import (
    AggregationType,
    BillableMetric,
    ChargeModel,
    PlanMetricPrice,
    PriceTier,
    UsageAggregate,
    UsageEvent,
    UsageHour,
    UsageLateHour,
    UsageRevision,
)

__all__ = [
    "AggregationType",
    "BillableMetric",
    "BilledUsage",
    "ChargeModel",
    "CreditNote",
    "CreditNoteKind",
    "CreditNoteLine",
    "CreditNoteStatus",
    "DailyMetrics",
    "Invoice",
    "InvoiceLine",
    "InvoiceLineKind",
    "InvoiceStatus",
    "NumberSequence",
    "PlanMetricPrice",
    "PriceTier",
    "StripeInvoiceStatus",
    "UsageAggregate",
    "UsageEvent",
    "UsageHour",
    "UsageLateHour",
    "UsageRevision",
]

"""Usage, invoices and daily analytics: one module each."""

from billing.models.analytics import DailyMetrics
from billing.models.invoices import (
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceNumberSequence,
    InvoiceStatus,
)
from billing.models.usage import (
    AggregationType,
    BillableMetric,
    PlanMetricPrice,
    UsageAggregate,
    UsageEvent,
    UsageLateHour,
)

__all__ = [
    "AggregationType",
    "BillableMetric",
    "DailyMetrics",
    "Invoice",
    "InvoiceLine",
    "InvoiceLineKind",
    "InvoiceNumberSequence",
    "InvoiceStatus",
    "PlanMetricPrice",
    "UsageAggregate",
    "UsageEvent",
    "UsageLateHour",
]

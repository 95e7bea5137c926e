"""Stripe's invoice events for the service's own invoices (registered into payments.webhooks).

An invoice's `stripe_payment_status` follows Stripe's invoice.paid /
invoice.payment_failed / invoice.voided, guarded by the event's own time so
an older event delivered late never overwrites a newer one.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from billing.models import Invoice, StripeInvoiceStatus
from payments.webhooks.models import StripeWebhookEvent
from payments.webhooks.processing import HandlerContext, register_webhook_handler

STATUS_OF = {
    "invoice.paid": StripeInvoiceStatus.PAID,
    "invoice.payment_failed": StripeInvoiceStatus.PAYMENT_FAILED,
    "invoice.voided": StripeInvoiceStatus.VOIDED,
}


@register_webhook_handler(*STATUS_OF)
def apply_invoice_event(event: StripeWebhookEvent, obj: dict[str, Any], ctx: HandlerContext) -> str:
    status = STATUS_OF[event.type]
    invoices = Invoice.objects.filter(
        organization_id=event.organization_id, stripe_invoice_id=obj["id"]
    )
    if not invoices.exists():
        return f"no invoice of this service for Stripe invoice {obj['id']}"
    changed = invoices.filter(
        Q(stripe_status_at__isnull=True) | Q(stripe_status_at__lte=event.created)
    ).update(stripe_payment_status=status, stripe_status_at=event.created)
    if not changed:
        return f"invoice {obj['id']}: a newer Stripe status is recorded; unchanged"
    return f"invoice {obj['id']}: Stripe status {status}"

"""Reads for the reconciliation job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from payments.models import OPEN_STATUSES, Payment, Provider


@dataclass(frozen=True)
class OpenPayment:
    id: int
    organization_id: int
    subscription_id: int | None
    provider_reference: str
    status: str


def open_payments_due(
    *, older_than: datetime, organization_id: int | None = None, limit: int
) -> list[OpenPayment]:
    """Pending or processing payments opened before `older_than`, with a
    PaymentIntent to check, of tenants whose Stripe gateway is enabled."""
    rows = Payment.objects.filter(
        status__in=OPEN_STATUSES,
        created_at__lte=older_than,
        organization__payment_provider__enabled=True,
        organization__payment_provider__provider=Provider.STRIPE,
    ).exclude(provider_reference="")
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    return [
        OpenPayment(*row)
        for row in rows.order_by("created_at", "id").values_list(
            "id", "organization_id", "subscription_id", "provider_reference", "status"
        )[:limit]
    ]

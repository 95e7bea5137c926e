"""Organizations' own details: what invoices say about them."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import record_audit
from subscriptions.models import Organization

BILLING_DETAIL_FIELDS = (
    "legal_name",
    "billing_address",
    "country",
    "tax_id",
    "tax_rate_bps",
    "tax_name",
    "stripe_bills_plan_fees",
)


def update_billing_details(
    *, organization: Organization, actor: str, **changes: Any
) -> Organization:
    """Set the organization's invoice details (legal name, address, country,
    tax id, tax rate and name, whether Stripe bills its plan fees), audited.
    A ValueError naming the problem, and nothing written, for an unknown
    field, a tax rate outside 0-10000 bps (0-100%) or a country that is not
    an ISO 3166 code of two capitals."""
    unknown = sorted(set(changes) - set(BILLING_DETAIL_FIELDS))
    if unknown:
        raise ValueError(f"not a billing detail: {', '.join(unknown)}")
    rate = changes.get("tax_rate_bps")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise ValueError(f"tax_rate_bps must be a whole number of basis points, got {rate!r}")
    before = {name: getattr(organization, name) for name in changes}
    for name, value in changes.items():
        setattr(organization, name, value)
    try:
        organization.clean_fields(
            exclude=[f.name for f in Organization._meta.fields if f.name not in changes]
        )
    except ValidationError as exc:
        for name, value in before.items():
            setattr(organization, name, value)
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise ValueError(problems) from None
    with transaction.atomic():
        organization.save(update_fields=list(changes))
        record_audit(
            actor=actor,
            action="organization.billing_details_changed",
            object_type="subscriptions.organization",
            object_id=organization.pk,
            changes={name: [before[name], changes[name]] for name in changes},
            tenant=organization.key,
        )
    return organization

"""Reads of the outbox that more than one place needs (admin, jobs overview)."""

from __future__ import annotations

from django.db.models import Count

from notifications.models import EmailStatus, OutboundEmail


def status_counts(*, organization_id: int | None = None) -> dict[str, int]:
    """Rows per status, every status present (zero when none): one GROUP BY."""
    rows = OutboundEmail.objects.all()
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    counts = dict.fromkeys(EmailStatus.values, 0)
    for row in rows.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts

"""The outbox's backlog on /metrics (registered with jobs.metrics in ready()).

Both read the partial index on `next_attempt_at` of queued and sending rows,
so they cost the same whatever the outbox's history.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from notifications.models import EmailStatus, OutboundEmail

PENDING = (EmailStatus.QUEUED, EmailStatus.SENDING)


def outbox_metrics() -> Iterable[Metric]:
    pending = GaugeMetricFamily(
        "notifications_outbox_emails",
        "Outbox emails not yet sent, by status (queued: waiting; sending: claimed by a sender).",
        labels=["status"],
    )
    oldest_due = GaugeMetricFamily(
        "notifications_outbox_oldest_due_age_seconds",
        "How long the oldest queued email has been due (0 when none is due).",
    )
    now = timezone.now()
    counts = dict.fromkeys((s.value for s in PENDING), 0)
    rows = (
        OutboundEmail.objects.filter(status__in=PENDING)
        .order_by()
        .values("status")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        counts[row["status"]] = row["n"]
    for status, n in counts.items():
        pending.add_metric([status], n)
    due_since = OutboundEmail.objects.filter(
        status=EmailStatus.QUEUED, next_attempt_at__lte=now
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    oldest_due.add_metric([], (now - due_since).total_seconds() if due_since else 0.0)
    return [pending, oldest_due]

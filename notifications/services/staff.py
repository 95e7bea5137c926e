"""What staff do to queued mail: retry now, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from notifications.models import EmailStatus, OutboundEmail


def retry_now(*, ids: Sequence[int], now: datetime | None = None) -> int:
    """Make queued or failed rows due now, with a fresh set of attempts.

    Rows being sent under a live lease, sent and suppressed rows are left alone.
    """
    now = now or timezone.now()
    retryable = Q(status__in=[EmailStatus.QUEUED, EmailStatus.FAILED]) | Q(
        status=EmailStatus.SENDING, claimed_until__lt=now
    )
    return (
        OutboundEmail.objects.filter(retryable, id__in=list(ids))
        .exclude(status=EmailStatus.SENDING, send_started_at__isnull=False)
        .update(
            status=EmailStatus.QUEUED,
            next_attempt_at=now,
            attempts=0,
            claimed_by="",
            claimed_until=None,
            send_started_at=None,
        )
    )


def cancel(*, ids: Sequence[int], actor: str) -> int:
    """Stop queued rows from being sent; they end `failed`, saying who canceled them."""
    return OutboundEmail.objects.filter(id__in=list(ids), status=EmailStatus.QUEUED).update(
        status=EmailStatus.FAILED, last_error=f"canceled by {actor}"[:2000]
    )

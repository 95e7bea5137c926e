"""One attempt at delivering an alert or a completion notice, on its log row.

Both AlertDelivery and NoticeDelivery rows carry channel, target, payload,
status, attempts and next_attempt_at: a row is claimed first (a conditional
UPDATE, so two evaluators never send it at once), sent through its channel
(jobs.alert_channels), and then marked sent, or pending again with backoff,
or failed after JOBS_ALERT_DELIVERY_MAX_ATTEMPTS.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.alert_channels import DeliveryError, get_channel
from jobs.alert_models import CompletionNotice, DeliveryStatus

logger = logging.getLogger(__name__)


def retry_delay(attempts: int) -> float:
    return min(
        settings.JOBS_ALERT_RETRY_BASE_SECONDS * 2 ** (attempts - 1),
        settings.JOBS_ALERT_RETRY_MAX_SECONDS,
    )


def notice_secret(notice: CompletionNotice) -> str:
    """A notice's own secret, else JOBS_NOTICE_WEBHOOK_SECRET (the API's notices)."""
    return notice.secret or settings.JOBS_NOTICE_WEBHOOK_SECRET


def attempt_delivery(row: Any, *, secret: str) -> bool:
    """Send a pending delivery row once; True when it went out."""
    model = type(row)
    now = timezone.now()
    lease = now + timedelta(seconds=settings.JOBS_WEBHOOK_TIMEOUT_SECONDS * 3 + 30)
    claimed = model.objects.filter(
        pk=row.pk,
        status=DeliveryStatus.PENDING,
        attempts=row.attempts,
        next_attempt_at__lte=now,
    ).update(attempts=row.attempts + 1, next_attempt_at=lease)
    if not claimed:
        return False
    row.attempts += 1
    try:
        channel = get_channel(row.channel)
        code = channel.send(
            row.target, secret, {**row.payload, "delivery": f"{model.__name__}:{row.pk}"}
        )
    except (DeliveryError, LookupError, ValueError) as exc:
        spent = row.attempts >= settings.JOBS_ALERT_DELIVERY_MAX_ATTEMPTS
        model.objects.filter(pk=row.pk).update(
            status=DeliveryStatus.FAILED if spent else DeliveryStatus.PENDING,
            next_attempt_at=None
            if spent
            else timezone.now() + timedelta(seconds=retry_delay(row.attempts)),
            error=str(exc)[:500],
            response_code=getattr(exc, "status_code", None),
        )
        # The target (a URL that may hold a token, addresses) is not logged.
        logger.warning(
            "%s %s #%s failed (attempt %s): %s",
            row.channel,
            model.__name__,
            row.pk,
            row.attempts,
            exc,
        )
        return False
    model.objects.filter(pk=row.pk).update(
        status=DeliveryStatus.SENT,
        sent_at=timezone.now(),
        next_attempt_at=None,
        response_code=code,
        error="",
    )
    return True

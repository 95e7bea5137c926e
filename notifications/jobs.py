"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.context import JobAborted, JobContext
from jobs.registry import job
from notifications.models import EmailStatus, OutboundEmail
from notifications.sending import preview_pending
from notifications.sending import send_pending as send_outbox
from notifications.services import retry_now


@job(
    "notifications.send_pending",
    schedule="* * * * *",
    queue="critical",
    timeout=900,
    supports_item_rerun=True,
)
def send_pending(
    ctx: JobContext,
    *,
    max_emails: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Send due outbox emails at the SES rate limit, in leased batches.

    Safe to run beside other senders (other tenants, other machines): rows are
    claimed with row locks and a lease, and the rate is shared through Redis.
    A rerun of failed items (`email:<id>`) gives those emails a fresh set of
    attempts and sends only them.
    """
    limit = settings.EMAIL_BATCH_MAX_EMAILS if max_emails is None else max_emails
    if limit < 0 or (batch_size is not None and batch_size < 1):
        raise JobAborted("max_emails must be 0 or more and batch_size 1 or more; nothing sent")
    organization_id = ctx.organization_id
    email_ids = _failed_item_ids(ctx.only_items)
    if ctx.dry_run:
        preview = preview_pending(
            max_emails=limit, organization_id=organization_id, email_ids=email_ids
        )
        if email_ids is not None:
            preview["would_retry"] = OutboundEmail.objects.filter(
                id__in=email_ids, status__in=[EmailStatus.FAILED, EmailStatus.QUEUED]
            ).count()
        ctx.count(processed=preview["would_send"] + preview["would_suppress"])
        return {"dry_run": True, **preview}
    started = timezone.now()
    retried = retry_now(ids=email_ids) if email_ids else 0
    report = send_outbox(
        max_emails=limit,
        batch_size=batch_size,
        workers=workers or settings.EMAIL_SEND_WORKERS,
        organization_id=organization_id,
        email_ids=email_ids,
    )
    for email_id, error in report.errors:
        ctx.item_failed(f"email:{email_id}", error)
    ctx.count(
        processed=report.claimed,
        succeeded=report.sent,
        skipped=report.retrying + report.suppressed + report.released,
    )
    ctx.progress(report.claimed, report.claimed)
    seconds = (timezone.now() - started).total_seconds()
    extra = {} if email_ids is None else {"retried_failed_items": retried}
    return {
        **report.as_dict(),
        **extra,
        "seconds": round(seconds, 2),
        "rate_per_second": round(report.sent / seconds, 2) if seconds else None,
        "rate_limit_per_second": settings.AWS_SES_RATE_LIMIT_PER_SECOND,
    }


def _failed_item_ids(only_items: set[str] | None) -> list[int] | None:
    """The outbox ids of a "rerun failed items" selection (`email:<id>` keys)."""
    if only_items is None:
        return None
    ids = []
    for key in only_items:
        kind, _, value = key.partition(":")
        if kind == "email" and value.isdigit():
            ids.append(int(value))
    return sorted(ids)

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
from notifications.services import queue_to_organizations, retry_now


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
    organization_id = ctx.tenant.pk if ctx.tenant is not None else None
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


@job(
    "notifications.send_bulk",
    queue="default",
    timeout=1800,
    impact="queues an email to each chosen organization's billing contact",
)
def send_bulk(
    ctx: JobContext,
    *,
    subject: str,
    template: str = "announcement",
    organizations: str = "",
    message: str = "",
    campaign: str = "",
) -> dict[str, Any]:
    """Queue one email (subject + template) to the billing contact of chosen organizations.

    `organizations` is comma-separated keys; empty means all active ones (or
    the run's tenant). Queued in bulk; `send_pending` sends them at the rate.
    Rerunning the same campaign queues nothing new.
    """
    keys: list[str] | None = [k.strip() for k in organizations.split(",") if k.strip()] or None
    if ctx.tenant is not None:
        keys = [ctx.tenant.key]
    if not subject.strip():
        raise JobAborted("subject is required; nothing queued")
    try:
        from notifications.services import EmailTemplate

        EmailTemplate(template)
    except Exception as exc:
        raise JobAborted(f"unknown email template {template!r}: {exc}") from exc
    name = campaign or f"run{ctx.run.rerun_of_id or ctx.run.pk}"
    result = queue_to_organizations(
        template=template,
        kind=f"notifications.bulk.{template}",
        campaign=name,
        organization_keys=keys,
        subject=subject,
        context={"subject": subject, "message": message},
        dry_run=ctx.dry_run,
    )
    for key in result["unknown"]:
        ctx.item_failed(f"organization:{key}", "unknown organization key")
    if ctx.dry_run:
        ctx.count(processed=result["would_queue"])
    else:
        ctx.count(
            processed=result["organizations"],
            succeeded=result["queued"],
            skipped=result["already_queued"],
        )
    return {"campaign": name, "template": template, "dry_run": ctx.dry_run, **result}

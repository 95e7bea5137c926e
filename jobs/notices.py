"""Completion notices: when a run finishes, tell whoever asked — the run's
schedule's notices (staff, in the admin) and the run's own (the API's
`notify`, or staff for a run they started) — by email and/or webhook, with
its summary, counts, duration and a link to the run.

A failed attempt that will be retried sends nothing: the last attempt does,
for the notices of its first attempt too. Deliveries go through the alert
channels (jobs.alert_channels) and are logged in NoticeDelivery, retried with
backoff by jobs.evaluate_alerts. The invoice job's own summary email
(NOTIFY_ON_COMPLETION / NOTIFY_EMAIL) stays that job's default notice.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from jobs.alert_channels import get_channel
from jobs.alert_models import CompletionNotice, NoticeDelivery, NoticeWhen
from jobs.alerts import run_url
from jobs.deliveries import attempt_delivery, notice_secret
from jobs.models import JobRun, RunStatus, Trigger

logger = logging.getLogger(__name__)

NOTIFY_FIELDS = ("emails", "webhook", "when")
FINISHED = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)


def clean_notify(value: Any) -> dict[str, Any]:
    """The API's `notify` object, validated (ValueError names the problem)."""
    if not isinstance(value, dict):
        raise ValueError("notify must be an object with emails and/or webhook")
    unknown = sorted(set(value) - set(NOTIFY_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown notify field {unknown[0][:50]!r}; allowed: emails, webhook, when"
        )
    emails = value.get("emails") or []
    if isinstance(emails, str):
        emails = [emails]
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise ValueError("notify.emails must be a list of email addresses")
    webhook = value.get("webhook") or ""
    if not isinstance(webhook, str):
        raise ValueError("notify.webhook must be a URL string")
    when = value.get("when", NoticeWhen.ALWAYS)
    if when not in NoticeWhen.values:
        raise ValueError(f"notify.when must be one of {', '.join(NoticeWhen.values)}")
    if not emails and not webhook:
        raise ValueError("notify needs emails or a webhook")
    cleaned = {"emails": "", "webhook_url": "", "when": when}
    try:
        if emails:
            cleaned["emails"] = get_channel("email").validate_target(", ".join(emails))
        if webhook:
            cleaned["webhook_url"] = get_channel("webhook").validate_target(webhook)
    except LookupError as exc:
        raise ValueError(f"notify: {exc}") from None
    return cleaned


def _first_attempt(run: JobRun) -> JobRun:
    first = run
    for _ in range(100):  # bounded: a chain is as long as the policy's retries
        if not first.retry_of_id:
            return first
        first = JobRun.objects.only("pk", "retry_of_id").get(pk=first.retry_of_id)
    return first


def notices_for(run: JobRun) -> list[CompletionNotice]:
    first = _first_attempt(run)
    wanted = Q(run_id__in={run.pk, first.pk})
    if run.trigger == Trigger.SCHEDULE:
        wanted |= Q(schedule__job=run.job)
    return list(CompletionNotice.objects.filter(wanted))


def payload_for(run: JobRun) -> dict[str, Any]:
    duration = run.duration.total_seconds() if run.duration else None
    who = run.job + (f" [{run.tenant}]" if run.tenant else "")
    counts = run.counts
    took = f" in {duration:.1f} s" if duration is not None else ""
    text = (
        f"{who} {run.status}{took}: processed {counts['processed']}, succeeded "
        f"{counts['succeeded']}, failed {counts['failed']}, skipped {counts['skipped']}"
    )
    if run.dry_run:
        text = f"(dry run) {text}"
    if run.status == RunStatus.FAILED and run.error:
        text += f" — {run.error.strip().splitlines()[0][:300]}"
    url = run_url(run.pk)
    return {
        "text": f"{text} <{url}>",
        "subject": f"{who}: run #{run.pk} {run.status}",
        "kind": "completion",
        "job": run.job,
        "tenant": run.tenant,
        "run_id": run.pk,
        "run_url": url,
        "status": run.status,
        "dry_run": run.dry_run,
        "attempt": run.attempt,
        "slot": run.slot.isoformat() if run.slot else None,
        "counts": counts,
        "duration_seconds": duration,
        "summary": run.summary,
        "detail": {"summary": run.summary},
    }


def notify_completion(run: JobRun) -> int:
    """Queue and send the run's notices; how many deliveries were made."""
    if run.status not in FINISHED:
        return 0
    if run.status == RunStatus.FAILED and JobRun.objects.filter(retry_of=run).exists():
        return 0  # another attempt comes; the last one notifies
    notices = notices_for(run)
    if not notices:
        return 0
    payload = payload_for(run)
    made = 0
    for notice in notices:
        if notice.when == NoticeWhen.PROBLEMS and run.status == RunStatus.SUCCEEDED:
            continue
        for channel, target in (("email", notice.emails), ("webhook", notice.webhook_url)):
            if not target:
                continue
            try:
                with transaction.atomic():
                    delivery = NoticeDelivery.objects.create(
                        notice=notice,
                        run=run,
                        channel=channel,
                        target=target,
                        payload=payload,
                        next_attempt_at=timezone.now(),
                    )
            except IntegrityError:
                continue  # already sent for this run
            made += 1
            attempt_delivery(delivery, secret=notice_secret(notice))
    return made

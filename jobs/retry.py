"""Retry policy: a failed run comes back as a new attempt of the same slot.

A job declares its policy in the registry (`@job(..., retry=RetryPolicy(retries=3))`);
staff override it per schedule in the admin (`ScheduleRetryPolicy`). A run that
failed for a transient reason (an exception from the job; not `JobAborted`,
not bad parameters, not a tripped guard, which all raise before or as
`JobAborted`) gets its next attempt as a `queued` JobRun of the same job,
tenant and slot with `attempt + 1`, its checkpoint and `next_attempt_at`.

Exactly once: the slot constraint includes the attempt and `retry_of` is
one-to-one, so two workers finishing (or a redelivered task) never make two
next attempts; the attempt is created only after the failed one is recorded
as finished, and `_mark_running` claims it atomically, so no attempt starts
twice and none overlaps a running one. `send_due_retries` (every scheduler
tick, in each cluster) hands due attempts to the broker, each once.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.enqueue import send_run
from jobs.models import JobAction, JobRun, RunStatus, ScheduleRetryPolicy, Trigger
from jobs.registry import get_job
from jobs.retry_policy import RetryPolicy

logger = logging.getLogger(__name__)


def policy_for(declared: RetryPolicy, run: JobRun) -> RetryPolicy:
    """The job's policy, with its schedule's staff override for scheduled runs."""
    if run.trigger != Trigger.SCHEDULE or run.schedule_key:
        return declared  # a staff's own schedule follows the declared policy
    override = ScheduleRetryPolicy.objects.filter(schedule__job=run.job).first()
    if override is None:
        return declared
    changes = {
        field: value
        for field, value in (
            ("retries", override.retries),
            ("backoff", override.backoff or None),
            ("base", override.base_seconds),
            ("max", override.max_seconds),
            ("jitter", override.jitter),
            ("items", override.retry_failed_items),
        )
        if value is not None
    }
    return replace(declared, **changes)


def schedule_retry(
    policy: RetryPolicy, run: JobRun, *, failed_items: list[str] | None = None
) -> JobRun | None:
    """The next attempt of a finished run, or None when the policy is spent
    (or another worker already made it). `failed_items` makes it an attempt
    of only those items."""
    if run.dry_run or run.attempt > policy.retries:
        return None
    delay = policy.delay(run.attempt)
    now = timezone.now()
    try:
        with transaction.atomic():
            attempt = JobRun.objects.create(
                job=run.job,
                tenant=run.tenant,
                params=run.params,
                dry_run=run.dry_run,
                trigger=run.trigger,
                triggered_by=run.triggered_by,
                slot=run.slot,
                schedule_key=run.schedule_key,
                queue=run.queue,
                attempt=run.attempt + 1,
                retry_of=run,
                rerun_of=run.rerun_of,
                next_attempt_at=now + timedelta(seconds=delay),
                checkpoint=run.checkpoint,
                only_items=failed_items if failed_items is not None else run.only_items,
            )
            JobAction.objects.create(
                actor="platform",
                action="retry_scheduled",
                job=run.job,
                run=attempt,
                detail={
                    "retry_of": run.pk,
                    "attempt": attempt.attempt,
                    "of": policy.retries + 1,
                    "at": attempt.next_attempt_at.isoformat(),
                    "items": failed_items,
                },
            )
    except IntegrityError:
        logger.info("run #%s already has its next attempt", run.pk)
        return None
    logger.warning(
        "run #%s failed (attempt %s of %s); attempt %s at %s (run #%s)",
        run.pk,
        run.attempt,
        policy.retries + 1,
        attempt.attempt,
        f"{attempt.next_attempt_at:%Y-%m-%d %H:%M:%S}",
        attempt.pk,
    )
    return attempt


def retries_spent(policy: RetryPolicy, run: JobRun) -> bool:
    """The run failed and was its policy's last attempt (an alert condition)."""
    return run.status == RunStatus.FAILED and policy.retries > 0 and run.attempt > policy.retries


def send_due_retries(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Hand attempts whose time has come to the broker, each by one caller only
    (a conditional UPDATE of `enqueued_at`). Returns the run ids sent."""
    now = now or timezone.now()
    due = list(
        JobRun.objects.filter(
            status=RunStatus.QUEUED, next_attempt_at__lte=now, enqueued_at__isnull=True
        ).order_by("next_attempt_at")[:limit]
    )
    sent = []
    for run in due:
        claimed = JobRun.objects.filter(
            pk=run.pk, status=RunStatus.QUEUED, enqueued_at__isnull=True
        ).update(enqueued_at=now)
        if not claimed:
            continue
        try:
            spec = get_job(run.job)
        except LookupError:
            logger.error("run #%s names unknown job %r; not sent", run.pk, run.job)
            continue
        run.enqueued_at = now
        send_run(spec, run)
        sent.append(run.pk)
    return sent

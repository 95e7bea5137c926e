"""Dependencies between jobs: a scheduled slot that needs another job's run for
the same period to have succeeded first.

    @job("billing.generate_monthly_invoices", ...,
         after=(Dependency("billing.aggregate_usage", slot=start_of_hour),))

`slot` maps the dependent run's slot to the dependency's slot (default: the
same). Until such a run (any attempt, not a dry run, of the whole platform or
the same tenant) has succeeded, the dependent run waits: it stays `queued`
with `waiting_for` saying what it waits for and is sent again with backoff
(jobs.retry.send_due_retries); after the declared `timeout` it fails with
that reason, which alerts like any failure.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from jobs.dependency_spec import Dependency
from jobs.models import JobRun, RunStatus

logger = logging.getLogger(__name__)


def unmet(after: tuple[Dependency, ...], run: JobRun) -> list[tuple[str, datetime]]:
    """The (job, slot) pairs this run still waits for; one indexed query each."""
    missing = []
    for dependency in after:
        slot = dependency.slot(run.slot)
        done = JobRun.objects.filter(
            job=dependency.job,
            tenant__in={"", run.tenant},
            slot=slot,
            dry_run=False,
            status__in=dependency.statuses,
        ).exists()
        if not done:
            missing.append((dependency.job, slot))
    return missing


def describe(missing: list[tuple[str, datetime]]) -> str:
    return ", ".join(f"{job} {slot:%Y-%m-%d %H:%M}" for job, slot in missing)


def wait_or_fail(run: JobRun, missing: list[tuple[str, datetime]], *, timeout: int) -> bool:
    """Put a queued run back to wait (True), or fail it past its timeout (False)."""
    now = timezone.now()
    waited = (now - run.created_at).total_seconds()
    what = describe(missing)
    if waited >= timeout:
        error = (
            f"dependency not met: {what} did not succeed within {timeout} s "
            f"(waited since {run.created_at:%Y-%m-%d %H:%M:%S} UTC); nothing run"
        )
        JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED,
            error=error,
            finished_at=now,
            next_attempt_at=None,
            waiting_for=f"gave up on {what}"[:300],
        )
        run.refresh_from_db()
        logger.error("run #%s of %s failed: %s", run.pk, run.job, error)
        return False
    delay = min(
        max(settings.JOBS_DEPENDENCY_POLL_BASE_SECONDS, waited),
        settings.JOBS_DEPENDENCY_POLL_MAX_SECONDS,
        max(timeout - waited, 1),
    )
    JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        waiting_for=f"waiting for {what}"[:300],
        next_attempt_at=now + timedelta(seconds=delay),
        enqueued_at=None,
    )
    run.refresh_from_db()
    logger.info("run #%s of %s waits for %s; looks again in %.0f s", run.pk, run.job, what, delay)
    return True

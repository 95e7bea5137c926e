"""Stopping a run: a queued one at once, a running one at its next boundary.

A queued (or interrupted) run is marked `canceled` so its task, when it
arrives, finds nothing to run (jobs.runner.execute_queued). A running one is
asked to stop: `ctx.cancelled()` turns true, the job and the platform's loops
(fan-out chunks, checkpointed batches) stop at the next item or batch
boundary, and the runner ends it `canceled` with its counts and checkpoint.
Either way a JobAction says who and why.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from jobs.models import JobAction, JobRun, RunStatus

CANCELABLE_NOW = (RunStatus.QUEUED, RunStatus.INTERRUPTED)


class NotCancelable(ValueError):
    """The run has finished (or was already asked to stop)."""


def cancel_run(run: JobRun, *, actor: str, reason: str) -> str:
    """Cancel `run`; returns "canceled" (it will not run) or "requested" (it
    stops at its next boundary). Raises NotCancelable for a finished run."""
    reason = reason.strip()[:2000]
    if not reason:
        raise NotCancelable("give a reason: it is recorded with the cancellation")
    now = timezone.now()
    with transaction.atomic():
        stopped = JobRun.objects.filter(pk=run.pk, status__in=CANCELABLE_NOW).update(
            status=RunStatus.CANCELED,
            finished_at=now,
            cancel_requested_at=now,
            cancel_requested_by=actor,
            cancel_reason=reason,
            error=f"canceled by {actor} before it ran: {reason}",
        )
        if stopped:
            outcome = "canceled"
        else:
            asked = JobRun.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, cancel_requested_at__isnull=True
            ).update(cancel_requested_at=now, cancel_requested_by=actor, cancel_reason=reason)
            if not asked:
                run.refresh_from_db()
                if run.status == RunStatus.RUNNING:
                    raise NotCancelable(
                        f"run #{run.pk} was already asked to stop by {run.cancel_requested_by}"
                    )
                raise NotCancelable(f"run #{run.pk} is {run.status}: nothing to cancel")
            outcome = "requested"
        JobAction.objects.create(
            actor=actor,
            action="cancel" if outcome == "canceled" else "cancel_requested",
            job=run.job,
            run=run,
            detail={"reason": reason, "status_before": run.status},
        )
    run.refresh_from_db()
    return outcome

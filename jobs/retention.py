"""Bounded run history: old JobRun rows are deleted in batches.

The jobs platform owns JobRun, so this is its service; `maintenance.cleanup`
calls it weekly (category `job_runs`). What is deleted, by `created_at`:

* succeeded runs older than JOBS_RUN_RETENTION_DAYS (90);
* failed and partial runs older than JOBS_FAILED_RUN_RETENTION_DAYS (365);
* skipped runs older than JOBS_SKIPPED_RUN_RETENTION_DAYS (7): a busy
  every-minute job records one per slot while paused or overlapping;
* never a run still queued, running or interrupted, and never each job's
  (and tenant's) last succeeded run, whatever its age.

A run's item failures and chunks go with it (foreign keys cascade), and so
do its JobActions (deleted here first: their link would only be nulled).
The /metrics counters are kept in JobRunTotals, so they do not drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q

from jobs.models import FINISHED_STATUSES, JobAction, JobItemFailure, JobRun, RunStatus

SAMPLE_SIZE = 20


@dataclass
class PurgeResult:
    removed: int = 0  # or, in a dry run, would remove
    skipped: str = ""  # why nothing ran
    sample: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


def last_successes() -> set[int]:
    """Ids of each (job, tenant)'s last succeeded run (the newest one, by id:
    ids grow with creation time): always kept."""
    return set(
        JobRun.objects.filter(status=RunStatus.SUCCEEDED)
        .order_by()
        .values("job", "tenant")
        .annotate(last=Max("pk"))
        .values_list("last", flat=True)
    )


def purge_job_runs(*, now: datetime, dry_run: bool, batch_size: int) -> PurgeResult:
    """Delete (or, dry, count) runs past their retention, `batch_size` per
    short transaction. `now` is the reference time (the cleanup's slot)."""
    days = {
        "succeeded": settings.JOBS_RUN_RETENTION_DAYS,
        "failed_and_partial": settings.JOBS_FAILED_RUN_RETENTION_DAYS,
        "skipped": settings.JOBS_SKIPPED_RUN_RETENTION_DAYS,
    }
    too_short = {name: n for name, n in days.items() if n < 1}
    if too_short:
        return PurgeResult(skipped=f"retention below 1 day: {too_short}; nothing deleted")
    cutoffs = {name: now - timedelta(days=n) for name, n in days.items()}
    old = (
        Q(status=RunStatus.SUCCEEDED, created_at__lt=cutoffs["succeeded"])
        | Q(
            status__in=[RunStatus.FAILED, RunStatus.PARTIAL],
            created_at__lt=cutoffs["failed_and_partial"],
        )
        | Q(status=RunStatus.SKIPPED, created_at__lt=cutoffs["skipped"])
    )
    kept = last_successes()
    deletable = JobRun.objects.filter(old).exclude(pk__in=kept)
    detail = {
        "retention_days": days,
        "cutoffs": {name: at.isoformat() for name, at in cutoffs.items()},
        "last_successes_kept": len(kept),
    }
    if dry_run:
        sample = [
            f"run #{pk}"
            for pk in deletable.order_by("pk").values_list("pk", flat=True)[:SAMPLE_SIZE]
        ]
        return PurgeResult(removed=deletable.count(), sample=sample, detail=detail)
    removed = 0
    while True:
        with transaction.atomic():
            pks = list(deletable.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            JobAction.objects.filter(run_id__in=pks).delete()
            JobItemFailure.objects.filter(run_id__in=pks).delete()
            JobRun.objects.filter(rerun_of_id__in=pks).update(rerun_of=None)
            removed += JobRun.objects.filter(pk__in=pks).delete()[1].get(JobRun._meta.label, 0)
        if len(pks) < batch_size:
            break
    return PurgeResult(removed=removed, detail=detail)


def clear_idempotency_keys(*, now: datetime, dry_run: bool, batch_size: int) -> PurgeResult:
    """Clear the API idempotency keys of finished runs older than
    API_IDEMPOTENCY_KEY_RETENTION_DAYS (the runs stay); after that a repeated
    key starts a new run."""
    days = settings.API_IDEMPOTENCY_KEY_RETENTION_DAYS
    cutoff = now - timedelta(days=days)
    queryset = JobRun.objects.filter(
        idempotency_key__isnull=False, created_at__lt=cutoff, status__in=FINISHED_STATUSES
    )
    detail = {"retention_days": days, "cutoff": cutoff.isoformat()}
    if dry_run:
        sample = [
            f"run #{pk}"
            for pk in queryset.order_by("pk").values_list("pk", flat=True)[:SAMPLE_SIZE]
        ]
        return PurgeResult(removed=queryset.count(), sample=sample, detail=detail)
    cleared = 0
    while True:
        with transaction.atomic():
            pks = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            cleared += JobRun.objects.filter(pk__in=pks).update(idempotency_key=None)
        if len(pks) < batch_size:
            break
    return PurgeResult(removed=cleared, detail=detail)

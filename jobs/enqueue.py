"""Hand a run to the cluster: record it as `queued`, then enqueue its task.

The admin, the API and reruns go through here; the scheduler goes through
django-q2's Schedule rows and `jobs.runner.run_scheduled`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.tasks import async_task

from jobs.models import CompletionNotice, JobAction, JobRun, RunStatus, Trigger
from jobs.params import coerce_params, params_to_json
from jobs.registry import JobSpec, get_job
from jobs.tenants import resolve

logger = logging.getLogger(__name__)


class IdempotencyConflict(ValueError):
    """The idempotency key belongs to a run of other input."""

    def __init__(self, message: str, *, run: JobRun) -> None:
        super().__init__(message)
        self.run = run


def cluster_for(spec: JobSpec) -> str | None:
    """The django-q2 cluster serving the job's queue (JOBS_QUEUE_CLUSTERS)."""
    return settings.JOBS_QUEUE_CLUSTERS.get(spec.queue)


def q_options(spec: JobSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"timeout": spec.timeout, "group": spec.name}
    cluster = cluster_for(spec)
    if cluster:
        options["cluster"] = cluster
    return options


def enqueue_run(
    name: str,
    *,
    tenant: str = "",
    params: dict[str, Any] | None = None,
    dry_run: bool = False,
    trigger: str = Trigger.API,
    triggered_by: str = "",
    idempotency_key: str | None = None,
    rerun_of: JobRun | None = None,
    only_items: list[str] | None = None,
    notify: dict[str, Any] | None = None,
) -> tuple[JobRun, bool]:
    """Validate and enqueue. Returns (run, created); a repeated idempotency key
    returns the first run with created=False, and raises IdempotencyConflict
    when that run was for other input. Raises ValueError/LookupError
    subclasses for bad input, before anything is written. `notify` (as
    jobs.notices.clean_notify returns it) adds a completion notice for the run."""
    spec = get_job(name)
    stored_params = params_to_json(coerce_params(spec.params, params or {}))
    resolve(tenant)
    replay = {"job": spec.name, "tenant": tenant, "params": stored_params, "dry_run": dry_run}
    if idempotency_key:
        existing = JobRun.objects.filter(idempotency_key=idempotency_key).first()
        if existing:
            return _replayed(existing, replay, spec), False
    try:
        with transaction.atomic():
            run = JobRun.objects.create(
                job=spec.name,
                tenant=tenant,
                params=stored_params,
                dry_run=dry_run,
                trigger=trigger,
                triggered_by=triggered_by,
                queue=spec.queue,
                idempotency_key=idempotency_key or None,
                rerun_of=rerun_of,
                only_items=only_items,
            )
            detail = {"trigger": trigger, "tenant": tenant, "params": run.params}
            if rerun_of:
                detail["rerun_of"] = rerun_of.pk
            if only_items is not None:
                detail["only_items"] = only_items
            JobAction.objects.create(
                actor=triggered_by or trigger,
                action=_action_name(rerun_of=rerun_of, only_items=only_items, dry_run=dry_run),
                job=spec.name,
                run=run,
                detail=detail,
            )
            if notify:
                CompletionNotice.objects.create(run=run, created_by=triggered_by, **notify)
            transaction.on_commit(lambda: send_run(spec, run))
    except IntegrityError:
        if idempotency_key:  # a concurrent request with the same key won
            return (
                _replayed(JobRun.objects.get(idempotency_key=idempotency_key), replay, spec),
                False,
            )
        raise
    return run, True


def _replayed(run: JobRun, replay: dict[str, Any], spec: JobSpec) -> JobRun:
    """Params are compared as the job reads them: PostgreSQL's jsonb hands a
    number back in its own form (2.148314123772527e+16 becomes an int), the
    same value in another type."""
    first = {
        "job": run.job,
        "tenant": run.tenant,
        "params": _as_read(spec, run.params),
        "dry_run": run.dry_run,
    }
    replay = {**replay, "params": _as_read(spec, replay["params"])}
    if first != replay:
        differing = ", ".join(k for k in replay if replay[k] != first[k])
        raise IdempotencyConflict(
            f"idempotency_key was already used for run #{run.pk} with a different {differing}",
            run=run,
        )
    return run


def _as_read(spec: JobSpec, params: Any) -> Any:
    try:
        return coerce_params(spec.params, params)
    except ValueError:  # stored under an older declaration: compare as stored
        return params


def _action_name(*, rerun_of: JobRun | None, only_items: list[str] | None, dry_run: bool) -> str:
    if only_items is not None:
        return "rerun_failed_items"
    if rerun_of:
        return "rerun"
    return "dry_run" if dry_run else "run"


def send_run(spec: JobSpec, run: JobRun) -> None:
    """Hand the committed run's task to the broker. A broker that refuses fails
    a queued run, on record (an interrupted one waits for the lost-task sweep)."""
    try:
        task_id = async_task(
            "jobs.runner.execute_queued",
            run.pk,
            task_name=f"{spec.name}#{run.pk}",
            q_options=q_options(spec),
        )
    except Exception as exc:
        logger.exception("could not enqueue run #%s", run.pk)
        if run.status == RunStatus.INTERRUPTED:
            return
        error = f"could not enqueue: broker unreachable ({type(exc).__name__}: {exc})"
        JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED, error=error, finished_at=timezone.now()
        )
        run.status, run.error = RunStatus.FAILED, error
        return
    now = timezone.now()
    JobRun.objects.filter(pk=run.pk).update(task_id=task_id or "", enqueued_at=now)
    run.task_id, run.enqueued_at = task_id or "", now


def rerun(run: JobRun, *, actor: str, trigger: str, failed_items_only: bool = False) -> JobRun:
    only = None
    if failed_items_only:
        only = list(run.failures.values_list("item_key", flat=True))
        if not only:
            raise ValueError(f"run #{run.pk} has no failed items to rerun")
        if not get_job(run.job).supports_item_rerun:
            raise ValueError(
                f"{run.job} does not rerun single items (it works set-based); rerun the whole run"
            )
    new_run, _ = enqueue_run(
        run.job,
        tenant=run.tenant,
        params=run.params,
        dry_run=run.dry_run,
        trigger=trigger,
        triggered_by=actor,
        rerun_of=run,
        only_items=only,
    )
    return new_run


def requeue_lost_runs(*, limit: int = 100) -> list[int]:
    """Send again the tasks of runs still waiting JOBS_QUEUED_LOST_AFTER_SECONDS
    after their task was sent (queued ones, and interrupted ones waiting to be
    continued): a broker that restarted without persistence lost them, and a
    run the service accepted must run. Each is claimed by one caller only (a
    conditional UPDATE of `enqueued_at`), so several clusters sweeping at once
    send it once; should the old task turn up after all, the run still runs
    once (`jobs.runner._mark_running`). Recorded as a "re-enqueued" JobAction.
    Returns the ids sent again."""
    lost_after = settings.JOBS_QUEUED_LOST_AFTER_SECONDS
    if lost_after <= 0:
        return []
    now = timezone.now()
    cutoff = now - timedelta(seconds=lost_after)
    waiting = (
        JobRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.INTERRUPTED])
        # A retry attempt before its time is not lost (jobs.retry sends it).
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .annotate(sent_at=Coalesce("enqueued_at", "created_at"))
        .filter(sent_at__lt=cutoff)
        .order_by("sent_at")[:limit]
    )
    requeued = []
    for run in waiting:
        same_sending = (
            Q(enqueued_at=run.enqueued_at) if run.enqueued_at else Q(enqueued_at__isnull=True)
        )
        with transaction.atomic():
            claimed = JobRun.objects.filter(same_sending, pk=run.pk, status=run.status).update(
                enqueued_at=now
            )
            if not claimed:
                continue  # another cluster sent it, or a worker took it
            JobAction.objects.create(
                actor="platform",
                action="re-enqueued",
                job=run.job,
                run=run,
                detail={
                    "status": run.status,
                    "waited_seconds": round((now - run.sent_at).total_seconds()),
                    "previous_task_id": run.task_id,
                },
            )
        try:
            spec = get_job(run.job)
        except LookupError:
            logger.error("run #%s names unknown job %r; not re-enqueued", run.pk, run.job)
            continue
        logger.warning(
            "run #%s (%s) waited %.0f s with no cluster taking it: task re-enqueued",
            run.pk,
            run.status,
            (now - run.sent_at).total_seconds(),
        )
        run.enqueued_at = now
        send_run(spec, run)
        requeued.append(run.pk)
    return requeued

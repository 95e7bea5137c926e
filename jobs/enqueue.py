"""Hand a run to the cluster: record it as `queued`, then enqueue its task.

The admin, the API and reruns go through here; the scheduler goes through
django-q2's Schedule rows and `jobs.runner.run_scheduled`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.tasks import async_task

from jobs.models import JobAction, JobRun, RunStatus, Trigger
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
) -> tuple[JobRun, bool]:
    """Validate and enqueue. Returns (run, created); a repeated idempotency key
    returns the first run with created=False, and raises IdempotencyConflict
    when that run was for other input. Raises ValueError/LookupError
    subclasses for bad input, before anything is written."""
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
            transaction.on_commit(lambda: _send(spec, run))
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


def _send(spec: JobSpec, run: JobRun) -> None:
    """Enqueue the committed run; a broker that refuses fails the run, on record."""
    try:
        task_id = async_task(
            "jobs.runner.execute_queued",
            run.pk,
            task_name=f"{spec.name}#{run.pk}",
            q_options=q_options(spec),
        )
    except Exception as exc:
        logger.exception("could not enqueue run #%s", run.pk)
        error = f"could not enqueue: broker unreachable ({type(exc).__name__}: {exc})"
        JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED, error=error, finished_at=timezone.now()
        )
        run.status, run.error = RunStatus.FAILED, error
        return
    JobRun.objects.filter(pk=run.pk).update(task_id=task_id or "")
    run.task_id = task_id or ""


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

"""The one entry point that runs every job, whatever triggered it.

`run_job` validates, claims the run (slot and concurrency are enforced by the
database's unique indexes on JobRun), calls the job with a context, and
records the outcome. No exception from a job escapes without a record.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs import run_log, shutdown
from jobs.alerts import evaluate_run
from jobs.context import JobAborted, JobContext, RunCanceled
from jobs.custom_schedules import default_schedule_excludes
from jobs.dependencies import unmet, wait_or_fail
from jobs.enqueue import send_run
from jobs.logging import job_log_context
from jobs.models import JobAction, JobRun, RunStatus, ScheduleState, Trigger
from jobs.notices import notify_completion
from jobs.params import ParamError, coerce_params, params_to_json
from jobs.registry import JobSpec, get_job
from jobs.retry import policy_for, schedule_retry
from jobs.tenants import resolve

logger = logging.getLogger(__name__)


class SlotTaken(Exception):
    """`run_job` for a slot that already has a run: nothing was run."""

    def __init__(self, run: JobRun) -> None:
        super().__init__(f"not run: slot already has run #{run.pk} ({run.status})")
        self.run = run


def stale_cutoff() -> datetime:
    return timezone.now() - timedelta(seconds=settings.JOBS_STALE_AFTER_SECONDS)


def run_job(
    name: str,
    *,
    tenant: str = "",
    params: dict[str, Any] | None = None,
    dry_run: bool = False,
    trigger: str = Trigger.CLI,
    triggered_by: str = "",
    slot: datetime | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> JobRun:
    """Run a job now, in this process. Bad name, tenant or params raise before
    anything is recorded (ValueError/LookupError subclasses); a slot that
    already has a run raises SlotTaken (that run unchanged)."""
    spec = get_job(name)
    coerced = coerce_params(spec.params, params or {})
    resolve(tenant)
    run = JobRun(
        job=spec.name,
        tenant=tenant,
        params=params_to_json(coerced),
        dry_run=dry_run,
        trigger=trigger,
        triggered_by=triggered_by,
        slot=slot,
        queue=spec.queue,
    )
    return _claim_and_execute(spec, run, on_progress=on_progress, refuse_taken_slot=True)


def run_scheduled(job: str, slot: str | None = None, tenant: str = "") -> int | None:
    """django-q2 Schedule target. `slot` comes from `intended_date_kwarg`."""
    slot_at = datetime.fromisoformat(slot) if slot else timezone.now()
    try:
        spec = get_job(job)
    except LookupError:
        logger.error("schedule names unknown job %r; nothing run", job)
        return None
    run = JobRun(
        job=spec.name,
        tenant=tenant,
        trigger=Trigger.SCHEDULE,
        triggered_by="scheduler",
        slot=slot_at,
        queue=spec.queue,
    )
    reason = _schedule_blocked_reason(spec.name)
    if reason:
        run.status = RunStatus.SKIPPED
        run.error = reason
        run.finished_at = timezone.now()
        try:
            with transaction.atomic():
                run.save()
        except IntegrityError:
            return None  # this slot was already recorded
        logger.info("slot %s of %s skipped: %s", slot_at, spec.name, reason)
        return run.pk
    return _claim_and_execute(spec, run).pk


WAITING_STATUSES = (RunStatus.QUEUED, RunStatus.INTERRUPTED)
RETRY_BUSY_WAIT_SECONDS = 30
INTERRUPTED_ERROR = (
    "interrupted: its cluster shut down before the run finished (SIGTERM, "
    "Q_SHUTDOWN_GRACE_SECONDS); the next cluster continues it from its checkpoint"
)


def execute_queued(run_id: int) -> int:
    """django-q2 task target for runs enqueued by the admin or the API, and for
    interrupted runs handed to the next cluster (continued, not restarted)."""
    run = JobRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.info("run %s no longer exists; nothing run", run_id)
        return run_id
    if run.status not in WAITING_STATUSES:
        logger.info("run %s is %s, not queued; not run again", run_id, run.status)
        return run.pk
    if run.next_attempt_at and run.next_attempt_at > timezone.now():
        # Early (a stray redelivery): give it back to jobs.retry.send_due_retries.
        JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(enqueued_at=None)
        logger.info(
            "attempt %s of run %s is not due until %s", run.attempt, run_id, run.next_attempt_at
        )
        return run.pk
    return _claim_and_execute(get_job(run.job), run).pk


def _schedule_blocked_reason(job: str) -> str:
    if not settings.BACKGROUND_JOBS_ENABLED:
        return "background jobs are disabled (BACKGROUND_JOBS_ENABLED=false)"
    state = ScheduleState.objects.filter(job=job, paused=True).first()
    if state:
        return f"schedule paused by {state.paused_by}: {state.pause_reason}"
    return ""


def _claim_and_execute(
    spec: JobSpec,
    run: JobRun,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    refuse_taken_slot: bool = False,
) -> JobRun:
    if run.pk is None:
        try:
            with transaction.atomic():
                run.save()
        except IntegrityError:
            taken_over = _take_over_abandoned_slot(run)
            if taken_over is None:
                existing = _latest_attempt(run)
                logger.info(
                    "slot %s of %s already has run #%s (%s); not run again",
                    run.slot,
                    run.job,
                    existing.pk,
                    existing.status,
                )
                if refuse_taken_slot:
                    raise SlotTaken(existing) from None
                return existing
            run = taken_over
    if _waits_for_dependency(spec, run):
        return run
    if run.status != RunStatus.RUNNING and not _mark_running(run):
        return run
    return _execute(spec, run, on_progress=on_progress)


def _latest_attempt(run: JobRun) -> JobRun:
    """The slot's run: its latest attempt (jobs.retry)."""
    return (
        JobRun.objects.filter(
            job=run.job, tenant=run.tenant, schedule_key=run.schedule_key, slot=run.slot
        )
        .order_by("-attempt")
        .first()
    )


def _waits_for_dependency(spec: JobSpec, run: JobRun) -> bool:
    """A queued scheduled slot whose dependencies have not succeeded waits
    (True), or, past the job's `after_timeout`, fails saying why (True too:
    nothing runs). Other runs and met dependencies: False."""
    if not spec.after or run.trigger != Trigger.SCHEDULE or run.status != RunStatus.QUEUED:
        return False
    missing = unmet(spec.after, run)
    if not missing:
        if run.waiting_for:
            JobRun.objects.filter(pk=run.pk).update(waiting_for="")
            run.waiting_for = ""
        return False
    if not wait_or_fail(run, missing, timeout=spec.after_timeout):
        _evaluate_alerts(run)
    return True


def _take_over_abandoned_slot(run: JobRun) -> JobRun | None:
    """A redelivered task for a slot whose worker died continues that run:
    one that stopped heartbeating while running, or never got past queued
    (a queued retry attempt waits for its time, jobs.retry)."""
    latest = _latest_attempt(run)
    if latest.status == RunStatus.QUEUED and latest.next_attempt_at is not None:
        return None
    slot_run = JobRun.objects.filter(pk=latest.pk)
    cutoff = stale_cutoff()
    claimed = slot_run.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).update(
        heartbeat_at=timezone.now(), attempts=F("attempts") + 1
    )
    taken = slot_run.get()
    if claimed or (taken.status == RunStatus.QUEUED and taken.created_at < cutoff):
        # A queued one is claimed atomically by _mark_running, like any other.
        logger.warning("run #%s was abandoned by its worker; continuing it", taken.pk)
        return taken
    return None


def _mark_running(run: JobRun) -> bool:
    """Claim a queued (or interrupted) run: move it to running. False if another
    worker claimed it first (a redelivered task), or if another run of the same
    job and tenant holds the running slot (then a queued run is recorded as
    skipped; an interrupted one waits, and is sent again later)."""
    for _ in range(2):
        now = timezone.now()
        continuing = run.status == RunStatus.INTERRUPTED
        try:
            with transaction.atomic():
                claimed = JobRun.objects.filter(pk=run.pk, status=run.status).update(
                    status=RunStatus.RUNNING,
                    started_at=run.started_at if continuing else now,
                    heartbeat_at=now,
                    finished_at=None,
                    attempts=F("attempts") + 1,
                )
        except IntegrityError:
            holder = (
                JobRun.objects.filter(job=run.job, tenant=run.tenant, status=RunStatus.RUNNING)
                .exclude(pk=run.pk)
                .first()
            )
            if holder and _fail_if_abandoned(holder):
                continue
            if run.attempt > 1 and not continuing:
                # A retry attempt is not dropped for a run of another slot: it
                # waits a little and is sent again (jobs.retry.send_due_retries).
                JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                    enqueued_at=None,
                    next_attempt_at=timezone.now() + timedelta(seconds=RETRY_BUSY_WAIT_SECONDS),
                )
                logger.info(
                    "attempt %s of run #%s waits: %s is running", run.attempt, run.pk, run.job
                )
                return False
            if continuing:
                logger.info(
                    "interrupted run #%s waits: run #%s of %s is running",
                    run.pk,
                    holder.pk if holder else "?",
                    run.job,
                )
                return False
            reason = (
                f"already running: run #{holder.pk} "
                f"started {holder.started_at:%Y-%m-%d %H:%M:%S} UTC"
                if holder
                else "already running"
            )
            JobRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.SKIPPED, error=reason, finished_at=timezone.now()
            )
            run.refresh_from_db()
            logger.info("run #%s of %s skipped: %s", run.pk, run.job, reason)
            return False
        run.refresh_from_db()
        if not claimed:
            logger.info("run #%s was claimed by another worker; not run again", run.pk)
        return bool(claimed)
    return False


def _fail_if_abandoned(holder: JobRun) -> bool:
    return bool(
        JobRun.objects.filter(
            pk=holder.pk, status=RunStatus.RUNNING, heartbeat_at__lt=stale_cutoff()
        ).update(
            status=RunStatus.FAILED,
            finished_at=timezone.now(),
            error="abandoned: its worker stopped sending heartbeats",
        )
    )


def _resume_state(run: JobRun) -> Any:
    if run.checkpoint is not None:
        return run.checkpoint  # a taken-over slot continues its own run
    if run.rerun_of_id:
        # A rerun continues a run that crashed or was canceled; a finished run is done again.
        stopped = (RunStatus.FAILED, RunStatus.CANCELED)
        return run.rerun_of.checkpoint if run.rerun_of.status in stopped else None
    last_good = (
        JobRun.objects.filter(
            job=run.job,
            tenant=run.tenant,
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTIAL],
        )
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    crashed = JobRun.objects.filter(
        job=run.job,
        tenant=run.tenant,
        dry_run=run.dry_run,
        status__in=[RunStatus.FAILED, RunStatus.CANCELED],
        checkpoint__isnull=False,
    ).exclude(pk=run.pk)
    if last_good:
        crashed = crashed.filter(Q(finished_at__gt=last_good) | Q(finished_at__isnull=True))
    for candidate in crashed.order_by("-created_at")[:5]:
        if candidate.params == run.params:
            return candidate.checkpoint
    return None


def _execute(
    spec: JobSpec,
    run: JobRun,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> JobRun:
    with job_log_context(job=run.job, run_id=run.pk, tenant=run.tenant):
        status, error, summary = RunStatus.FAILED, "", {}
        ctx = None
        interrupted = False
        transient = False  # failed in the job itself: worth another attempt
        capture = run_log.attach(run.pk)
        heartbeat = _Heartbeat(run.pk, capture)
        try:
            params = coerce_params(spec.params, run.params)
            ctx = JobContext(
                run=run,
                tenant=resolve(run.tenant),
                params=params,
                resume_state=_resume_state(run),
                on_progress=on_progress,
            )
            if run.trigger == Trigger.SCHEDULE and not run.schedule_key and not run.tenant:
                ctx.excluded_tenants = default_schedule_excludes(spec)
            logger.info("started (%s by %s)", run.trigger, run.triggered_by or "-")
            heartbeat.start()
            transient = True
            with shutdown.interruptible():
                result = spec.func(ctx, **params)
            summary = dict(result or {})
            status = RunStatus.PARTIAL if ctx.counts["failed"] else RunStatus.SUCCEEDED
        except JobAborted as exc:
            transient = False
            error, summary = str(exc), exc.summary
            logger.warning("aborted: %s", exc)
        except RunCanceled:
            transient = False
            status, error = RunStatus.CANCELED, _canceled_error(run.pk)
            logger.warning("%s", error)
        except Exception as exc:
            transient = transient and not isinstance(exc, ParamError)
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=20)}"
            logger.exception("failed")
        except shutdown.ShutdownInterrupt:
            interrupted, status, error = True, RunStatus.INTERRUPTED, INTERRUPTED_ERROR
            logger.warning("interrupted at shutdown; handed to the next cluster")
        finally:
            heartbeat.stop()
            counts = ctx.counts if ctx else {}
            JobRun.objects.filter(pk=run.pk).update(
                status=status,
                finished_at=None if interrupted else timezone.now(),
                error=error,
                summary=_jsonable(summary),
                **counts,
            )
        if interrupted:
            run_log.detach(capture)
            _hand_to_next_cluster(spec, run)
            raise shutdown.ShutdownInterrupt()
        run.refresh_from_db()
        logger.info(
            "finished %s: processed=%s succeeded=%s failed=%s skipped=%s",
            run.status,
            run.processed,
            run.succeeded,
            run.failed,
            run.skipped,
        )
        run_log.detach(capture)
        _retry_if_due(spec, run, transient=transient)
        _evaluate_alerts(run)
        return run


def _retry_if_due(spec: JobSpec, run: JobRun, *, transient: bool) -> None:
    """A transient failure gets its next attempt; a partial run, with the
    policy's `items`, an attempt of its failed items (jobs.retry)."""
    try:
        if run.status == RunStatus.FAILED and transient:
            schedule_retry(policy_for(spec.retry, run), run)
        elif run.status == RunStatus.PARTIAL and spec.supports_item_rerun:
            policy = policy_for(spec.retry, run)
            if policy.items:
                keys = list(run.failures.values_list("item_key", flat=True))
                if keys:
                    schedule_retry(policy, run, failed_items=keys)
    except Exception:  # the run is recorded; a retry that could not be made is logged
        logger.exception("could not schedule the next attempt of run #%s", run.pk)


def _evaluate_alerts(run: JobRun) -> None:
    """The run's alert rules (jobs.alerts) and completion notices (jobs.notices),
    at its end; neither ever fails the run."""
    try:
        evaluate_run(run)
    except Exception:
        logger.exception("alert rules could not be evaluated for run #%s", run.pk)
    try:
        notify_completion(run)
    except Exception:
        logger.exception("completion notices could not be sent for run #%s", run.pk)


def _canceled_error(run_id: int) -> str:
    asked = JobRun.objects.filter(pk=run_id).values("cancel_requested_by", "cancel_reason").first()
    who = (asked or {}).get("cancel_requested_by") or "staff"
    why = (asked or {}).get("cancel_reason") or "no reason given"
    return f"canceled by {who}: {why} (counts so far and checkpoint kept; a rerun continues)"


def _hand_to_next_cluster(spec: JobSpec, run: JobRun) -> None:
    """Record the interruption and enqueue the run's continuation: whichever
    cluster takes the task continues the same run (its slot) from its
    checkpoint, once (`_mark_running`). Should the task be lost, the platform
    sends it again after JOBS_QUEUED_LOST_AFTER_SECONDS (jobs.enqueue)."""
    run.refresh_from_db()
    JobAction.objects.create(
        actor="cluster",
        action="interrupted",
        job=run.job,
        run=run,
        detail={
            "grace_seconds": settings.Q_SHUTDOWN_GRACE_SECONDS,
            "checkpoint": run.checkpoint is not None,
        },
    )
    send_run(spec, run)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


class _Heartbeat:
    """Refreshes `heartbeat_at` while a run works, so a dead worker is noticed.

    Off when JOBS_HEARTBEAT_SECONDS is 0, and inside an open transaction (a
    second connection could not see the uncommitted run).
    """

    def __init__(self, run_id: int, capture: run_log.RunLogCapture | None = None) -> None:
        self.run_id = run_id
        self.capture = capture
        self.interval = settings.JOBS_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or connection.in_atomic_block:
            return
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-run-{self.run_id}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                JobRun.objects.filter(pk=self.run_id, status=RunStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
                if self.capture is not None:
                    self.capture.flush_to_db()
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

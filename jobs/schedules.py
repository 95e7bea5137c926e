"""Schedules: django-q2 Schedule rows made from the registry, paused and resumed.

A job's schedule calls `jobs.runner.run_scheduled(job=..., slot=...)`, the slot
being django-q2's `intended_date_kwarg`: the time the run was meant for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from jobs.cron import next_runs, normalize_cron
from jobs.enqueue import cluster_for, q_options
from jobs.models import JobAction, ScheduleState
from jobs.registry import JobSpec, all_jobs

RUNNER = "jobs.runner.run_scheduled"
HEARTBEAT_SCHEDULE = "jobs.cluster_heartbeat"
HEARTBEAT_FUNC = "jobs.heartbeat.beat"


@dataclass(frozen=True)
class SyncResult:
    job: str
    action: str  # created, updated, unchanged, kept, pruned
    detail: str = ""


def sync_schedules(*, prune: bool = False) -> list[SyncResult]:
    """Create missing schedules; never overwrite one staff edited. Idempotent."""
    results = []
    with transaction.atomic():
        for spec in all_jobs():
            if spec.schedule:
                results.append(_sync_one(spec))
        results.append(_sync_heartbeat())
        if prune:
            scheduled = {s.name for s in all_jobs() if s.schedule}
            for state in ScheduleState.objects.exclude(job__in=scheduled).select_related(
                "schedule"
            ):
                state.schedule.delete()
                results.append(SyncResult(state.job, "pruned", "job no longer exists"))
    return results


def _sync_one(spec: JobSpec) -> SyncResult:
    state = ScheduleState.objects.select_related("schedule").filter(job=spec.name).first()
    if state is None:
        schedule = Schedule.objects.create(
            name=spec.name,
            func=RUNNER,
            kwargs=repr({"job": spec.name, "q_options": q_options(spec)}),
            schedule_type=Schedule.CRON,
            cron=spec.schedule,
            repeats=-1,
            intended_date_kwarg="slot",
            cluster=cluster_for(spec),
        )
        ScheduleState.objects.create(schedule=schedule, job=spec.name, synced_cron=spec.schedule)
        return SyncResult(spec.name, "created", spec.schedule)
    schedule = state.schedule
    if schedule.cron != state.synced_cron:
        return SyncResult(
            spec.name, "kept", f"edited by staff to {schedule.cron!r}; not overwritten"
        )
    if schedule.cron == spec.schedule:
        return SyncResult(spec.name, "unchanged", spec.schedule)
    schedule.cron = spec.schedule
    if not state.paused:
        schedule.next_run = next_runs(spec.schedule, after=timezone.now(), count=1)[0]
    schedule.save(update_fields=["cron", "next_run"])
    state.synced_cron = spec.schedule
    state.save(update_fields=["synced_cron"])
    return SyncResult(spec.name, "updated", spec.schedule)


def _sync_heartbeat() -> SyncResult:
    _, created = Schedule.objects.get_or_create(
        name=HEARTBEAT_SCHEDULE,
        defaults={
            "func": HEARTBEAT_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
    return SyncResult(HEARTBEAT_SCHEDULE, "created" if created else "unchanged")


def pause(job: str, *, actor: str, reason: str) -> ScheduleState:
    """Stop a schedule at its slots until resumed. A reason is required."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to pause a schedule")
    with transaction.atomic():
        state = _state_for_update(job)
        state.paused = True
        state.paused_by = actor
        state.paused_at = timezone.now()
        state.pause_reason = reason
        state.save()
        # repeats=0 is how django-q2's scheduler is told to leave a row alone.
        Schedule.objects.filter(pk=state.schedule_id).update(repeats=0)
        JobAction.objects.create(actor=actor, action="pause", job=job, detail={"reason": reason})
    return state


def resume(job: str, *, actor: str) -> ScheduleState:
    """Resume at the next slot from now: missed slots are not replayed."""
    with transaction.atomic():
        state = _state_for_update(job)
        if not state.paused:
            raise ValueError(f"schedule {job!r} is not paused")
        schedule = state.schedule
        schedule.repeats = -1
        schedule.next_run = next_runs(schedule.cron, after=timezone.now(), count=1)[0]
        schedule.save(update_fields=["repeats", "next_run"])
        state.paused = False
        state.pause_reason = ""
        state.resumed_by = actor
        state.resumed_at = timezone.now()
        state.save()
        JobAction.objects.create(actor=actor, action="resume", job=job)
    return state


def set_cron(job: str, cron: str, *, actor: str) -> ScheduleState:
    """Staff's change of a schedule: validated, normalized and recorded.

    From then on `sync_schedules` sees the schedule as edited and keeps it.
    """
    cron = normalize_cron(cron)
    with transaction.atomic():
        state = _state_for_update(job)
        schedule = state.schedule
        if cron == schedule.cron:
            return state
        previous = schedule.cron
        schedule.cron = cron
        update = ["cron"]
        if not state.paused:  # resume sets next_run for a paused schedule
            schedule.next_run = next_runs(cron, after=timezone.now(), count=1)[0]
            update.append("next_run")
        schedule.save(update_fields=update)
        JobAction.objects.create(
            actor=actor, action="edit_cron", job=job, detail={"from": previous, "to": cron}
        )
    return state


def _state_for_update(job: str) -> ScheduleState:
    try:
        return ScheduleState.objects.select_for_update().select_related("schedule").get(job=job)
    except ScheduleState.DoesNotExist:
        raise LookupError(f"job {job!r} has no schedule (run `manage.py sync_schedules`)") from None


def upcoming(schedule: Schedule, count: int = 5) -> list[datetime]:
    if schedule.schedule_type != Schedule.CRON or not schedule.cron:
        return [schedule.next_run] if schedule.next_run else []
    start = max(timezone.now(), schedule.next_run or timezone.now()) - timedelta(microseconds=1)
    return next_runs(schedule.cron, after=start, count=count)


def is_overdue(schedule: Schedule, state: ScheduleState | None, *, now: datetime) -> bool:
    """Active, and its next slot passed long ago: no cluster is scheduling it."""
    if state is not None and state.paused:
        return False
    if schedule.repeats == 0 or schedule.next_run is None:
        return False
    grace = timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS)
    return schedule.next_run < now - grace

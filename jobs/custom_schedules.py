"""Staff's own schedules: a registered job on its own cron and time zone,
optionally for one tenant and with its own parameters.

django-q2's scheduler reads every cron in one time zone (SCHEDULER_TIMEZONE),
so these are fired by the platform's tick in each cluster
(jobs.scheduler_tick): `fire_due` claims a due schedule with a conditional
UPDATE of its `next_run` (one cluster wins), records the slots' runs as
`queued` JobRuns of the platform runner — `schedule_key` `custom:<id>` is part
of the slot constraint, so each slot runs exactly once whatever fires it —
and hands them to the broker (a lost task is sent again by the lost-run
sweep). Nothing but registered jobs through jobs.runner.execute_queued is
ever enqueued.

Slots are computed in the schedule's own time zone (DST-correct: `0 6 * * *`
in Europe/Berlin is 05:00 UTC in winter and 04:00 UTC in summer) and stored
in UTC. Slots missed (a cluster was down) follow the schedule's misfire
policy: skip them, run the latest once, or run each of the latest N.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.enqueue import send_run
from jobs.models import JobAction, JobRun, RunStatus, Trigger
from jobs.params import coerce_params, params_to_json
from jobs.registry import JobSpec, get_job
from jobs.schedule_models import CustomSchedule, Misfire
from jobs.tenants import resolve

logger = logging.getLogger(__name__)

UTC = ZoneInfo("UTC")
MAX_SLOTS_PER_FIRE = 1000  # a schedule far behind is looked at in bounded steps


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name, e.g. Europe/Berlin)"
        ) from None


def slots_after(cron: str, tz_name: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` slots after `after`, computed in the zone, in UTC."""
    it = croniter(cron, after.astimezone(zone(tz_name)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(count)]


def validate(
    *, job: str, cron_stored: str, time_zone: str, tenant: str, params: Any
) -> tuple[JobSpec, dict[str, Any]]:
    """What staff entered, checked by the registry's own rules (ValueError /
    LookupError subclasses name the problem)."""
    spec = get_job(job)
    zone(time_zone)
    resolve(tenant)
    return spec, params_to_json(coerce_params(spec.params, params or {}))


def first_next_run(schedule: CustomSchedule, *, now: datetime | None = None) -> datetime:
    """Where a new or resumed schedule starts: the next slot from now (no burst)."""
    return slots_after(schedule.cron, schedule.time_zone, now or timezone.now(), 1)[0]


def _due_slots(schedule: CustomSchedule, now: datetime) -> tuple[list[datetime], datetime]:
    """(slots to run now, the next_run after them), by the misfire policy."""
    due = []
    slot = schedule.next_run
    while slot <= now and len(due) < MAX_SLOTS_PER_FIRE:
        due.append(slot)
        slot = slots_after(schedule.cron, schedule.time_zone, slot, 1)[0]
    grace = timedelta(seconds=settings.JOBS_MISFIRE_GRACE_SECONDS)
    on_time = [s for s in due if now - s <= grace]
    missed = [s for s in due if now - s > grace]
    if schedule.misfire == Misfire.SKIP or not missed:
        chosen = on_time
    elif schedule.misfire == Misfire.ONCE:
        chosen = [due[-1]]
    else:
        chosen = due[-max(schedule.misfire_max, 1) :]
    return chosen, slot


def fire_due(*, now: datetime | None = None) -> list[int]:
    """Record and send the runs of every due custom schedule; their run ids."""
    now = now or timezone.now()
    made: list[int] = []
    for schedule in CustomSchedule.objects.filter(paused=False, next_run__lte=now)[:100]:
        try:
            made.extend(_fire(schedule, now))
        except Exception:  # one schedule's trouble must not stop the others
            logger.exception("custom schedule %r could not be fired", schedule.name)
    return made


def _fire(schedule: CustomSchedule, now: datetime) -> list[int]:
    slots, following = _due_slots(schedule, now)
    try:
        spec = get_job(schedule.job)
    except LookupError:
        logger.error("custom schedule %r names unknown job %r", schedule.name, schedule.job)
        return []
    runs = []
    with transaction.atomic():
        claimed = CustomSchedule.objects.filter(
            pk=schedule.pk, paused=False, next_run=schedule.next_run
        ).update(next_run=following, last_slot=slots[-1] if slots else schedule.last_slot)
        if not claimed:
            return []  # another cluster fired it
        skipped = len(_all_between(schedule, following)) - len(slots)
        if skipped > 0:
            JobAction.objects.create(
                actor="scheduler",
                action="misfire",
                job=schedule.job,
                detail={"schedule": schedule.name, "policy": schedule.misfire, "not_run": skipped},
            )
        for slot in slots:
            run = _record(schedule, spec, slot)
            if run is not None:
                runs.append(run)
    for run in runs:
        if run.status == RunStatus.QUEUED:
            send_run(spec, run)
    return [r.pk for r in runs]


def _all_between(schedule: CustomSchedule, following: datetime) -> list[datetime]:
    slots, slot = [], schedule.next_run
    while slot < following and len(slots) < MAX_SLOTS_PER_FIRE:
        slots.append(slot)
        slot = slots_after(schedule.cron, schedule.time_zone, slot, 1)[0]
    return slots


def _record(schedule: CustomSchedule, spec: JobSpec, slot: datetime) -> JobRun | None:
    run = JobRun(
        job=spec.name,
        tenant=schedule.tenant,
        params=schedule.params,
        trigger=Trigger.SCHEDULE,
        triggered_by=f"schedule:{schedule.name}"[:150],
        slot=slot,
        schedule_key=schedule.key,
        queue=spec.queue,
    )
    if not settings.BACKGROUND_JOBS_ENABLED:
        run.status = RunStatus.SKIPPED
        run.error = "background jobs are disabled (BACKGROUND_JOBS_ENABLED=false)"
        run.finished_at = timezone.now()
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError:
        return None  # this slot of this schedule already has its run
    return run


def default_schedule_excludes(spec: JobSpec) -> frozenset[str]:
    """Tenants with an active schedule of their own for a job that says its
    default run leaves them out (`tenant_schedules_exclude`)."""
    if not spec.tenant_schedules_exclude:
        return frozenset()
    return frozenset(
        CustomSchedule.objects.filter(job=spec.name, paused=False)
        .exclude(tenant="")
        .values_list("tenant", flat=True)
    )


def pause(schedule: CustomSchedule, *, actor: str, reason: str) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to pause a schedule")
    CustomSchedule.objects.filter(pk=schedule.pk).update(
        paused=True, paused_by=actor, paused_at=timezone.now(), pause_reason=reason
    )
    JobAction.objects.create(
        actor=actor,
        action="pause",
        job=schedule.job,
        detail={"schedule": schedule.name, "reason": reason},
    )


def resume(schedule: CustomSchedule, *, actor: str) -> None:
    """From the next slot after now: missed slots are not replayed."""
    CustomSchedule.objects.filter(pk=schedule.pk).update(
        paused=False, pause_reason="", next_run=first_next_run(schedule)
    )
    JobAction.objects.create(
        actor=actor, action="resume", job=schedule.job, detail={"schedule": schedule.name}
    )


OVERVIEW_ROWS = 50


def overview_rows(limit: int = OVERVIEW_ROWS) -> list[CustomSchedule]:
    """The overview's list of staff's own schedules: active ones by next run,
    then paused ones (bounded; the admin list has them all)."""
    return list(CustomSchedule.objects.order_by("paused", "next_run", "name")[:limit])


def is_overdue(schedule: CustomSchedule, *, now: datetime) -> bool:
    """An active schedule whose slot no cluster fired within the grace
    (JOBS_OVERDUE_GRACE_SECONDS): the same rule as the default schedules'."""
    grace = timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS)
    return bool(not schedule.paused and schedule.next_run and schedule.next_run < now - grace)


def overdue_schedules(*, now: datetime) -> list[CustomSchedule]:
    """The overdue ones among staff's own schedules (by the due index)."""
    grace = timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS)
    return list(
        CustomSchedule.objects.filter(paused=False, next_run__lt=now - grace).order_by("next_run")
    )

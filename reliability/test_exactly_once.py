"""Exactly once per slot: three clusters schedule and run one job side by side.

Every cluster's scheduler looks at the same Schedule row (each tick
`JOBS_SCHEDULER_POLL_SECONDS`) and every cluster's workers take tasks from
the same Redis queue; each slot of the schedule must end as exactly one
JobRun that ran once, with no slot left out. Then tasks of five finished
slots are delivered again (as an at-least-once broker may): the slot
constraint must refuse every one.
"""

from __future__ import annotations

import time
from collections import Counter

from django.conf import settings
from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task

from jobs.models import JobRun, RunStatus
from jobs.schedules import pause
from reliability.conftest import create_schedule, next_slot, report, slots_between, wait_for

JOB = "notifications.send_pending"  # a real job; with an empty outbox it is quick
CRON = "*/2 * * * * *"  # every 2 seconds (6-field cron, seconds first)
SLOTS = 30


def test_three_clusters_run_every_slot_exactly_once(clusters):
    clusters.start(3, Q_WORKERS=2)
    first = next_slot(CRON, after_seconds=2)
    schedule = create_schedule(JOB, CRON, first_slot=first)
    last = slots_between(schedule.cron, first, first + timezone.timedelta(days=1))[SLOTS - 1]

    wait_for(
        lambda: JobRun.objects.filter(job=JOB, slot__gte=last).exists(),
        timeout=(last - timezone.now()).total_seconds() + 30,
        what=f"the run of slot {last:%H:%M:%S}",
    )
    # Finished slots' tasks again, while the schedule is live (the constraint's path).
    redelivered = slots_between(schedule.cron, first, last)[5:10]
    for slot in redelivered:
        async_task(
            "jobs.runner.run_scheduled",
            job=JOB,
            slot=slot.isoformat(),
            q_options={"group": "redelivered"},
        )
    redelivered_tasks = Task.objects.filter(group="redelivered")
    wait_for(
        lambda: redelivered_tasks.count() == len(redelivered),
        timeout=30,
        what="the redelivered tasks to be worked",
    )
    pause(JOB, actor="reliability", reason="drill over")
    wait_for(
        lambda: (
            not JobRun.objects.filter(
                job=JOB, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
            ).exists()
        ),
        timeout=30,
        what="the last runs to finish",
    )
    time.sleep(1)  # the monitors save the last task results

    expected = slots_between(schedule.cron, first, last)
    runs = list(JobRun.objects.filter(job=JOB, slot__gte=first, slot__lte=last))
    per_slot = Counter(run.slot for run in runs)
    ran = [run for run in runs if run.status == RunStatus.SUCCEEDED and run.attempts == 1]
    duplicates = sum(n - 1 for n in per_slot.values() if n > 1)
    missed = [slot for slot in expected if slot not in per_slot]
    off_grid = [run.slot for run in runs if run.slot not in set(expected)]
    not_ok = [(run.pk, run.status, run.attempts, run.error[:200]) for run in runs if run not in ran]
    tasks = Task.objects.filter(func="jobs.runner.run_scheduled", group=JOB)
    task_slots = Counter(t.kwargs.get("slot") for t in tasks)
    enqueued_twice = sum(n - 1 for n in task_slots.values() if n > 1)
    scheduled_by = [c.log().count(f"from schedule [{JOB}]") for c in clusters.started]

    # How late each slot started: the run's start minus its slot (default poll).
    lateness = sorted((r.started_at - r.slot).total_seconds() for r in ran if r.started_at)
    p50 = lateness[len(lateness) // 2]
    p99 = lateness[min(len(lateness) - 1, round(0.99 * (len(lateness) - 1)))]

    known = {r.pk for r in runs}  # run_scheduled answers with the slot's existing run
    refused = sum(1 for t in redelivered_tasks if t.success and t.result in known)
    run_by = [c.log().count("'jobs.runner.run_scheduled'") for c in clusters.started]

    report(
        f"drill exactly_once: slots {len(expected)}, ran {len(ran)}, "
        f"duplicates {duplicates}, missed {len(missed)} "
        f"(3 clusters x 2 workers, every 2 s; tasks {sum(task_slots.values())}, "
        f"slots enqueued twice and refused {enqueued_twice}; redelivered tasks "
        f"{len(redelivered)}, refused {refused}; scheduled by clusters "
        f"{'/'.join(map(str, scheduled_by))}, run by {'/'.join(map(str, run_by))}); "
        f"lateness p50 {p50:.2f} s, p99 {p99:.2f} s, max {lateness[-1]:.2f} s "
        f"(JOBS_SCHEDULER_POLL_SECONDS default {settings.JOBS_SCHEDULER_POLL_SECONDS:g})"
    )
    assert len(expected) == SLOTS
    assert duplicates == 0
    assert not missed, f"slots without a run: {missed}"
    assert not off_grid, f"runs at slots not on the schedule: {off_grid}"
    assert not not_ok, f"runs that did not run exactly once: {not_ok}"
    assert len(ran) == SLOTS
    assert refused == len(redelivered)  # and per_slot shows no second run for them
    assert p99 <= 2.0, f"slots started late: {lateness}"

"""Retries across two clusters: every slot's attempts run once each.

Two clusters schedule one job that fails its first two attempts with a
transient error and succeeds on the third (retry policy: fixed 1 s). Both
clusters' schedulers tick (and send due retries) every second and both take
tasks from the same Redis queue. Each slot must end as exactly three JobRuns
(attempts 1, 2, 3: failed, failed, succeeded), each attempt executed once (the
job appends a line per execution to a file, so what really ran is counted,
not what the database says), none started before the previous attempt ended
plus the backoff. Then the tasks of every attempt and slot are delivered
again (as an at-least-once broker may): nothing runs again.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

from django.utils import timezone
from django_q.models import Task
from django_q.tasks import async_task

from jobs.models import JobRun, RunStatus
from jobs.schedules import pause
from reliability import drill_jobs
from reliability.conftest import create_schedule, next_slot, report, slots_between, wait_for

JOB = drill_jobs.FLAKY
CRON = "*/10 * * * * *"  # every 10 seconds: room for three attempts 1 s apart
SLOTS = 5
ATTEMPTS = drill_jobs.FLAKY_FAILS + 1


def test_two_clusters_run_each_retry_attempt_exactly_once(clusters, tmp_path):
    log_dir = Path(os.environ.get("TMPDIR", tmp_path))
    attempt_log = log_dir / f"retry-drill-{os.getpid()}.log"
    attempt_log.write_text("")
    clusters.start(
        2,
        Q_WORKERS=2,
        DJANGO_SETTINGS_MODULE="reliability.drill_settings",
        DRILL_ATTEMPT_LOG=str(attempt_log),
    )
    first = next_slot(CRON, after_seconds=3)
    schedule = create_schedule(JOB, CRON, first_slot=first)
    expected = slots_between(schedule.cron, first, first + timedelta(days=1))[:SLOTS]
    last = expected[-1]
    finished = JobRun.objects.filter(
        job=JOB, slot__in=expected, attempt=ATTEMPTS, status=RunStatus.SUCCEEDED
    )
    wait_for(
        lambda: finished.count() == SLOTS,
        timeout=(last - timezone.now()).total_seconds() + 60,
        what=f"attempt {ATTEMPTS} of all {SLOTS} slots to succeed",
    )
    pause(JOB, actor="reliability", reason="drill over")

    # Every attempt's and slot's task once more, as a broker that redelivers would.
    runs = list(JobRun.objects.filter(job=JOB, slot__in=expected))
    for run in runs:
        async_task("jobs.runner.execute_queued", run.pk, q_options={"group": "redelivered"})
    for slot in expected:
        async_task(
            "jobs.runner.run_scheduled",
            job=JOB,
            slot=slot.isoformat(),
            q_options={"group": "redelivered"},
        )
    redelivered = len(runs) + len(expected)
    wait_for(
        lambda: Task.objects.filter(group="redelivered").count() == redelivered,
        timeout=60,
        what="the redelivered tasks to be worked",
    )
    time.sleep(1)

    runs = list(JobRun.objects.filter(job=JOB).order_by("slot", "attempt"))
    executions = Counter(
        (slot, int(attempt))
        for slot, attempt, _, _ in map(str.split, attempt_log.read_text().splitlines())
    )
    by_slot: dict = {}
    for run in runs:
        by_slot.setdefault(run.slot, []).append(run)
    twice = {key: n for key, n in executions.items() if n > 1}
    wrong_shape = {
        slot.isoformat(): [(r.attempt, r.status, r.attempts) for r in attempts]
        for slot, attempts in by_slot.items()
        if [(r.attempt, r.status, r.attempts) for r in attempts]
        != [(1, "failed", 1), (2, "failed", 1), (3, "succeeded", 1)]
    }
    early = [
        (b.pk, (b.started_at - a.finished_at).total_seconds())
        for attempts in by_slot.values()
        for a, b in pairwise(attempts)
        if b.started_at < a.finished_at + timedelta(seconds=1)
    ]
    ran_by = Counter(pid for _, _, _, pid in map(str.split, attempt_log.read_text().splitlines()))
    report(
        f"retry drill: {SLOTS} slots x {ATTEMPTS} attempts on 2 clusters; "
        f"{sum(executions.values())} executions, {len(twice)} attempts run twice, "
        f"{len(wrong_shape)} slots off the 3-attempt shape, {len(early)} attempts early, "
        f"{redelivered} tasks redelivered, worker pids used: {len(ran_by)}"
    )
    assert set(by_slot) == set(expected), "a slot is missing or off the grid"
    assert not twice, f"attempts executed more than once: {twice}"
    assert not wrong_shape, f"slots whose attempts are not failed, failed, succeeded: {wrong_shape}"
    assert not early, f"attempts started before the backoff was over: {early}"
    assert sum(executions.values()) == SLOTS * ATTEMPTS
    for attempts in by_slot.values():
        assert attempts[2].summary == {"resumed_from": {"attempt": 2}}

"""Kill switch and pause: no run at the slots while off; after, the next slot
runs once and the slots missed meanwhile are not replayed."""

from __future__ import annotations

import time
from datetime import datetime

from django.utils import timezone

from jobs.cron import next_runs
from jobs.models import JobRun, RunStatus
from jobs.schedules import pause, resume
from reliability.conftest import create_schedule, next_slot, report, slots_in, wait_for

JOB = "notifications.send_pending"
CRON = "*/2 * * * * *"
OFF_SLOTS = 5


def wait_past(slots: int, *, start: datetime) -> None:
    """Sleep until `slots` 2-second slots after `start` have passed (plus slack)."""
    end = start.timestamp() + 2 * slots + 1.5
    time.sleep(max(0.0, end - time.time()))


def runs_after(moment: datetime) -> list[JobRun]:
    return list(JobRun.objects.filter(job=JOB, slot__gt=moment).order_by("slot"))


def all_finished() -> bool:
    return not JobRun.objects.filter(
        job=JOB, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).exists()


def test_kill_switch_skips_every_slot_and_enabling_runs_the_next_one(clusters):
    off = clusters.start(1, BACKGROUND_JOBS_ENABLED="false")[0]
    first = next_slot(CRON, after_seconds=1)
    schedule = create_schedule(JOB, CRON, first_slot=first)
    wait_past(OFF_SLOTS, start=first)
    off.stop()
    while_off = JobRun.objects.filter(job=JOB)
    skipped = while_off.filter(status=RunStatus.SKIPPED).count()
    ran_while_off = while_off.exclude(status=RunStatus.SKIPPED).count()
    last_off = while_off.order_by("-slot").values_list("slot", flat=True).first()

    clusters.start(1, BACKGROUND_JOBS_ENABLED="true")
    enabled_at = timezone.now()
    wait_for(lambda: len(runs_after(enabled_at)) >= 2, timeout=30, what="two runs after enabling")
    pause(JOB, actor="reliability", reason="drill over")
    wait_for(all_finished, timeout=30, what="the runs to end")

    # The slot that came due while no cluster ran (the restart) runs once, late:
    # catch_up is off, so the ones after it are not replayed.
    after = runs_after(last_off)
    the_next = next_runs(schedule.cron, after=last_off, count=1)[0]
    replayed = [r for r in after[1:] if r.slot < enabled_at]
    report(
        f"drill kill_switch: slots {skipped + ran_while_off} while "
        f"BACKGROUND_JOBS_ENABLED=false, ran {ran_while_off} (skipped {skipped}, on record); "
        f"after enabling: next slot {after[0].slot:%H:%M:%S} ran once ({after[0].status}), "
        f"missed slots replayed {len(replayed)}, then {len(after) - 1} on time"
    )
    assert skipped >= OFF_SLOTS
    assert ran_while_off == 0
    assert after[0].slot == the_next
    assert after[0].status == RunStatus.SUCCEEDED and after[0].attempts == 1
    assert not replayed
    assert all(r.status == RunStatus.SUCCEEDED and r.attempts == 1 for r in after)
    assert len({r.slot for r in after}) == len(after)


def test_paused_schedule_runs_nothing_and_resume_runs_the_next_slot_once(clusters):
    clusters.start(1)
    first = next_slot(CRON, after_seconds=1)
    schedule = create_schedule(JOB, CRON, first_slot=first)
    wait_for(lambda: JobRun.objects.filter(job=JOB).count() >= 2, timeout=30, what="two runs")

    pause(JOB, actor="reliability", reason="pause drill")
    paused_at = timezone.now()
    wait_past(OFF_SLOTS, start=paused_at)
    resume(JOB, actor="reliability")
    resumed_at = timezone.now()
    paused_window = slots_in(schedule.cron, paused_at, resumed_at)
    wait_for(lambda: len(runs_after(resumed_at)) >= 3, timeout=30, what="three runs after resume")
    pause(JOB, actor="reliability", reason="drill over")
    wait_for(all_finished, timeout=30, what="the runs to end")

    # A task already queued when the pause came may still run (its slot is
    # before the pause); no run has a slot inside the pause.
    during = JobRun.objects.filter(job=JOB, slot__gt=paused_at, slot__lte=resumed_at).count()
    after = runs_after(resumed_at)
    the_next = next_runs(schedule.cron, after=resumed_at, count=1)[0]
    expected_after = [the_next, *slots_in(schedule.cron, the_next, after[-1].slot)]
    report(
        f"drill pause: slots {len(paused_window)} while paused, ran {during}; after resume: "
        f"next slot {after[0].slot:%H:%M:%S} ran once ({after[0].status}), missed slots "
        f"replayed 0, then slots {len(expected_after)}, ran {len(after)}"
    )
    assert len(paused_window) >= OFF_SLOTS
    assert during == 0
    assert after[0].slot == the_next
    assert [r.slot for r in after] == expected_after
    assert all(r.status == RunStatus.SUCCEEDED and r.attempts == 1 for r in after)

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler

from jobs.models import JobAction, JobRun, RunStatus, ScheduleState, Trigger
from jobs.registry import unregister
from jobs.schedules import HEARTBEAT_SCHEDULE, pause, resume, sync_schedules, upcoming

pytestmark = pytest.mark.django_db


@pytest.fixture
def hourly(register_job):
    @register_job("tests.hourly", schedule="0 0 * * * *", queue="critical", timeout=120)
    def job(ctx):
        ctx.count(processed=1)

    return job


def sync_only_hourly():
    """Sync, then keep only the test job's schedule, so only its tasks are queued.

    The heartbeat and the service's every-minute jobs (alerts, email) fall due
    whenever the clock crosses a minute between the sync and `scheduler()`.
    """
    sync_schedules()
    Schedule.objects.exclude(name="tests.hourly").delete()


def actions(results):
    return {r.job: r.action for r in results}


def test_sync_creates_a_schedule_per_scheduled_job_and_is_idempotent(hourly, register_job):
    @register_job("tests.on_demand")
    def on_demand(ctx):
        pass

    first = actions(sync_schedules())
    assert first["tests.hourly"] == "created"
    assert "tests.on_demand" not in first
    assert first[HEARTBEAT_SCHEDULE] == "created"
    assert actions(sync_schedules())["tests.hourly"] == "unchanged"
    schedule = Schedule.objects.get(name="tests.hourly")
    assert schedule.cron == "0 * * * *"
    assert schedule.schedule_type == Schedule.CRON
    assert schedule.intended_date_kwarg == "slot"
    assert schedule.next_run > timezone.now()
    assert Schedule.objects.filter(name="tests.hourly").count() == 1


def test_sync_never_overwrites_a_schedule_staff_edited(hourly):
    sync_schedules()
    Schedule.objects.filter(name="tests.hourly").update(cron="30 * * * *")
    result = actions(sync_schedules())
    assert result["tests.hourly"] == "kept"
    assert Schedule.objects.get(name="tests.hourly").cron == "30 * * * *"


def test_sync_updates_an_untouched_schedule_when_the_default_changes(hourly, register_job):
    sync_schedules()
    unregister("tests.hourly")

    @register_job("tests.hourly", schedule="15 * * * *")
    def job(ctx):
        pass

    assert actions(sync_schedules())["tests.hourly"] == "updated"
    assert Schedule.objects.get(name="tests.hourly").cron == "15 * * * *"


def test_prune_removes_schedules_of_jobs_that_no_longer_exist(hourly):
    sync_schedules()
    unregister("tests.hourly")
    assert actions(sync_schedules())  # without --prune nothing is removed
    assert Schedule.objects.filter(name="tests.hourly").exists()
    assert actions(sync_schedules(prune=True))["tests.hourly"] == "pruned"
    assert not Schedule.objects.filter(name="tests.hourly").exists()
    assert not ScheduleState.objects.filter(job="tests.hourly").exists()


def test_pause_requires_a_reason_and_records_who(hourly):
    sync_schedules()
    with pytest.raises(ValueError, match="reason is required"):
        pause("tests.hourly", actor="alice", reason="  ")
    state = pause("tests.hourly", actor="alice", reason="Stripe outage")
    assert (state.paused, state.paused_by, state.pause_reason) == (True, "alice", "Stripe outage")
    assert Schedule.objects.get(name="tests.hourly").repeats == 0
    assert JobAction.objects.filter(action="pause", actor="alice", job="tests.hourly").exists()


def test_pause_of_an_unscheduled_job_says_to_sync(hourly):
    with pytest.raises(LookupError, match="sync_schedules"):
        pause("tests.hourly", actor="alice", reason="x")


# django-q2's scheduler closes the connection: it needs real commits.
@pytest.mark.django_db(transaction=True)
def test_the_scheduler_does_not_enqueue_a_paused_schedule(hourly, drain_queue):
    sync_only_hourly()
    pause("tests.hourly", actor="alice", reason="maintenance")
    Schedule.objects.filter(name="tests.hourly").update(
        next_run=timezone.now() - timedelta(hours=3)
    )
    scheduler()
    assert drain_queue() == 0
    assert not JobRun.objects.exists()


# django-q2's scheduler closes the connection: it needs real commits.
@pytest.mark.django_db(transaction=True)
def test_resume_runs_the_next_slot_without_a_burst_of_missed_runs(hourly, drain_queue):
    sync_only_hourly()
    pause("tests.hourly", actor="alice", reason="maintenance")
    # Three slots pass while paused.
    Schedule.objects.filter(name="tests.hourly").update(
        next_run=timezone.now() - timedelta(hours=3)
    )
    resume("tests.hourly", actor="bob")
    schedule = Schedule.objects.get(name="tests.hourly")
    now = timezone.now()
    assert schedule.repeats == -1
    assert now < schedule.next_run <= now + timedelta(hours=1)
    scheduler()
    assert drain_queue() == 0  # nothing due until the next slot
    state = ScheduleState.objects.get(job="tests.hourly")
    assert (state.paused, state.resumed_by) == (False, "bob")


# django-q2's scheduler closes the connection: it needs real commits.
@pytest.mark.django_db(transaction=True)
def test_a_due_schedule_runs_through_django_q_with_its_intended_slot(hourly, drain_queue):
    sync_only_hourly()
    slot = (timezone.now() - timedelta(minutes=5)).replace(microsecond=0)
    Schedule.objects.filter(name="tests.hourly").update(next_run=slot)
    scheduler()
    assert drain_queue() == 1
    run = JobRun.objects.get()
    assert (run.job, run.trigger, run.slot, run.status) == (
        "tests.hourly",
        Trigger.SCHEDULE,
        slot,
        RunStatus.SUCCEEDED,
    )
    assert Schedule.objects.get(name="tests.hourly").next_run > timezone.now()


def test_upcoming_lists_the_next_five_runs(hourly):
    sync_schedules()
    runs = upcoming(Schedule.objects.get(name="tests.hourly"))
    assert len(runs) == 5
    assert all(r.minute == 0 and r.second == 0 for r in runs)
    assert all((b - a) == timedelta(hours=1) for a, b in itertools.pairwise(runs))


def test_staff_cron_edit_is_normalized_recorded_and_kept_by_sync(hourly):
    from jobs.cron import CronError
    from jobs.schedules import set_cron

    sync_schedules()
    with pytest.raises(CronError):
        set_cron("tests.hourly", "61 * * * *", actor="alice")
    set_cron("tests.hourly", "0 30 * * * *", actor="alice")
    assert Schedule.objects.get(name="tests.hourly").cron == "30 * * * *"
    action = JobAction.objects.get(action="edit_cron")
    assert (action.actor, action.detail) == ("alice", {"from": "0 * * * *", "to": "30 * * * *"})
    assert actions(sync_schedules())["tests.hourly"] == "kept"

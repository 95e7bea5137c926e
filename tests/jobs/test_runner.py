import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from jobs.context import JobAborted
from jobs.logging import JobContextFilter, job_log_context
from jobs.models import JobItemFailure, JobRun, RunStatus, Trigger
from jobs.params import ParamError
from jobs.registry import UnknownJob
from jobs.runner import execute_queued, run_job, run_scheduled
from jobs.schedules import pause, sync_schedules
from tests.factories import JobRunFactory

pytestmark = pytest.mark.django_db

SLOT = datetime(2026, 11, 1, 10, tzinfo=UTC)


def test_a_job_gets_typed_params_and_its_result_becomes_the_summary(register_job):
    seen = {}

    @register_job("tests.hello")
    def hello(ctx, *, n: int = 2, loud: bool = False):
        seen.update(n=n, loud=loud, dry_run=ctx.dry_run, slot=ctx.slot)
        ctx.count(processed=n, succeeded=n)
        return {"said": "hello"}

    run = run_job("tests.hello", params={"n": "3", "loud": "yes"}, dry_run=True, slot=SLOT)
    assert run.status == RunStatus.SUCCEEDED
    assert (run.processed, run.succeeded) == (3, 3)
    assert run.summary == {"said": "hello"}
    assert run.params == {"n": 3, "loud": True}
    assert seen == {"n": 3, "loud": True, "dry_run": True, "slot": SLOT}
    assert run.started_at and run.finished_at and run.attempts == 1


def test_bad_name_or_params_are_refused_before_anything_is_recorded(register_job):
    @register_job("tests.typed")
    def typed(ctx, *, n: int):
        pass

    with pytest.raises(UnknownJob):
        run_job("tests.nope")
    with pytest.raises(ParamError, match="'n' must be an integer"):
        run_job("tests.typed", params={"n": "x"})
    with pytest.raises(ParamError, match="unknown parameter 'm'"):
        run_job("tests.typed", params={"n": 1, "m": 2})
    assert not JobRun.objects.exists()


def test_item_failures_are_recorded_and_the_run_ends_partial(register_job):
    @register_job("tests.items")
    def items(ctx):
        for key in ("a", "b", "c"):
            if key == "b":
                ctx.item_failed(key, ValueError("card declined"))
            else:
                ctx.count(processed=1, succeeded=1)

    run = run_job("tests.items")
    assert run.status == RunStatus.PARTIAL
    assert (run.succeeded, run.failed) == (2, 1)
    failure = JobItemFailure.objects.get(run=run)
    assert (failure.item_key, failure.error) == ("b", "card declined")


def test_an_exception_is_recorded_as_failed_and_does_not_escape(register_job):
    @register_job("tests.boom")
    def boom(ctx):
        ctx.count(processed=1)
        raise RuntimeError("database on fire")

    run = run_job("tests.boom")
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("RuntimeError: database on fire")
    assert run.processed == 1
    assert run.finished_at is not None


def test_an_aborted_job_fails_with_its_message_and_summary(register_job):
    @register_job("tests.guarded")
    def guarded(ctx):
        raise JobAborted("safety limit", summary={"would_change": 99})

    run = run_job("tests.guarded")
    assert (run.status, run.error, run.summary) == (
        RunStatus.FAILED,
        "safety limit",
        {"would_change": 99},
    )


def test_a_second_start_while_running_is_recorded_as_skipped(register_job):
    calls = []

    @register_job("tests.single")
    def single(ctx):
        calls.append(1)

    holder = JobRunFactory(
        job="tests.single",
        status=RunStatus.RUNNING,
        heartbeat_at=timezone.now(),
        finished_at=None,
    )
    run = run_job("tests.single")
    assert run.status == RunStatus.SKIPPED
    assert f"already running: run #{holder.pk}" in run.error
    assert calls == []


def test_the_same_job_for_another_tenant_is_not_blocked(register_job, monkeypatch):
    monkeypatch.setattr("jobs.runner.resolve", lambda key: key or None)

    @register_job("tests.per_tenant")
    def per_tenant(ctx):
        return {"tenant": ctx.tenant}

    JobRunFactory(
        job="tests.per_tenant",
        tenant="org_a",
        status=RunStatus.RUNNING,
        heartbeat_at=timezone.now(),
        finished_at=None,
    )
    run = run_job("tests.per_tenant", tenant="org_b")
    assert run.status == RunStatus.SUCCEEDED
    assert run.summary == {"tenant": "org_b"}


@override_settings(JOBS_STALE_AFTER_SECONDS=60)
def test_a_run_whose_worker_died_is_marked_abandoned_and_no_longer_blocks(register_job):
    @register_job("tests.after_crash")
    def after_crash(ctx):
        pass

    dead = JobRunFactory(
        job="tests.after_crash",
        status=RunStatus.RUNNING,
        finished_at=None,
        heartbeat_at=timezone.now() - timedelta(minutes=5),
    )
    run = run_job("tests.after_crash")
    assert run.status == RunStatus.SUCCEEDED
    dead.refresh_from_db()
    assert dead.status == RunStatus.FAILED
    assert "abandoned" in dead.error


def test_a_scheduled_slot_runs_at_most_once(register_job):
    calls = []

    @register_job("tests.hourly", schedule="0 * * * *")
    def hourly(ctx):
        calls.append(ctx.slot)

    first = run_scheduled("tests.hourly", slot=SLOT.isoformat())
    second = run_scheduled("tests.hourly", slot=SLOT.isoformat())
    assert first == second
    assert calls == [SLOT]
    run = JobRun.objects.get()
    assert (run.trigger, run.slot, run.status) == (Trigger.SCHEDULE, SLOT, RunStatus.SUCCEEDED)


@override_settings(JOBS_STALE_AFTER_SECONDS=60)
def test_a_redelivered_slot_whose_worker_died_continues_from_its_checkpoint(register_job):
    resumed_from = []

    @register_job("tests.resumable", schedule="0 * * * *")
    def resumable(ctx):
        resumed_from.append(ctx.resume_state)
        ctx.checkpoint({"done": 10})

    JobRunFactory(
        job="tests.resumable",
        trigger=Trigger.SCHEDULE,
        slot=SLOT,
        status=RunStatus.RUNNING,
        finished_at=None,
        attempts=1,
        checkpoint={"done": 4},
        heartbeat_at=timezone.now() - timedelta(minutes=5),
    )
    run_scheduled("tests.resumable", slot=SLOT.isoformat())
    run = JobRun.objects.get()
    assert resumed_from == [{"done": 4}]
    assert (run.status, run.attempts, run.checkpoint) == (RunStatus.SUCCEEDED, 2, {"done": 10})


@override_settings(JOBS_STALE_AFTER_SECONDS=60)
def test_a_slot_left_queued_by_a_worker_that_died_before_starting_is_run(register_job):
    calls = []

    @register_job("tests.never_started", schedule="0 * * * *")
    def never_started(ctx):
        calls.append(ctx.slot)

    stuck = JobRunFactory(
        job="tests.never_started",
        trigger=Trigger.SCHEDULE,
        slot=SLOT,
        status=RunStatus.QUEUED,
        started_at=None,
        finished_at=None,
        created_at=timezone.now() - timedelta(minutes=5),
    )
    assert run_scheduled("tests.never_started", slot=SLOT.isoformat()) == stuck.pk
    stuck.refresh_from_db()
    assert calls == [SLOT]
    assert (stuck.status, stuck.attempts) == (RunStatus.SUCCEEDED, 1)


def test_a_slot_queued_moments_ago_is_left_to_its_worker(register_job):
    calls = []

    @register_job("tests.just_queued", schedule="0 * * * *")
    def just_queued(ctx):
        calls.append(1)

    JobRunFactory(
        job="tests.just_queued",
        trigger=Trigger.SCHEDULE,
        slot=SLOT,
        status=RunStatus.QUEUED,
        started_at=None,
        finished_at=None,
    )
    run_scheduled("tests.just_queued", slot=SLOT.isoformat())
    assert calls == []


def test_a_slot_still_running_with_a_live_worker_is_left_alone(register_job):
    calls = []

    @register_job("tests.busy", schedule="0 * * * *")
    def busy(ctx):
        calls.append(1)

    JobRunFactory(
        job="tests.busy",
        trigger=Trigger.SCHEDULE,
        slot=SLOT,
        status=RunStatus.RUNNING,
        finished_at=None,
        heartbeat_at=timezone.now(),
    )
    run_scheduled("tests.busy", slot=SLOT.isoformat())
    assert calls == []
    assert JobRun.objects.get().status == RunStatus.RUNNING


def test_a_rerun_after_a_crash_resumes_from_the_last_checkpoint(register_job):
    seen = []

    @register_job("tests.batches")
    def batches(ctx):
        start = (ctx.resume_state or {}).get("next", 0)
        seen.append(start)
        for i in range(start, 6):
            if i == 3 and start == 0:
                raise RuntimeError("worker lost")
            ctx.checkpoint({"next": i + 1})

    assert run_job("tests.batches").status == RunStatus.FAILED
    assert run_job("tests.batches").status == RunStatus.SUCCEEDED
    assert seen == [0, 3]
    # Once it succeeded, a new run starts from scratch.
    run_job("tests.batches")
    assert seen == [0, 3, 0]


@override_settings(BACKGROUND_JOBS_ENABLED=False)
def test_kill_switch_skips_scheduled_runs_and_records_why(register_job):
    calls = []

    @register_job("tests.killed", schedule="0 * * * *")
    def killed(ctx):
        calls.append(1)

    run_scheduled("tests.killed", slot=SLOT.isoformat())
    run = JobRun.objects.get()
    assert calls == []
    assert run.status == RunStatus.SKIPPED
    assert "BACKGROUND_JOBS_ENABLED" in run.error
    # Manual runs still work: the switch is for the scheduler.
    assert run_job("tests.killed").status == RunStatus.SUCCEEDED


def test_a_paused_schedule_does_not_run_a_slot_that_was_already_enqueued(register_job):
    calls = []

    @register_job("tests.paused", schedule="0 * * * *")
    def paused(ctx):
        calls.append(1)

    sync_schedules()
    pause("tests.paused", actor="alice", reason="provider outage")
    run_scheduled("tests.paused", slot=SLOT.isoformat())
    assert calls == []
    run = JobRun.objects.get()
    assert run.status == RunStatus.SKIPPED
    assert "paused by alice: provider outage" in run.error


def test_a_queued_run_executes_once(register_job):
    calls = []

    @register_job("tests.queued")
    def queued(ctx):
        calls.append(1)

    run = JobRunFactory(
        job="tests.queued",
        status=RunStatus.QUEUED,
        started_at=None,
        finished_at=None,
        trigger=Trigger.API,
    )
    execute_queued(run.pk)
    execute_queued(run.pk)  # a redelivered task
    run.refresh_from_db()
    assert calls == [1]
    assert run.status == RunStatus.SUCCEEDED


def test_log_records_carry_job_run_and_tenant():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    with job_log_context(job="tests.log", run_id=42, tenant="org_001"):
        JobContextFilter().filter(record)
    assert (record.job, record.run_id, record.tenant) == ("tests.log", "42", "org_001")


def test_a_rerun_continues_a_failed_run_but_redoes_a_finished_one(register_job):
    from jobs.enqueue import rerun
    from jobs.runner import execute_queued

    seen = []

    @register_job("tests.checkpointed")
    def checkpointed(ctx):
        seen.append(ctx.resume_state)
        ctx.checkpoint({"done": True})

    crashed = JobRunFactory(
        job="tests.checkpointed", status=RunStatus.FAILED, checkpoint={"next": 3}
    )
    finished = JobRunFactory(
        job="tests.checkpointed", status=RunStatus.SUCCEEDED, checkpoint={"done": True}
    )
    for original in (crashed, finished):
        execute_queued(rerun(original, actor="alice", trigger=Trigger.ADMIN).pk)
    assert seen == [{"next": 3}, None]

"""Retry policy: transient failures come back as new attempts of the same slot."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from jobs.context import JobAborted
from jobs.models import JobAction, JobRun, RunStatus, ScheduleRetryPolicy, ScheduleState, Trigger
from jobs.registry import get_job
from jobs.retry import policy_for, schedule_retry, send_due_retries
from jobs.retry_policy import RetryPolicy
from jobs.runner import execute_queued, run_job, run_scheduled
from jobs.schedules import sync_schedules
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 11, 30, 23, tzinfo=UTC)
EXACT = RetryPolicy(retries=3, backoff="exponential", base=300, max=3600, jitter=False)


def attempts_of(job: str) -> list[JobRun]:
    return list(JobRun.objects.filter(job=job).order_by("attempt"))


def send_and_work() -> list[int]:
    """The ticker's send, then a worker's turn at each task sent. (With the clock
    frozen the ORM broker hides a task enqueued this instant, so the worker's
    call is made here.)"""
    sent = send_due_retries()
    for run_id in sent:
        assert JobRun.objects.get(pk=run_id).enqueued_at is not None
        execute_queued(run_id)
    return sent


def test_a_job_failing_twice_then_succeeding_runs_three_attempts_at_the_backoff_times(
    register_job, time_machine
):
    time_machine.move_to(SLOT, tick=False)
    seen = []

    @register_job("tests.flaky", schedule="0 * * * *", retry=EXACT)
    def flaky(ctx):
        seen.append((ctx.run.attempt, ctx.resume_state))
        ctx.checkpoint({"done": len(seen)})
        if len(seen) < 3:
            raise ConnectionError("provider timed out")
        return {"ok": True}

    run_scheduled("tests.flaky", slot=SLOT.isoformat())
    first, second = attempts_of("tests.flaky")
    assert first.status == RunStatus.FAILED and "provider timed out" in first.error
    assert (second.status, second.attempt, second.slot) == (RunStatus.QUEUED, 2, SLOT)
    assert second.retry_of == first
    assert second.next_attempt_at == SLOT + timedelta(seconds=300)

    # Not due yet: nothing is sent, and a stray early task runs nothing.
    time_machine.move_to(SLOT + timedelta(seconds=299), tick=False)
    assert send_due_retries() == []
    execute_queued(second.pk)
    assert len(seen) == 1

    time_machine.move_to(SLOT + timedelta(seconds=300), tick=False)
    assert send_and_work() == [second.pk]
    assert send_due_retries() == []  # sent once
    runs = attempts_of("tests.flaky")
    assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.FAILED, RunStatus.QUEUED]
    third = runs[2]
    # Exponential: 600 s after the second attempt ended.
    assert third.next_attempt_at == SLOT + timedelta(seconds=300 + 600)

    time_machine.move_to(third.next_attempt_at, tick=False)
    assert send_and_work() == [third.pk]
    runs = attempts_of("tests.flaky")
    assert [(r.attempt, r.status) for r in runs] == [
        (1, RunStatus.FAILED),
        (2, RunStatus.FAILED),
        (3, RunStatus.SUCCEEDED),
    ]
    assert all(r.attempts == 1 for r in runs)  # each attempt claimed once
    assert runs[2].started_at == SLOT + timedelta(seconds=900)
    # Each attempt continued from the previous one's checkpoint.
    assert seen == [(1, None), (2, {"done": 1}), (3, {"done": 2})]
    assert not JobRun.objects.filter(retry_of=runs[2]).exists()
    assert JobAction.objects.filter(action="retry_scheduled").count() == 2


def test_the_last_attempt_failing_makes_no_further_attempt(register_job, time_machine):
    time_machine.move_to(SLOT, tick=False)

    @register_job(
        "tests.down", retry=RetryPolicy(retries=1, backoff="fixed", base=60, jitter=False)
    )
    def down(ctx):
        raise RuntimeError("still down")

    first = run_job("tests.down", trigger=Trigger.API)
    second = JobRun.objects.get(retry_of=first)
    assert second.next_attempt_at == SLOT + timedelta(seconds=60)
    time_machine.move_to(SLOT + timedelta(seconds=60), tick=False)
    assert send_and_work() == [second.pk]
    second.refresh_from_db()
    assert (second.status, second.attempt) == (RunStatus.FAILED, 2)
    assert JobRun.objects.filter(job="tests.down").count() == 2


def test_aborts_bad_params_and_dry_runs_are_not_retried(register_job):
    @register_job("tests.guarded", retry=EXACT)
    def guarded(ctx, *, n: int = 1):
        if ctx.dry_run:
            raise RuntimeError("dry boom")
        raise JobAborted("safety limit tripped: nothing expired")

    run_job("tests.guarded", slot=SLOT)
    run_job("tests.guarded", dry_run=True)
    # Bad params stored on a queued run (e.g. an older declaration) fail before the job.
    bad = JobRun.objects.create(job="tests.guarded", trigger=Trigger.API, params={"n": "x"})
    execute_queued(bad.pk)
    assert JobRun.objects.filter(job="tests.guarded").count() == 3
    assert set(JobRun.objects.values_list("status", flat=True)) == {RunStatus.FAILED}
    assert not JobRun.objects.filter(attempt__gt=1).exists()


def test_the_same_attempt_of_a_slot_cannot_be_recorded_twice(register_job):
    @register_job("tests.flaky2", retry=EXACT)
    def flaky2(ctx):
        raise RuntimeError("boom")

    first = run_job("tests.flaky2", slot=SLOT)
    second = JobRun.objects.get(retry_of=first)
    # Another worker finishing the same failed attempt makes no second retry.
    assert schedule_retry(EXACT, first) is None
    with pytest.raises(IntegrityError), transaction.atomic():
        JobRun.objects.create(
            job="tests.flaky2", trigger=Trigger.SCHEDULE, slot=SLOT, attempt=second.attempt
        )
    assert JobRun.objects.filter(job="tests.flaky2").count() == 2


def test_a_redelivered_slot_task_does_not_start_a_waiting_retry_early(register_job, time_machine):
    time_machine.move_to(SLOT, tick=False)
    calls = []

    @register_job("tests.flaky3", schedule="0 * * * *", retry=EXACT)
    def flaky3(ctx):
        calls.append(ctx.run.attempt)
        raise RuntimeError("boom")

    run_scheduled("tests.flaky3", slot=SLOT.isoformat())
    run_scheduled("tests.flaky3", slot=SLOT.isoformat())  # redelivered
    assert calls == [1]
    assert JobRun.objects.filter(job="tests.flaky3").count() == 2


def test_a_due_retry_waits_while_another_run_of_the_job_is_running(register_job, time_machine):
    time_machine.move_to(SLOT, tick=False)

    @register_job("tests.flaky4", schedule="0 * * * *", retry=EXACT)
    def flaky4(ctx):
        raise RuntimeError("boom")

    run_scheduled("tests.flaky4", slot=SLOT.isoformat())
    retry = JobRun.objects.get(attempt=2)
    JobRun.objects.create(
        job="tests.flaky4",
        trigger=Trigger.SCHEDULE,
        slot=SLOT + timedelta(hours=1),
        status=RunStatus.RUNNING,
        heartbeat_at=SLOT + timedelta(seconds=300),
    )
    time_machine.move_to(SLOT + timedelta(seconds=300), tick=False)
    execute_queued(retry.pk)
    retry.refresh_from_db()
    assert retry.status == RunStatus.QUEUED  # not skipped: it waits
    assert retry.enqueued_at is None
    assert retry.next_attempt_at == SLOT + timedelta(seconds=330)


def test_staff_override_a_schedules_policy(register_job):
    @register_job("tests.overridden", schedule="0 * * * *", retry=EXACT)
    def overridden(ctx):
        pass

    sync_schedules()
    state = ScheduleState.objects.get(job="tests.overridden")
    ScheduleRetryPolicy.objects.create(schedule=state, retries=1, backoff="fixed", base_seconds=30)
    declared = get_job("tests.overridden").retry
    scheduled = policy_for(declared, JobRun(job="tests.overridden", trigger=Trigger.SCHEDULE))
    assert (scheduled.retries, scheduled.backoff, scheduled.base, scheduled.max) == (
        1,
        "fixed",
        30,
        3600,
    )
    assert policy_for(declared, JobRun(job="tests.overridden", trigger=Trigger.API)) == declared


def test_backoff_is_capped_and_jitter_stays_within_half_to_full():
    policy = RetryPolicy(retries=10, base=300, max=3600, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [300, 600, 1200, 2400, 3600, 3600]
    jittered = RetryPolicy(retries=3, base=300, max=3600, jitter=True)
    assert jittered.delay(2, rand=lambda: 0.0) == 300
    assert jittered.delay(2, rand=lambda: 1.0) == 600
    assert RetryPolicy(backoff="fixed", base=120).delay(5, rand=lambda: 1.0) == 120
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff="linear")


def test_a_partial_run_retries_only_its_failed_items_when_the_policy_says_so(register_job):
    seen = []

    @register_job(
        "tests.items_retry",
        supports_item_rerun=True,
        retry=RetryPolicy(retries=1, base=60, jitter=False, items=True),
    )
    def items_retry(ctx):
        for key in ("a", "b", "c"):
            if not ctx.should_process(key):
                continue
            seen.append(key)
            if key == "b" and ctx.run.attempt == 1:
                ctx.item_failed(key, "card declined")
            else:
                ctx.count(processed=1, succeeded=1)

    first = run_job("tests.items_retry", slot=SLOT)
    assert first.status == RunStatus.PARTIAL
    retry = JobRun.objects.get(retry_of=first)
    assert retry.only_items == ["b"]
    retry.next_attempt_at = None
    retry.save()
    execute_queued(retry.pk)
    retry.refresh_from_db()
    assert retry.status == RunStatus.SUCCEEDED
    assert seen == ["a", "b", "c", "b"]


def test_the_run_page_shows_the_attempt_and_when_the_next_one_starts(
    register_job, client, time_machine
):
    time_machine.move_to(SLOT, tick=False)

    @register_job("tests.flaky5", retry=EXACT)
    def flaky5(ctx):
        raise RuntimeError("boom")

    first = run_job("tests.flaky5", slot=SLOT)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:jobs_jobrun_change", args=[first.pk])).content.decode()
    assert "1 of 4" in page
    assert "attempt 2" in page and "2026-11-30 23:05:00" in page


def test_the_api_tells_a_runs_attempt_and_when_the_next_one_starts(
    register_job, client, time_machine
):
    time_machine.move_to(SLOT, tick=False)

    @register_job("tests.flaky6", retry=EXACT)
    def flaky6(ctx):
        raise RuntimeError("boom")

    run_job("tests.flaky6", slot=SLOT)
    second = JobRun.objects.get(job="tests.flaky6", attempt=2)

    response = client.get(f"/api/jobs/runs/{second.pk}", HTTP_AUTHORIZATION="Bearer test-api-token")

    body = response.json()
    assert (body["status"], body["attempt"], body["waiting_for"]) == ("queued", 2, None)
    assert body["next_attempt_at"] == "2026-11-30T23:05:00+00:00"


def test_staff_edit_a_retry_policy_in_the_admin(register_job, client):
    @register_job("tests.admin_policy", schedule="0 * * * *", retry=EXACT)
    def admin_policy(ctx):
        pass

    sync_schedules()
    state = ScheduleState.objects.get(job="tests.admin_policy")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        reverse("admin:jobs_scheduleretrypolicy_add"),
        {"schedule": state.pk, "retries": "5", "backoff": "fixed", "base_seconds": "bad"},
    )
    assert response.status_code == 200 and "Enter a whole number" in response.content.decode()
    response = client.post(
        reverse("admin:jobs_scheduleretrypolicy_add"),
        {"schedule": state.pk, "retries": "5", "backoff": "fixed", "base_seconds": "90"},
    )
    assert response.status_code == 302
    policy = ScheduleRetryPolicy.objects.get()
    assert (policy.retries, policy.base_seconds, policy.updated_by) == (5, 90, policy.updated_by)
    assert JobAction.objects.filter(action="edit_retry_policy", job="tests.admin_policy").exists()
    listing = client.get(reverse("admin:jobs_scheduleretrypolicy_changelist")).content.decode()
    assert "5 retries, 90 s" in listing

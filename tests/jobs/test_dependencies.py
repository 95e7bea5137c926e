"""Dependencies: a scheduled slot waits for another job's run of its period."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from jobs.alert_models import AlertRule
from jobs.dependency_spec import Dependency, start_of_day, start_of_hour
from jobs.models import JobRun, RunStatus
from jobs.registry import get_job
from jobs.retry import send_due_retries
from jobs.runner import execute_queued, run_job, run_scheduled
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def send_and_work() -> list[int]:
    sent = send_due_retries()
    for run_id in sent:
        execute_queued(run_id)
    return sent


@pytest.fixture
def jobs_with_dependency(register_job):
    calls = []

    @register_job("tests.usage", schedule="0 * * * *")
    def usage(ctx):
        calls.append(("usage", ctx.slot))

    @register_job(
        "tests.invoices",
        schedule="0 0 1 * *",
        after=(Dependency("tests.usage", slot=start_of_hour),),
        after_timeout=3600,
    )
    def invoices(ctx):
        calls.append(("invoices", ctx.slot))

    return calls


def test_a_dependent_slot_waits_then_runs_once_its_dependency_succeeded(
    jobs_with_dependency, time_machine, client
):
    time_machine.move_to(SLOT, tick=False)
    run_scheduled("tests.invoices", slot=SLOT.isoformat())
    waiting = JobRun.objects.get(job="tests.invoices")
    assert waiting.status == RunStatus.QUEUED
    assert waiting.waiting_for == "waiting for tests.usage 2026-12-01 00:00"
    assert waiting.next_attempt_at == SLOT + timedelta(seconds=30)
    assert jobs_with_dependency == []

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:jobs_jobrun_change", args=[waiting.pk])).content.decode()
    assert "waiting for tests.usage 2026-12-01 00:00" in page

    # Still missing at the first look: it waits longer (backoff: as long as it waited).
    time_machine.move_to(SLOT + timedelta(seconds=40), tick=False)
    assert send_and_work() == [waiting.pk]
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.QUEUED
    assert waiting.next_attempt_at == SLOT + timedelta(seconds=80)

    time_machine.move_to(SLOT + timedelta(seconds=50), tick=False)
    run_scheduled("tests.usage", slot=SLOT.isoformat())
    run_scheduled("tests.invoices", slot=SLOT.isoformat())  # a redelivered slot: still one run
    time_machine.move_to(SLOT + timedelta(seconds=80), tick=False)
    assert send_and_work() == [waiting.pk]
    waiting.refresh_from_db()
    assert (waiting.status, waiting.waiting_for) == (RunStatus.SUCCEEDED, "")
    assert jobs_with_dependency == [("usage", SLOT), ("invoices", SLOT)]
    assert JobRun.objects.filter(job="tests.invoices").count() == 1


def test_a_dependency_that_never_succeeds_fails_the_slot_with_the_reason_and_alerts(
    jobs_with_dependency, time_machine, webhook_receiver
):
    time_machine.move_to(SLOT, tick=False)
    AlertRule.objects.create(
        name="invoices",
        job="tests.invoices",
        condition="failed",
        channel="webhook",
        target=webhook_receiver.url,
        secret="s",
    )
    JobRun.objects.create(
        job="tests.usage",
        trigger="schedule",
        slot=SLOT,
        status=RunStatus.FAILED,
        finished_at=SLOT,
    )
    run_scheduled("tests.invoices", slot=SLOT.isoformat())
    for _ in range(20):
        run = JobRun.objects.get(job="tests.invoices")
        if run.status != RunStatus.QUEUED:
            break
        time_machine.move_to(run.next_attempt_at, tick=False)
        send_and_work()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(
        "dependency not met: tests.usage 2026-12-01 00:00 did not succeed within 3600 s"
    )
    assert run.finished_at == SLOT + timedelta(seconds=3600)
    assert jobs_with_dependency == []
    assert "dependency not met" in webhook_receiver.requests[0].json["text"]


def test_manual_runs_do_not_wait(jobs_with_dependency):
    run = run_job("tests.invoices")
    assert run.status == RunStatus.SUCCEEDED


def test_invoices_wait_for_usage_and_daily_analytics_for_reconciliation():
    invoices = get_job("billing.generate_monthly_invoices").after
    assert [(d.job, d.slot(SLOT)) for d in invoices] == [("billing.aggregate_usage", SLOT)]
    analytics = get_job("billing.aggregate_daily_analytics").after
    one_am = SLOT.replace(hour=1)
    assert [(d.job, d.slot(one_am)) for d in analytics] == [("payments.reconcile", SLOT)]
    assert start_of_day(one_am) == SLOT

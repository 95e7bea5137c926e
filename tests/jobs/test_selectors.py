"""The reads behind the jobs admin: right answers in a fixed number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from jobs.models import RunStatus, ScheduleState
from jobs.schedules import pause, sync_schedules
from jobs.selectors import job_overview, latest_runs
from tests.factories import JobRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_jobs(register_job):
    for name in ("tests.sel_a", "tests.sel_b", "tests.sel_c"):
        register_job(name, schedule="0 * * * *")(lambda ctx: {})
    sync_schedules()
    return ["tests.sel_a", "tests.sel_b", "tests.sel_c"]


def row(overview, name):
    return next(j for j in overview.jobs if j.name == name)


def test_latest_runs_gives_each_jobs_latest_run_in_two_queries(
    three_jobs, django_assert_num_queries
):
    JobRunFactory(job="tests.sel_a", status=RunStatus.FAILED)
    latest = JobRunFactory(job="tests.sel_a", status=RunStatus.SUCCEEDED)
    JobRunFactory(job="tests.sel_c", status=RunStatus.SKIPPED)

    with django_assert_num_queries(2):
        runs = latest_runs(three_jobs)

    assert (runs["tests.sel_a"]["id"], runs["tests.sel_a"]["status"]) == (
        latest.pk,
        RunStatus.SUCCEEDED,
    )
    assert runs["tests.sel_a"]["created_at"] == latest.created_at
    assert runs["tests.sel_c"]["status"] == RunStatus.SKIPPED
    assert "tests.sel_b" not in runs


def test_overview_costs_the_same_few_queries_however_many_jobs_and_runs(
    three_jobs, django_assert_max_num_queries
):
    for name in three_jobs:
        for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED):
            JobRunFactory.create_batch(3, job=name, status=status)
        JobRunFactory(job=name, status=RunStatus.RUNNING, finished_at=None)

    with django_assert_max_num_queries(5):
        overview = job_overview()
        _ = [(j.last_run, j.last_outcome, j.running, j.overdue, j.cron) for j in overview.jobs]

    assert overview.running >= 3


def test_last_success_and_failures_in_the_last_24_hours(three_jobs):
    now = timezone.now()
    JobRunFactory(
        job="tests.sel_a",
        status=RunStatus.SUCCEEDED,
        finished_at=now - timedelta(hours=3),
    )
    JobRunFactory(job="tests.sel_a", status=RunStatus.FAILED, created_at=now - timedelta(hours=2))
    JobRunFactory(job="tests.sel_a", status=RunStatus.PARTIAL, created_at=now - timedelta(hours=1))
    JobRunFactory(job="tests.sel_a", status=RunStatus.FAILED, created_at=now - timedelta(days=3))

    a = row(job_overview(now=now), "tests.sel_a")

    assert a.last_success_at == now - timedelta(hours=3)
    assert a.failures_24h == 2


def test_a_job_is_failing_when_its_last_outcome_failed_skipped_slots_aside(three_jobs):
    JobRunFactory(job="tests.sel_a", status=RunStatus.FAILED)
    JobRunFactory(job="tests.sel_a", status=RunStatus.SKIPPED)
    JobRunFactory(job="tests.sel_b", status=RunStatus.FAILED)
    JobRunFactory(job="tests.sel_b", status=RunStatus.SUCCEEDED)

    overview = job_overview()

    a, b = row(overview, "tests.sel_a"), row(overview, "tests.sel_b")
    assert a.failing and a.last_run.status == RunStatus.SKIPPED
    assert not b.failing and b.healthy


def test_overdue_only_for_active_schedules_whose_slot_passed_long_ago(three_jobs):
    long_ago = timezone.now() - timedelta(hours=6)
    Schedule.objects.filter(name__in=["tests.sel_a", "tests.sel_b"]).update(next_run=long_ago)
    pause("tests.sel_b", actor="alice", reason="on purpose")

    overview = job_overview()

    assert row(overview, "tests.sel_a").overdue
    assert not row(overview, "tests.sel_b").overdue  # paused is not overdue
    assert row(overview, "tests.sel_b").paused
    assert not row(overview, "tests.sel_c").overdue
    assert overview.overdue == 1


def test_jobs_without_a_schedule_state_are_listed_with_none(register_job):
    register_job("tests.sel_on_demand")(lambda ctx: {})

    on_demand = row(job_overview(), "tests.sel_on_demand")

    assert on_demand.state is None and on_demand.cron is None and not on_demand.overdue
    assert not ScheduleState.objects.filter(job="tests.sel_on_demand").exists()

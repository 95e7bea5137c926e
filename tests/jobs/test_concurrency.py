"""Two starts at the same moment, on PostgreSQL, in real concurrent transactions."""

import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import connection

from jobs.models import JobRun, RunStatus
from jobs.runner import run_job, run_scheduled

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SLOT = datetime(2026, 11, 1, 10, tzinfo=UTC)


def start_together(target, n: int = 2) -> list:
    """Run `target` in n threads released by one barrier; return their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target()
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return results


def test_two_concurrent_starts_run_once_and_record_the_other_as_skipped(register_job):
    calls = []

    @register_job("tests.slow")
    def slow(ctx):
        calls.append(1)
        time.sleep(0.5)

    start_together(lambda: run_job("tests.slow"), n=4)
    statuses = sorted(JobRun.objects.values_list("status", flat=True))
    assert statuses == [RunStatus.SKIPPED] * 3 + [RunStatus.SUCCEEDED]
    assert len(calls) == 1
    for skipped in JobRun.objects.filter(status=RunStatus.SKIPPED):
        assert skipped.error.startswith("already running: run #")


def test_the_same_slot_started_by_two_clusters_runs_exactly_once(register_job):
    calls = []

    @register_job("tests.slot", schedule="0 * * * *")
    def slot_job(ctx):
        calls.append(ctx.slot)
        time.sleep(0.2)

    results = start_together(lambda: run_scheduled("tests.slot", slot=SLOT.isoformat()), n=4)
    assert calls == [SLOT]
    run = JobRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED
    assert set(results) == {run.pk}


def test_different_slots_of_the_same_job_do_not_block_each_other_once_finished(register_job):
    @register_job("tests.quick", schedule="0 * * * *")
    def quick(ctx):
        pass

    for hour in range(3):
        run_scheduled("tests.quick", slot=SLOT.replace(hour=hour).isoformat())
    assert JobRun.objects.filter(status=RunStatus.SUCCEEDED).count() == 3


def test_a_queued_run_delivered_to_two_workers_at_once_runs_once(register_job):
    from jobs.runner import execute_queued
    from tests.factories import JobRunFactory

    calls = []

    @register_job("tests.redelivered")
    def redelivered(ctx):
        calls.append(1)
        time.sleep(0.3)

    run = JobRunFactory(
        job="tests.redelivered", status=RunStatus.QUEUED, started_at=None, finished_at=None
    )
    start_together(lambda: execute_queued(run.pk), n=4)
    run.refresh_from_db()
    assert calls == [1]
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 1)

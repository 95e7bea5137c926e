"""Bounded run history (jobs.retention, run by maintenance.cleanup)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import JobAction, JobChunk, JobItemFailure, JobRun, RunStatus
from jobs.retention import purge_job_runs
from jobs.runner import run_job
from tests.factories import JobRunFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


def aged(days: float, **fields) -> JobRun:
    return JobRunFactory(created_at=NOW - timedelta(days=days), **fields)


def purge(**kwargs):
    return purge_job_runs(now=NOW, dry_run=kwargs.pop("dry_run", False), batch_size=2, **kwargs)


def test_runs_past_their_retention_go_and_the_rest_stay():
    keep = {
        "young success": aged(89),
        "young failure": aged(364, status=RunStatus.FAILED),
        "young partial": aged(300, status=RunStatus.PARTIAL),
        "young skip": aged(6, status=RunStatus.SKIPPED),
        "old but still queued": aged(400, status=RunStatus.QUEUED, finished_at=None),
        "old but interrupted": aged(400, status=RunStatus.INTERRUPTED, finished_at=None),
    }
    gone = {
        "old success": aged(91),
        "old failure": aged(366, status=RunStatus.FAILED),
        "old partial": aged(366, status=RunStatus.PARTIAL),
        "old skip": aged(8, status=RunStatus.SKIPPED),
    }
    newest_success = aged(1)

    result = purge()

    assert result.removed == len(gone)
    left = set(JobRun.objects.values_list("pk", flat=True))
    assert left == {r.pk for r in keep.values()} | {newest_success.pk}


def test_each_jobs_last_success_is_kept_whatever_its_age():
    older = aged(600, job="tests.yearly")
    last = aged(500, job="tests.yearly")
    aged(501, job="tests.yearly", tenant="org_b")  # another tenant's last success
    aged(50, job="tests.yearly", status=RunStatus.FAILED)

    assert purge().removed == 1
    assert not JobRun.objects.filter(pk=older.pk).exists()
    assert JobRun.objects.filter(pk=last.pk).exists()
    assert JobRun.objects.filter(job="tests.yearly", tenant="org_b").exists()


def test_item_failures_chunks_and_actions_go_with_their_run():
    old = aged(400, status=RunStatus.FAILED)
    JobItemFailure.objects.create(run=old, item_key="a", error="x")
    JobChunk.objects.create(run=old, index=0, items=[1])
    JobAction.objects.create(actor="alice", action="rerun", job=old.job, run=old)
    rerun = aged(10, rerun_of=old)
    aged(1)

    assert purge().removed == 1
    assert not JobItemFailure.objects.exists()
    assert not JobChunk.objects.exists()
    assert not JobAction.objects.exists()
    rerun.refresh_from_db()
    assert rerun.rerun_of_id is None


def test_a_dry_run_counts_and_deletes_nothing():
    for _ in range(3):
        aged(100)
    aged(1)
    result = purge(dry_run=True)
    assert result.removed == 3 and len(result.sample) == 3
    assert JobRun.objects.count() == 4


def test_a_retention_below_a_day_deletes_nothing(settings):
    settings.JOBS_SKIPPED_RUN_RETENTION_DAYS = 0
    aged(100)
    result = purge()
    assert result.skipped and result.removed == 0
    assert JobRun.objects.count() == 1


def test_the_weekly_cleanup_deletes_old_runs_through_this_service(settings):
    settings.INVOICE_REFERENCED_FILES_PROVIDER = ""
    aged(100)
    aged(100)
    run = run_job("maintenance.cleanup")
    assert run.summary["categories"]["job_runs"]["removed"] == 1  # one kept: the last success
    assert run.summary["categories"]["job_runs"]["retention_days"]["succeeded"] == 90

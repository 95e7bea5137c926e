"""maintenance.purge_audit_trail: batched, resumable, never too young."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from audit.models import AuditTrail
from jobs.context import JobContext
from jobs.models import JobRun, RunStatus
from jobs.params import ParamError
from jobs.registry import get_job
from jobs.runner import run_job
from tests.factories import AuditTrailFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def retention(settings):
    settings.AUDIT_RETENTION_DAYS = 90


JOB = "maintenance.purge_audit_trail"
SLOT = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)  # in the past: the purge never looks past now
CUTOFF = SLOT - timedelta(days=90)


def seed(*, old: int, young: int) -> tuple[list[int], list[int]]:
    """`old` records past the retention, then `young` ones inside it, in id order."""
    olds = [
        AuditTrailFactory(at=CUTOFF - timedelta(days=30) + timedelta(hours=i)).pk
        for i in range(old)
    ]
    youngs = [AuditTrailFactory(at=CUTOFF + timedelta(seconds=1 + i)).pk for i in range(young)]
    return olds, youngs


def purge(**params) -> JobRun:
    dry_run = params.pop("dry_run", False)
    return run_job(JOB, params=params, slot=SLOT, dry_run=dry_run)


def test_purge_is_scheduled_daily_on_the_low_queue():
    spec = get_job(JOB)
    assert (spec.schedule, spec.queue) == ("0 2 * * *", "low")
    assert {p.name for p in spec.params} == {"retention_days", "batch_size", "batch_delay_ms"}


def test_purge_deletes_only_rows_older_than_retention():
    _, youngs = seed(old=7, young=3)
    on_the_cutoff = AuditTrailFactory(at=CUTOFF).pk  # exactly 90 days old: kept

    run = purge(batch_size=2, batch_delay_ms=0)

    assert run.status == RunStatus.SUCCEEDED, run.error
    remaining = set(AuditTrail.objects.values_list("pk", flat=True))
    assert remaining == {*youngs, on_the_cutoff}
    assert run.summary["deleted"] == 7
    assert run.summary["batches"] == 4
    assert run.summary["cutoff"] == CUTOFF.isoformat()
    assert (run.processed, run.succeeded) == (7, 7)


def test_purge_interleaved_young_rows_survive_every_batch():
    """Rows are not ordered by age: a young row between old ones stays."""
    ids = []
    for i in range(12):
        at = CUTOFF + timedelta(days=1) if i % 3 == 0 else CUTOFF - timedelta(days=1)
        ids.append((AuditTrailFactory(at=at).pk, i % 3 == 0))

    run = purge(batch_size=5, batch_delay_ms=0)

    assert run.summary["deleted"] == 8
    assert set(AuditTrail.objects.values_list("pk", flat=True)) == {
        pk for pk, young in ids if young
    }


@pytest.mark.parametrize(
    "params",
    [
        {"retention_days": 1},
        {"retention_days": 89},
        {"retention_days": -5},
        {"batch_size": 0},
        {"batch_size": -1},
        {"batch_size": 10_000_000},
        {"batch_delay_ms": -1},
    ],
)
def test_purge_never_deletes_younger_rows_even_with_a_bad_parameter(params):
    seed(old=4, young=4)

    run = purge(**params)

    assert run.status == RunStatus.FAILED
    assert next(iter(params)) in run.error
    assert AuditTrail.objects.count() == 8


@override_settings(AUDIT_RETENTION_DAYS=0)
def test_purge_refuses_a_retention_setting_below_one_day():
    seed(old=2, young=2)

    run = purge()

    assert run.status == RunStatus.FAILED
    assert "AUDIT_RETENTION_DAYS" in run.error
    assert AuditTrail.objects.count() == 4


def test_purge_rejects_an_ill_typed_parameter_before_running():
    seed(old=2, young=0)
    with pytest.raises(ParamError, match="batch_size"):
        purge(batch_size="lots")
    assert AuditTrail.objects.count() == 2
    assert not JobRun.objects.exists()


def test_a_longer_retention_parameter_keeps_more():
    seed(old=3, young=0)  # 90 + 6..30 days old
    AuditTrailFactory(at=SLOT - timedelta(days=200))

    run = purge(retention_days=180)

    assert run.summary["deleted"] == 1
    assert AuditTrail.objects.count() == 3


def test_a_slot_in_the_future_does_not_make_young_rows_old():
    now_ish = datetime.now(UTC)
    young = AuditTrailFactory(at=now_ish - timedelta(days=10))

    run = run_job(JOB, slot=now_ish + timedelta(days=365))

    assert run.status == RunStatus.SUCCEEDED
    assert AuditTrail.objects.filter(pk=young.pk).exists()


def test_purge_dry_run_counts_and_deletes_nothing():
    olds, _ = seed(old=5, young=2)

    run = purge(dry_run=True)

    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["would_delete"] == 5
    assert run.summary["id_range"] == [olds[0], olds[-1]]
    assert run.summary["dry_run"] is True
    assert AuditTrail.objects.count() == 7


def test_purge_resumes_after_a_crash_from_its_checkpoint(monkeypatch):
    olds, youngs = seed(old=10, young=2)
    original = JobContext.checkpoint
    calls = []

    def crash_in_the_third_batch(self, state):
        original(self, state)
        calls.append(state)
        if len(calls) == 3:  # the third batch and its checkpoint roll back together
            raise RuntimeError("worker killed")

    monkeypatch.setattr(JobContext, "checkpoint", crash_in_the_third_batch)
    crashed = purge(batch_size=3, batch_delay_ms=0)
    monkeypatch.setattr(JobContext, "checkpoint", original)

    assert crashed.status == RunStatus.FAILED
    assert crashed.checkpoint["next_id"] == olds[0] + 6
    assert crashed.checkpoint["deleted"] == 6
    assert AuditTrail.objects.count() == 6  # 4 old + 2 young left

    # A later rerun (another slot, a later cutoff) continues the crashed purge
    # from its checkpoint and with its cutoff.
    later_young = AuditTrailFactory(at=CUTOFF + timedelta(hours=1))
    resumed = run_job(
        JOB, params={"batch_size": 3, "batch_delay_ms": 0}, slot=SLOT + timedelta(days=1)
    )

    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert resumed.summary["resumed_from_id"] == olds[0] + 6
    assert resumed.summary["cutoff"] == CUTOFF.isoformat()
    assert resumed.summary["deleted"] == 4
    assert set(AuditTrail.objects.values_list("pk", flat=True)) == {*youngs, later_young.pk}


def test_after_a_successful_purge_the_next_run_starts_afresh():
    seed(old=3, young=1)
    purge(batch_size=2, batch_delay_ms=0)
    AuditTrailFactory(at=CUTOFF - timedelta(days=1))  # a late insert with an old time

    run = run_job(JOB, params={"batch_size": 2, "batch_delay_ms": 0}, slot=SLOT + timedelta(days=1))

    assert run.summary["resumed_from_id"] is None
    # The late insert, and the young row that aged past the retention by a day.
    assert run.summary["deleted"] == 2
    assert not AuditTrail.objects.exists()


@pytest.mark.usefixtures("empty_broker")
def test_a_rerun_of_a_finished_purge_starts_afresh(drain_queue, django_capture_on_commit_callbacks):
    from jobs.enqueue import rerun

    seed(old=3, young=0)
    first = purge(batch_size=2, batch_delay_ms=0)
    assert first.checkpoint is None
    AuditTrailFactory(at=CUTOFF - timedelta(days=1))  # an old row inserted late, low time

    with django_capture_on_commit_callbacks(execute=True):
        again = rerun(first, actor="alice", trigger="admin")
    drain_queue()
    again.refresh_from_db()

    assert again.status == RunStatus.SUCCEEDED, again.error
    assert again.summary["resumed_from_id"] is None
    assert again.summary["deleted"] == 1


def test_a_batch_and_its_checkpoint_commit_together(monkeypatch):
    """A crash between a batch's DELETE and its checkpoint loses neither: the
    checkpoint's count is exactly the rows gone, so a resumed run's counts add
    up to every old row, each counted once."""
    olds, youngs = seed(old=9, young=1)
    original = JobContext.checkpoint
    calls = []

    def crash_before_writing_the_second_checkpoint(self, state):
        calls.append(state)
        if len(calls) == 2:
            raise RuntimeError("worker killed")
        original(self, state)

    monkeypatch.setattr(JobContext, "checkpoint", crash_before_writing_the_second_checkpoint)
    crashed = purge(batch_size=3, batch_delay_ms=0)
    monkeypatch.setattr(JobContext, "checkpoint", original)

    assert crashed.checkpoint == {
        "cutoff": CUTOFF.isoformat(),
        "next_id": olds[0] + 3,
        "deleted": 3,
    }
    assert AuditTrail.objects.count() == 7  # the second batch rolled back with its checkpoint
    resumed = run_job(
        JOB, params={"batch_size": 3, "batch_delay_ms": 0}, slot=SLOT + timedelta(days=1)
    )
    assert resumed.summary["resumed_from_id"] == olds[0] + 3
    assert crashed.checkpoint["deleted"] + resumed.summary["deleted"] == len(olds)
    assert list(AuditTrail.objects.values_list("pk", flat=True)) == youngs

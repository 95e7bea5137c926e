"""billing.aggregate_usage: the hour before its slot, single hours and bounded backfills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import AggregationType, BillableMetric, UsageAggregate, UsageLateHour
from billing.services.usage import UsageEventIn, record_usage_events
from jobs.models import JobRun, RunStatus
from jobs.registry import get_job
from jobs.runner import run_job
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

JOB = "billing.aggregate_usage"
H10 = datetime(2026, 11, 1, 10, tzinfo=UTC)
SLOT = H10 + timedelta(hours=1)  # the 11:00 slot aggregates 10:00-11:00


@pytest.fixture(autouse=True)
def clock(time_machine):
    """Two days after these hours: over, and well inside the event retention."""
    time_machine.move_to(H10 + timedelta(days=2), tick=True)


@pytest.fixture
def org():
    BillableMetric.objects.create(code="api_calls", name="API", aggregation=AggregationType.SUM)
    organization = OrganizationFactory(key="org_acme")
    events = [
        UsageEventIn(
            organization_id=organization.pk,
            metric="api_calls",
            occurred_at=H10 + timedelta(hours=h, minutes=m),
            quantity=h + 4,
            idempotency_key=f"h{h}m{m}",
        )
        for h in range(-3, 2)
        for m in (0, 30)
    ]
    record_usage_events(events=events)
    return organization


def totals() -> dict[datetime, int]:
    return dict(UsageAggregate.objects.values_list("hour", "total"))


def test_aggregate_usage_is_hourly_on_the_hour():
    spec = get_job(JOB)
    assert (spec.schedule, spec.queue) == ("0 * * * *", "normal")
    assert {p.name for p in spec.params} == {"hour", "from_hour", "to_hour"}


def test_a_slot_aggregates_the_hour_before_it(org):
    run = run_job(JOB, slot=SLOT + timedelta(minutes=3))  # a late start: same hour

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert totals() == {H10: 8}
    assert run.summary["first_hour"] == H10.isoformat()
    assert run.summary["aggregates_written"] == 1


def test_running_the_same_hour_again_changes_nothing(org):
    run_job(JOB, slot=SLOT)
    before = list(UsageAggregate.objects.values("pk", "total", "event_count", "updated_at"))

    again = run_job(JOB, params={"hour": "2026-11-01T10:00Z"})

    assert again.status == RunStatus.SUCCEEDED, again.error
    assert again.summary["aggregates_written"] == 0
    assert list(UsageAggregate.objects.values("pk", "total", "event_count", "updated_at")) == before


def test_the_cli_backfills_a_range_of_hours_both_ends_included(org):
    out = StringIO()
    call_command(
        "runjob",
        JOB,
        "--param",
        "from_hour=2026-11-01T07:00Z",
        "--param",
        "to_hour=2026-11-01T09:00Z",
        stdout=out,
    )

    run = JobRun.objects.get(job=JOB)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert totals() == {
        H10 - timedelta(hours=3): 2,
        H10 - timedelta(hours=2): 4,
        H10 - timedelta(hours=1): 6,
    }
    assert "aggregates_written: 3" in out.getvalue()
    assert run.summary["hours"] == 3
    assert run.checkpoint is None


def test_a_dry_run_counts_what_it_would_write(org):
    run = run_job(JOB, params={"hour": "2026-11-01T10:00Z"}, dry_run=True)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (run.summary["would_write"], run.summary["events"]) == (1, 2)
    assert not UsageAggregate.objects.exists()


def test_a_tenant_run_aggregates_only_its_organization(org):
    other = OrganizationFactory(key="org_other")
    record_usage_events(
        events=[
            UsageEventIn(
                organization_id=other.pk, metric="api_calls", occurred_at=H10, idempotency_key="o"
            )
        ]
    )

    run = run_job(JOB, tenant="org_other", slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert list(UsageAggregate.objects.values_list("organization_id", flat=True)) == [other.pk]


def test_a_failed_hour_is_an_item_failure_and_the_others_are_done(org, monkeypatch):
    from billing.jobs import usage as usage_jobs

    real = usage_jobs.aggregate_hour

    def flaky(*, hour, **kwargs):
        if hour == H10 - timedelta(hours=2):
            raise RuntimeError("deadlock detected")
        return real(hour=hour, **kwargs)

    monkeypatch.setattr(usage_jobs, "aggregate_hour", flaky)
    run = run_job(JOB, params={"from_hour": "2026-11-01T07:00Z", "to_hour": "2026-11-01T09:00Z"})

    assert run.status == RunStatus.PARTIAL
    assert run.failures.get().item_key == (H10 - timedelta(hours=2)).isoformat()
    assert len(totals()) == 2


def test_a_crashed_backfill_continues_after_its_last_hour(org, monkeypatch):
    from billing.jobs import usage as usage_jobs

    real = usage_jobs.aggregate_hour
    done = []

    def crash_on_third(*, hour, **kwargs):
        if hour == H10 - timedelta(hours=1) and not done:
            done.append(hour)
            raise SystemExit("worker killed")
        return real(hour=hour, **kwargs)

    monkeypatch.setattr(usage_jobs, "aggregate_hour", crash_on_third)
    params = {"from_hour": "2026-11-01T07:00Z", "to_hour": "2026-11-01T09:00Z"}
    with pytest.raises(SystemExit):
        run_job(JOB, params=params)
    crashed = JobRun.objects.get(job=JOB)
    assert crashed.checkpoint["done_through"] == (H10 - timedelta(hours=2)).isoformat()
    JobRun.objects.filter(pk=crashed.pk).update(status=RunStatus.FAILED)

    again = run_job(JOB, params=params)

    assert again.status == RunStatus.SUCCEEDED, again.error
    assert again.summary["hours_skipped"] == 2
    assert len(totals()) == 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hour": "2026-11-01T11:00Z"}, "not over"),
        ({"from_hour": "2026-10-01T00:00Z", "to_hour": "2026-11-01T09:00Z"}, "at most 744"),
        ({"from_hour": "2026-11-01T07:00Z"}, "go together"),
        ({"hour": "2026-11-01T07:00Z", "to_hour": "2026-11-01T08:00Z"}, "not both"),
        ({"from_hour": "2026-11-01T09:00Z", "to_hour": "2026-11-01T07:00Z"}, "before"),
        ({"hour": "2026-06-01T07:00Z"}, "USAGE_EVENT_RETENTION_DAYS"),
    ],
)
def test_bad_hours_are_refused_and_nothing_is_written(org, params, message):
    run = run_job(JOB, params=params, slot=SLOT)

    assert run.status == RunStatus.FAILED
    assert message in run.error
    assert not UsageAggregate.objects.exists()


def test_a_slot_run_also_rebuilds_hours_that_got_late_events(org):
    run_job(JOB, params={"from_hour": "2026-11-01T07:00Z", "to_hour": "2026-11-01T08:00Z"})
    late = [
        UsageEventIn(
            organization_id=org.pk,
            metric="api_calls",
            occurred_at=H10 - timedelta(hours=3, minutes=-50),
            quantity=100,
            idempotency_key="late-1",
        )
    ]
    record_usage_events(events=late)

    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.summary["late_hours"] == [(H10 - timedelta(hours=3)).isoformat()]
    assert totals()[H10 - timedelta(hours=3)] == 2 + 100
    assert totals()[H10] == 8
    assert not UsageLateHour.objects.exists()
    again = run_job(JOB, slot=SLOT + timedelta(hours=1))
    assert "late_hours" not in again.summary

"""Usage: recording events once, hourly aggregates, and period totals per aggregation type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing.models import (
    AggregationType,
    BillableMetric,
    UsageAggregate,
    UsageEvent,
    UsageLateHour,
)
from billing.selectors import usage_totals
from billing.services.usage import UsageEventIn, aggregate_hour, record_usage_events
from subscriptions.models import OrganizationStatus
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

H10 = datetime(2026, 11, 1, 10, tzinfo=UTC)
H11 = H10 + timedelta(hours=1)


@pytest.fixture
def metrics() -> dict[str, BillableMetric]:
    return {
        kind: BillableMetric.objects.create(code=code, name=code, aggregation=kind)
        for code, kind in [
            ("api_calls", AggregationType.SUM),
            ("requests", AggregationType.COUNT),
            ("storage_gb", AggregationType.MAX),
            ("active_users", AggregationType.UNIQUE_COUNT),
        ]
    }


_seq = iter(range(10**9))


def event(org, metric: str, at: datetime, quantity: int = 1, value: str = "", key: str = ""):
    return UsageEventIn(
        organization_id=org.pk,
        metric=metric,
        occurred_at=at,
        quantity=quantity,
        value_key=value,
        idempotency_key=key or f"k{next(_seq)}",
    )


def aggregates(org) -> dict[tuple[str, datetime], tuple[int, int]]:
    return {
        (a.metric, a.hour): (a.total, a.event_count)
        for a in UsageAggregate.objects.filter(organization=org)
    }


def test_a_resent_event_is_stored_once(metrics):
    org = OrganizationFactory()
    first = event(org, "api_calls", H10, 5, key="evt-1")

    assert record_usage_events(events=[first, event(org, "api_calls", H10, 2)]) == 2
    assert record_usage_events(events=[first]) == 0
    assert record_usage_events(events=[first, first]) == 0

    assert UsageEvent.objects.count() == 2


def test_the_same_key_in_two_organizations_is_two_events(metrics):
    a, b = OrganizationFactory(), OrganizationFactory()

    new = record_usage_events(
        events=[event(a, "api_calls", H10, key="same"), event(b, "api_calls", H10, key="same")]
    )

    assert new == 2


def test_recording_accepts_dicts_and_refuses_unknown_metrics(metrics):
    org = OrganizationFactory()
    good = {
        "organization_id": org.pk,
        "metric": "api_calls",
        "occurred_at": H10,
        "idempotency_key": "d1",
    }

    with pytest.raises(ValueError, match="unknown metric"):
        record_usage_events(events=[good, {**good, "metric": "nope", "idempotency_key": "d2"}])
    assert UsageEvent.objects.count() == 0
    with pytest.raises(ValueError, match="idempotency_key"):
        record_usage_events(events=[{**good, "idempotency_key": ""}])
    assert record_usage_events(events=[good]) == 1


def test_each_aggregation_type_rolls_up_an_hour(metrics):
    org = OrganizationFactory()
    record_usage_events(
        events=[
            event(org, "api_calls", H10, 5),
            event(org, "api_calls", H10 + timedelta(minutes=59), 7),
            event(org, "api_calls", H11, 100),  # the next hour
            event(org, "requests", H10, 40),
            event(org, "requests", H10, 2),
            event(org, "storage_gb", H10, 3),
            event(org, "storage_gb", H10, 9),
            event(org, "storage_gb", H10, 4),
            event(org, "active_users", H10, value="u1"),
            event(org, "active_users", H10, value="u2"),
            event(org, "active_users", H10, value="u1"),
        ]
    )

    result = aggregate_hour(hour=H10)

    assert result.written == 4
    assert aggregates(org) == {
        ("api_calls", H10): (12, 2),
        ("requests", H10): (2, 2),
        ("storage_gb", H10): (9, 3),
        ("active_users", H10): (2, 3),
    }


def test_rerunning_an_hour_gives_the_same_rows_and_picks_up_late_events(metrics):
    org = OrganizationFactory()
    record_usage_events(events=[event(org, "api_calls", H10, 5)])
    aggregate_hour(hour=H10)
    before = list(UsageAggregate.objects.values_list("pk", "total", "event_count"))

    assert aggregate_hour(hour=H10).written == 0
    assert list(UsageAggregate.objects.values_list("pk", "total", "event_count")) == before

    record_usage_events(events=[event(org, "api_calls", H10 + timedelta(minutes=30), 1)])
    assert aggregate_hour(hour=H10).written == 1
    assert aggregates(org) == {("api_calls", H10): (6, 2)}


def test_closed_organizations_are_not_aggregated(metrics):
    open_org = OrganizationFactory()
    closed = OrganizationFactory(status=OrganizationStatus.CLOSED)
    record_usage_events(events=[event(open_org, "api_calls", H10), event(closed, "api_calls", H10)])

    aggregate_hour(hour=H10)

    assert list(UsageAggregate.objects.values_list("organization_id", flat=True)) == [open_org.pk]


def test_a_tenant_run_aggregates_only_that_organization(metrics):
    a, b = OrganizationFactory(), OrganizationFactory()
    record_usage_events(events=[event(a, "api_calls", H10), event(b, "api_calls", H10)])

    aggregate_hour(hour=H10, organization_id=b.pk)

    assert list(UsageAggregate.objects.values_list("organization_id", flat=True)) == [b.pk]


def test_dry_run_counts_and_writes_nothing(metrics):
    org = OrganizationFactory()
    record_usage_events(
        events=[
            event(org, "api_calls", H10),
            event(org, "api_calls", H10),
            event(org, "requests", H10),
        ]
    )

    result = aggregate_hour(hour=H10, dry_run=True)

    assert (result.groups, result.events, result.written) == (2, 3, 0)
    assert not UsageAggregate.objects.exists()


def test_usage_totals_give_period_totals_for_every_type(metrics):
    org, other = OrganizationFactory(), OrganizationFactory()
    events = []
    for hour in range(3):
        at = H10 + timedelta(hours=hour)
        events += [
            event(org, "api_calls", at, 10),
            event(org, "requests", at),
            event(org, "storage_gb", at, 5 + hour * 10 if hour != 2 else 1),
            event(org, "active_users", at, value="u1"),
            event(org, "active_users", at, value=f"h{hour}"),
        ]
    events.append(event(other, "api_calls", H10, 1))
    record_usage_events(events=events)
    for hour in range(3):
        aggregate_hour(hour=H10 + timedelta(hours=hour))

    totals = usage_totals(
        organization_ids=[org.pk, other.pk], start=H10, end=H10 + timedelta(hours=3)
    )

    assert totals == {
        (org.pk, "api_calls"): 30,
        (org.pk, "requests"): 3,
        (org.pk, "storage_gb"): 15,
        (org.pk, "active_users"): 4,  # u1, h0, h1, h2: not 2 + 2 + 2
        (other.pk, "api_calls"): 1,
    }
    assert usage_totals(organization_ids=[org.pk], start=H11, end=H11 + timedelta(hours=1)) == {
        (org.pk, "api_calls"): 10,
        (org.pk, "requests"): 1,
        (org.pk, "storage_gb"): 15,
        (org.pk, "active_users"): 2,
    }


def test_usage_totals_count_only_aggregated_hours(metrics):
    org = OrganizationFactory()
    record_usage_events(
        events=[event(org, "api_calls", H10, 1), event(org, "active_users", H10, value="a")]
    )

    assert usage_totals(organization_ids=[org.pk], start=H10, end=H11) == {}


def test_usage_totals_fall_back_to_hourly_unique_counts_when_events_are_purged(metrics):
    org = OrganizationFactory()
    record_usage_events(events=[event(org, "active_users", H10, value=v) for v in "abc"])
    aggregate_hour(hour=H10)
    UsageEvent.objects.all().delete()

    assert usage_totals(organization_ids=[org.pk], start=H10, end=H11) == {
        (org.pk, "active_users"): 3
    }


def test_usage_totals_refuse_periods_off_the_hour(metrics):
    with pytest.raises(ValueError, match="on the hour"):
        usage_totals(organization_ids=[1], start=H10 + timedelta(minutes=5), end=H11)
    with pytest.raises(ValueError, match="after start"):
        usage_totals(organization_ids=[1], start=H11, end=H10)


def test_unique_count_events_need_the_value_they_count(metrics):
    org = OrganizationFactory()

    with pytest.raises(ValueError, match="needs a value_key"):
        record_usage_events(events=[event(org, "active_users", H10)])

    assert not UsageEvent.objects.exists()


def test_large_batches_are_inserted_in_chunks_and_counted(metrics):
    org = OrganizationFactory()
    batch = [event(org, "api_calls", H10, key=f"big-{i}") for i in range(2_500)]

    assert record_usage_events(events=batch) == 2_500
    assert record_usage_events(events=[*batch[1_000:], event(org, "api_calls", H10)]) == 1
    assert aggregate_hour(hour=H10).written == 1
    assert aggregates(org) == {("api_calls", H10): (2_501, 2_501)}


def test_an_event_recorded_after_its_hour_was_aggregated_marks_the_hour_late(metrics):
    org = OrganizationFactory()
    record_usage_events(events=[event(org, "api_calls", H10, key="on-time")])
    aggregate_hour(hour=H10)

    record_usage_events(events=[event(org, "api_calls", H11)])  # an hour not aggregated yet
    record_usage_events(events=[event(org, "api_calls", H10, key="on-time")])  # a resend
    assert not UsageLateHour.objects.exists()

    record_usage_events(events=[event(org, "api_calls", H10 + timedelta(minutes=5), 4)])
    assert list(UsageLateHour.objects.values_list("hour", flat=True)) == [H10]

    aggregate_hour(hour=H10, organization_id=org.pk)  # one tenant: others may be late too
    assert UsageLateHour.objects.exists()
    aggregate_hour(hour=H10)
    assert not UsageLateHour.objects.exists()
    assert aggregates(org)[("api_calls", H10)] == (5, 2)

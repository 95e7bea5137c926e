"""Concurrent senders and aggregation: each event stored once, and counted or marked late."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from billing.models import (
    AggregationType,
    BillableMetric,
    UsageAggregate,
    UsageEvent,
    UsageLateHour,
)
from billing.services.usage import UsageEventIn, aggregate_hour, record_usage_events
from tests.factories import OrganizationFactory

H10 = datetime(2026, 11, 1, 10, tzinfo=UTC)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_resends_of_the_same_events_count_each_once():
    BillableMetric.objects.create(code="api_calls", name="API", aggregation=AggregationType.SUM)
    org = OrganizationFactory()
    events = [
        UsageEventIn(
            organization_id=org.pk,
            metric="api_calls",
            occurred_at=H10 + timedelta(seconds=i),
            idempotency_key=f"evt-{i}",
        )
        for i in range(500)
    ]
    first_inserted = threading.Event()
    new: dict[str, int] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                new["first"] = record_usage_events(events=events)
                first_inserted.set()
                threading.Event().wait(0.5)  # hold the rows uncommitted
        finally:
            connection.close()

    def second() -> None:
        try:
            assert first_inserted.wait(10)
            new["second"] = record_usage_events(events=events[250:] + events[:250])
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert new == {"first": 500, "second": 0}  # the second waited for the first to commit
    assert UsageEvent.objects.count() == 500


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_sent_while_its_hour_is_aggregated_waits_and_marks_the_hour_late():
    """The aggregation holds its hour's lock: a recording of that hour waits for
    it to commit, then (the hour aggregated without the event) marks it late."""
    BillableMetric.objects.create(code="api_calls", name="API", aggregation=AggregationType.SUM)
    org = OrganizationFactory()

    def one(key: str) -> list[UsageEventIn]:
        return [
            UsageEventIn(
                organization_id=org.pk, metric="api_calls", occurred_at=H10, idempotency_key=key
            )
        ]

    record_usage_events(events=one("before"))
    aggregating = threading.Event()
    finished: dict[str, float] = {}

    def aggregate() -> None:
        try:
            with transaction.atomic():
                aggregate_hour(hour=H10)
                aggregating.set()
                threading.Event().wait(0.8)  # hold the hour's lock
                finished["aggregation"] = time.monotonic()
        finally:
            connection.close()

    def record() -> None:
        try:
            assert aggregating.wait(10)
            record_usage_events(events=one("during"))
            finished["recording"] = time.monotonic()
        finally:
            connection.close()

    threads = [threading.Thread(target=aggregate), threading.Thread(target=record)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert finished["recording"] > finished["aggregation"]
    assert UsageAggregate.objects.get().event_count == 1
    assert list(UsageLateHour.objects.values_list("hour", flat=True)) == [H10]
    aggregate_hour(hour=H10)
    assert UsageAggregate.objects.get().event_count == 2

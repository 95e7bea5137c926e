"""The demo usage seeded by `manage.py seed_demo`."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import BillableMetric, DailyMetrics, PlanMetricPrice, UsageAggregate, UsageEvent
from billing.selectors import usage_totals

pytestmark = pytest.mark.django_db


def test_seed_demo_adds_metrics_prices_events_and_their_aggregates():
    call_command("seed_demo", stdout=StringIO())

    assert set(BillableMetric.objects.values_list("aggregation", flat=True)) == {
        "sum",
        "max",
        "unique_count",
    }
    assert PlanMetricPrice.objects.count() == 3 * 3
    assert UsageEvent.objects.count() > 1000
    hours = UsageAggregate.objects.order_by("hour").values_list("hour", flat=True)
    assert hours.distinct().count() == 72
    org_ids = list(UsageEvent.objects.values_list("organization_id", flat=True).distinct())
    totals = usage_totals(organization_ids=org_ids, start=hours.first(), end=hours.last())
    assert {metric for _, metric in totals} == {"api_calls", "storage_gb", "active_users"}
    assert DailyMetrics.objects.count() == 30 * 3
    assert DailyMetrics.objects.filter(active_subscriptions__gt=0).exists()


def test_seed_demo_twice_in_an_hour_adds_no_usage():
    call_command("seed_demo", stdout=StringIO())
    events = UsageEvent.objects.count()

    call_command("seed_demo", stdout=StringIO())

    assert UsageEvent.objects.count() == events

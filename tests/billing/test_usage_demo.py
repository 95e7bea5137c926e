"""The demo usage seeded by `manage.py seed_demo`."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import (
    BillableMetric,
    DailyMetrics,
    Invoice,
    PlanMetricPrice,
    UsageAggregate,
    UsageEvent,
)
from billing.selectors import usage_totals
from jobs.models import RunStatus
from jobs.runner import run_job
from subscriptions.models import Plan

pytestmark = pytest.mark.django_db


def test_seed_demo_adds_metrics_prices_events_and_their_aggregates():
    call_command("seed_demo", stdout=StringIO())

    assert set(BillableMetric.objects.values_list("aggregation", flat=True)) == {
        "sum",
        "max",
        "unique_count",
    }
    assert PlanMetricPrice.objects.count() == 3 * Plan.objects.count()  # every metric on every plan
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


def test_the_demo_organizations_get_their_last_month_invoiced(settings, tmp_path, time_machine):
    """What `make run` shows: seed_demo, then the monthly run bills every demo
    organization (each buys plans in one currency) with a stored PDF."""
    # The demo's subscription periods are the 30 days around "now": mid-month,
    # they overlap the month before.
    time_machine.move_to(datetime(2026, 11, 16, 12, tzinfo=UTC), tick=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "invoices": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    call_command("seed_demo", stdout=StringIO())
    first_of_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    run = run_job("billing.generate_monthly_invoices", slot=first_of_month)

    assert run.status == RunStatus.SUCCEEDED, run.summary
    invoices = Invoice.objects.select_related("organization")
    assert sorted(i.organization.key for i in invoices) == ["org_acme", "org_globex", "org_initech"]
    assert {i.organization.key: i.currency for i in invoices}["org_initech"] == "USD"
    assert all(i.pdf and i.total_minor > 0 for i in invoices)

"""The demo usage seeded by `manage.py seed_demo`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import (
    BillableMetric,
    DailyMetrics,
    Invoice,
    InvoiceLine,
    PlanMetricPrice,
    UsageAggregate,
    UsageEvent,
)
from billing.selectors import usage_totals
from jobs.models import RunStatus
from jobs.runner import run_job
from subscriptions.models import Plan, Subscription

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


@pytest.mark.parametrize(
    "now",
    [
        datetime(2027, 1, 31, 23, 40, tzinfo=UTC),  # a month's last hour
        datetime(2027, 3, 1, 0, 20, tzinfo=UTC),  # just after a (28-day) month
        datetime(2026, 11, 16, 12, tzinfo=UTC),  # mid-month
    ],
    ids=["month-end", "month-start", "mid-month"],
)
def test_the_demo_organizations_get_their_last_month_invoiced(
    settings, tmp_path, time_machine, now
):
    """What `make run` shows, whatever the day: seed_demo, then the monthly run
    bills every demo organization (each buys plans in one currency) for the
    month before, with a stored PDF: subscriptions bought months ago pay their
    monthly fees in full, yearly ones have year-long periods, and the demo's
    prices bill as `seed_demo` prints them."""
    time_machine.move_to(now, tick=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "invoices": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert (
        "price of api_calls on Pro (monthly): 40.00 EUR per 1,000 calls (package" in out.getvalue()
    )
    first_of_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    run = run_job("billing.generate_monthly_invoices", slot=first_of_month)

    assert run.status == RunStatus.SUCCEEDED, run.summary
    invoices = Invoice.objects.select_related("organization")
    assert sorted(i.organization.key for i in invoices) == ["org_acme", "org_globex", "org_initech"]
    assert {i.organization.key: i.currency for i in invoices}["org_initech"] == "USD"
    assert all(i.pdf and i.total_minor > 0 for i in invoices)
    month = (first_of_month - timedelta(days=1)).strftime("%B %Y")
    for invoice in invoices:  # a monthly subscription bought months ago: the full month
        assert invoice.lines.filter(kind="plan", description__endswith=f"(monthly), {month}")
    yearly = Subscription.objects.filter(plan__interval="year").first()
    assert yearly.current_period_end - yearly.current_period_start == timedelta(days=365)
    # Usage in the month before is priced as printed: a package of 1,000 calls.
    for line in InvoiceLine.objects.filter(kind="usage", description__startswith="API calls"):
        assert line.unit == "1,000 calls"
        assert line.unit_price_minor in (4000, 2500)
        assert line.amount_minor == line.quantity * line.unit_price_minor

"""Daily analytics: per-organization figures of a day, stored, cached, rerunnable."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.cache import cache

from billing.models import AggregationType, BillableMetric, DailyMetrics, UsageAggregate
from billing.selectors import daily_cache_key, daily_overview, daily_series, metrics_as_dict
from jobs.models import RunStatus
from jobs.registry import get_job
from jobs.runner import run_job
from payments.models import Payment, PaymentStatus
from subscriptions.models import OrganizationStatus, SubscriptionStatus
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

JOB = "billing.aggregate_daily_analytics"
DAY = date(2026, 11, 1)
START = datetime(2026, 11, 1, tzinfo=UTC)
SLOT = START + timedelta(days=1, hours=1)  # 2026-11-02 01:00, the daily slot


@pytest.fixture(autouse=True)
def clear_cache():
    cache.clear()
    yield
    cache.clear()


def sub(org, plan, *, created: datetime, **extra):
    end = created + timedelta(days=30)
    return SubscriptionFactory(
        organization=org,
        plan=plan,
        created_at=created,
        current_period_start=created,
        current_period_end=end,
        **extra,
    )


def payment(org, amount: int, *, at: datetime, status=PaymentStatus.SUCCEEDED, currency="EUR"):
    return Payment.objects.create(
        organization=org,
        amount_minor=amount,
        currency=currency,
        status=status,
        succeeded_at=at if status == PaymentStatus.SUCCEEDED else None,
        created_at=at,
    )


def aggregate(org, metric: str, hour: datetime, total: int):
    UsageAggregate.objects.create(
        organization=org, metric=metric, hour=hour, total=total, event_count=1
    )


@pytest.fixture
def world():
    BillableMetric.objects.create(code="api_calls", name="API", aggregation=AggregationType.SUM)
    BillableMetric.objects.create(code="storage_gb", name="GB", aggregation=AggregationType.MAX)
    monthly = PlanFactory(price_minor=2900, currency="EUR", interval="month")
    yearly = PlanFactory(price_minor=12_000, currency="EUR", interval="year")
    acme = OrganizationFactory(key="org_acme")
    before = START - timedelta(days=10)
    sub(acme, monthly, created=before)  # active all day
    sub(acme, yearly, created=before, status=SubscriptionStatus.TRIALING)  # 1,000 a month
    sub(acme, monthly, created=START + timedelta(hours=5))  # new, active
    sub(acme, monthly, created=before, canceled=True, canceled_at=START + timedelta(hours=3))
    sub(acme, monthly, created=before - timedelta(days=40), expired=True)  # ended long ago
    sub(acme, monthly, created=START + timedelta(days=1, hours=2))  # the next day
    # Expired in the day and later suspended: churned once, on the day it ended.
    sub(
        acme,
        monthly,
        created=before,
        status=SubscriptionStatus.SUSPENDED,
        expired_at=START + timedelta(hours=8),
        suspended_at=START + timedelta(days=8),
        auto_renew=False,
    )
    payment(acme, 1500, at=START + timedelta(hours=1))
    payment(acme, 500, at=START + timedelta(hours=23, minutes=59))
    payment(acme, 7000, at=START - timedelta(minutes=1))  # the day before
    payment(acme, 9000, at=START + timedelta(hours=2), status=PaymentStatus.FAILED)
    payment(acme, 4000, at=START + timedelta(hours=2), currency="USD")  # not its currency
    aggregate(acme, "api_calls", START + timedelta(hours=10), 5)
    aggregate(acme, "api_calls", START + timedelta(hours=11), 7)
    aggregate(acme, "api_calls", START + timedelta(days=1), 100)  # the next day
    aggregate(acme, "storage_gb", START + timedelta(hours=10), 3)
    aggregate(acme, "storage_gb", START + timedelta(hours=11), 9)
    quiet = OrganizationFactory(key="org_quiet")
    closed = OrganizationFactory(key="org_closed", status=OrganizationStatus.CLOSED)
    payment(closed, 100, at=START + timedelta(hours=1))
    return {"acme": acme, "quiet": quiet, "closed": closed}


def figures(org) -> dict:
    row = DailyMetrics.objects.get(organization=org, day=DAY)
    return {
        "currency": row.currency,
        "revenue_minor": row.revenue_minor,
        "new_subscriptions": row.new_subscriptions,
        "churned_subscriptions": row.churned_subscriptions,
        "active_subscriptions": row.active_subscriptions,
        "mrr_minor": row.mrr_minor,
        "usage": row.usage,
    }


ACME = {
    "currency": "EUR",
    "revenue_minor": 2000,
    "new_subscriptions": 1,
    "churned_subscriptions": 2,
    "active_subscriptions": 3,
    "mrr_minor": 2900 + 1000 + 2900,
    "usage": {"api_calls": 12, "storage_gb": 9},
}


def test_daily_analytics_is_scheduled_daily_at_one():
    spec = get_job(JOB)
    assert spec.schedule == "0 1 * * *"


def test_the_day_before_the_slot_is_computed_per_active_organization(world):
    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert figures(world["acme"]) == ACME
    assert figures(world["quiet"]) == {
        "currency": "",
        "revenue_minor": 0,
        "new_subscriptions": 0,
        "churned_subscriptions": 0,
        "active_subscriptions": 0,
        "mrr_minor": 0,
        "usage": {},
    }
    assert not DailyMetrics.objects.filter(organization=world["closed"]).exists()
    assert run.summary["first_day"] == "2026-11-01"
    assert run.summary["rows_written"] == 2
    assert run.summary["per_day"]["2026-11-01"]["revenue_minor"] == 2000


def test_each_row_is_cached_under_its_tenant_and_date(world):
    run_job(JOB, slot=SLOT)

    cached = cache.get("analytics:org_acme:overview:daily:2026-11-01")

    assert cached["mrr_minor"] == ACME["mrr_minor"]
    assert cached["usage"] == ACME["usage"]
    assert cached == metrics_as_dict(DailyMetrics.objects.get(organization=world["acme"], day=DAY))
    assert (
        daily_cache_key(tenant="org_acme", day=DAY)
        == "analytics:org_acme:overview:daily:2026-11-01"
    )
    cache.clear()
    assert (
        daily_overview(organization_id=world["acme"].pk, tenant="org_acme", day=DAY)[
            "revenue_minor"
        ]
        == 2000
    )


def test_a_rerun_gives_the_same_rows(world):
    run_job(JOB, slot=SLOT)
    first = figures(world["acme"])

    again = run_job(JOB, params={"day": "2026-11-01"}, slot=SLOT + timedelta(hours=5))

    assert again.status == RunStatus.SUCCEEDED, again.error
    assert figures(world["acme"]) == first
    assert DailyMetrics.objects.count() == 2


def test_a_payment_refunded_later_leaves_the_revenue_on_a_rerun(world):
    run_job(JOB, slot=SLOT)
    Payment.objects.filter(amount_minor=500).update(status=PaymentStatus.REFUNDED)

    run_job(JOB, params={"day": "2026-11-01"})

    assert figures(world["acme"])["revenue_minor"] == 1500


def test_dry_run_reports_and_writes_nothing(world):
    run = run_job(JOB, slot=SLOT, dry_run=True)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.summary["would_write"] == 2
    assert run.summary["per_day"]["2026-11-01"]["mrr_minor"] == ACME["mrr_minor"]
    assert not DailyMetrics.objects.exists()
    assert cache.get("analytics:org_acme:overview:daily:2026-11-01") is None


def test_a_tenant_run_computes_only_that_organization(world):
    run = run_job(JOB, tenant="org_quiet", slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert list(DailyMetrics.objects.values_list("organization__key", flat=True)) == ["org_quiet"]


def test_a_range_backfills_every_day(world):
    run = run_job(JOB, params={"from_day": "2026-10-30", "to_day": "2026-11-01"}, slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    days = sorted(set(DailyMetrics.objects.values_list("day", flat=True)))
    assert days == [date(2026, 10, 30), date(2026, 10, 31), DAY]
    assert figures(world["acme"]) == ACME
    oct31 = DailyMetrics.objects.get(organization=world["acme"], day=date(2026, 10, 31))
    assert oct31.revenue_minor == 7000
    assert oct31.active_subscriptions == 4  # the canceled and the expired one still ran


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"day": "2026-11-02"}, "not over"),
        ({"from_day": "2026-01-01", "to_day": "2026-11-01"}, "ANALYTICS_BACKFILL_MAX_DAYS"),
        ({"from_day": "2026-11-01"}, "go together"),
        ({"day": "2026-11-01", "to_day": "2026-11-01"}, "not both"),
        ({"from_day": "2026-11-01", "to_day": "2026-10-01"}, "before"),
    ],
)
def test_bad_days_are_refused_and_nothing_is_written(world, params, message):
    run = run_job(JOB, params=params, slot=SLOT)

    assert run.status == RunStatus.FAILED
    assert message in run.error
    assert not DailyMetrics.objects.exists()


def test_the_chart_series_covers_thirty_days_with_gaps(world):
    run_job(JOB, slot=SLOT)

    series = daily_series(organization_id=world["acme"].pk, last_day=DAY)

    assert len(series) == 30
    assert series[-1]["mrr_minor"] == ACME["mrr_minor"]
    assert series[0]["missing"] is True
    assert series[0]["day"] == (DAY - timedelta(days=29)).isoformat()

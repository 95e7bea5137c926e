"""The plan-fee policy: calendar months prorated by billable days, yearly fees
once in their start month, trials free, Stripe-billed fees never billed twice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from billing.models import Invoice
from billing.services.build import Period, billable_days, plan_fee
from jobs.runner import run_job
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    PlanMetricPriceFactory,
    SubscriptionFactory,
    UsageAggregateFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

FEB = Period.of_month(date(2027, 2, 1))  # 28 days
MAR = Period.of_month(date(2027, 3, 1))  # 31 days


def at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_TAX_RATE_BPS = 0


def subscription(plan, *, start, status="active", end=None, **extra):
    """A subscription created at `start` with a month- or year-long current period."""
    length = timedelta(days=365) if plan.interval == "year" else timedelta(days=30)
    return SubscriptionFactory(
        plan=plan,
        status=status,
        created_at=start,
        current_period_start=start,
        current_period_end=end or start + length,
        **extra,
    )


def test_a_month_billed_in_full_when_billable_all_month():
    sub = subscription(PlanFactory(name="Pro", price_minor=2900), start=at(date(2027, 1, 20)))
    line = plan_fee(sub, FEB)
    assert (line.amount_minor, line.quantity, line.unit) == (2900, 1, "month")
    assert line.description == "Pro plan (monthly), February 2027"


def test_a_subscription_started_mid_month_pays_its_days():
    """Started 15 Feb (a 28-day month): 14 of 28 days, half the fee."""
    sub = subscription(PlanFactory(name="Pro", price_minor=2900), start=at(date(2027, 2, 15), 9))
    assert billable_days(sub, FEB) == (date(2027, 2, 15), date(2027, 2, 28))
    line = plan_fee(sub, FEB)
    assert line.amount_minor == 1450 and line.unit_price_minor == 1450
    assert line.description == (
        "Pro plan (monthly), 15 Feb to 28 Feb 2027: 14 of 28 days (full month 29.00 EUR)"
    )


def test_a_subscription_ended_mid_month_pays_until_it_ended_rounded_half_up():
    """Canceled on 10 March at 00:00 (a 31-day month): 9 of 31 days of 10.00 = 2.903... -> 2.90."""
    plan = PlanFactory(price_minor=1000)
    sub = subscription(
        plan,
        start=at(date(2027, 1, 1)),
        status="canceled",
        canceled_at=at(date(2027, 3, 10)),
    )
    assert billable_days(sub, MAR) == (date(2027, 3, 1), date(2027, 3, 9))
    assert plan_fee(sub, MAR).amount_minor == 290
    expired = subscription(
        plan,
        start=at(date(2027, 1, 1)),
        status="expired",
        expired_at=at(date(2027, 3, 16), 12),
        auto_renew=False,
    )
    assert plan_fee(expired, MAR).amount_minor == 516  # 16 of 31 days: 516.12...
    assert plan_fee(sub, Period.of_month(date(2027, 4, 1))) is None  # ended before April


def test_a_yearly_fee_is_billed_once_in_the_month_its_period_starts():
    plan = PlanFactory(name="Enterprise", price_minor=99000, interval="year")
    sub = subscription(plan, start=at(date(2027, 2, 10)))
    line = plan_fee(sub, FEB)
    assert (line.amount_minor, line.unit) == (99000, "year")
    assert line.description == "Enterprise plan (yearly), 10 Feb 2027 to 09 Feb 2028"
    assert plan_fee(sub, MAR) is None  # in force, but its fee was billed in February


def test_trials_are_not_billed():
    sub = subscription(PlanFactory(), start=at(date(2027, 1, 1)), status="trialing")
    assert billable_days(sub, FEB) is None and plan_fee(sub, FEB) is None


def test_the_run_prorates_and_bills_only_what_the_policy_says():
    plan = PlanFactory(name="Pro", price_minor=2800)  # 100 a day in February
    yearly = PlanFactory(name="Enterprise", price_minor=99000, interval="year")
    half = subscription(plan, start=at(date(2027, 2, 15)))
    subscription(yearly, start=at(date(2027, 2, 1)), organization=half.organization)
    trial = subscription(plan, start=at(date(2027, 1, 5)), status="trialing")
    old_yearly = subscription(yearly, start=at(date(2026, 6, 1)))

    run = run_job("billing.generate_monthly_invoices", slot=at(date(2027, 3, 1)))

    invoice = Invoice.objects.get()
    assert invoice.organization_id == half.organization_id
    assert sorted(invoice.lines.values_list("amount_minor", flat=True)) == [1400, 99000]
    assert not Invoice.objects.filter(organization=trial.organization).exists()
    assert not Invoice.objects.filter(organization=old_yearly.organization).exists()
    assert run.summary["nothing_to_bill"] == 2


def test_a_tenant_whose_stripe_bills_plan_fees_gets_usage_lines_only():
    plan = PlanFactory(price_minor=2900)
    PlanMetricPriceFactory(
        plan=plan, metric=BillableMetricFactory(code="api_calls"), unit_price_minor=2
    )
    org = OrganizationFactory(stripe_bills_plan_fees=True)
    subscription(plan, start=at(date(2027, 1, 1)), organization=org, stripe_subscription_id="sub_1")
    UsageAggregateFactory(organization=org, metric="api_calls", hour=at(date(2027, 2, 3)), total=50)
    # The same plan without a Stripe subscription is billed here as usual.
    local = OrganizationFactory(stripe_bills_plan_fees=True)
    subscription(plan, start=at(date(2027, 1, 1)), organization=local)
    only_fees = OrganizationFactory(stripe_bills_plan_fees=True)
    subscription(
        plan, start=at(date(2027, 1, 1)), organization=only_fees, stripe_subscription_id="s2"
    )

    run = run_job("billing.generate_monthly_invoices", slot=at(date(2027, 3, 1)))

    billed = Invoice.objects.get(organization=org)
    assert list(billed.lines.values_list("kind", "amount_minor")) == [("usage", 100)]
    assert list(
        Invoice.objects.get(organization=local).lines.values_list("kind", "amount_minor")
    ) == [("plan", 2900)]
    assert not Invoice.objects.filter(organization=only_fees).exists()  # nothing left to bill
    assert run.summary["nothing_to_bill"] == 1

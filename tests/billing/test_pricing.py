"""Charge models: per unit, package, graduated tiers, and what an invoice says about them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from billing.models import ChargeModel, Invoice, PlanMetricPrice, PriceTier
from billing.services.pricing import Price, Tier, charges, price_of, set_metric_price
from jobs.runner import run_job
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageAggregateFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 2, 1, tzinfo=UTC)
JAN = datetime(2026, 1, 1, tzinfo=UTC)
TIERS = [Tier(0, 1_000, 0), Tier(1_001, 10_000, 2), Tier(10_001, None, 1)]


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_TAX_RATE_BPS = 0


def price(model: str, **kw) -> Price:
    return Price(charge_model=model, currency="EUR", metric_name="API calls", unit="calls", **kw)


def as_rows(lines):
    return [(c.quantity, c.unit, c.unit_price_minor, c.amount_minor) for c in lines]


def test_per_unit_bills_every_unit_at_the_unit_price():
    lines = charges(price(ChargeModel.PER_UNIT, unit_price_minor=2), upto=1_793)
    assert as_rows(lines) == [(1_793, "calls", 2, 3_586)]
    assert lines[0].description == "API calls \u2014 per unit"


def test_a_package_price_rounds_a_partial_block_up():
    """0.25 EUR per 1,000 API calls bills 1,793 calls as 2 blocks."""
    package = price(ChargeModel.PACKAGE, unit_price_minor=25, package_size=1_000)
    lines = charges(package, upto=1_793)
    assert as_rows(lines) == [(2, "1,000 calls", 25, 50)]
    assert "package of 1,000 calls: 1,793 calls" in lines[0].description
    assert "partial package is billed as a whole one" in lines[0].description
    assert as_rows(charges(package, upto=2_000)) == [(2, "1,000 calls", 25, 50)]
    assert as_rows(charges(package, upto=2_001)) == [(3, "1,000 calls", 25, 75)]


def test_graduated_tiers_price_each_unit_by_the_tier_it_falls_in():
    """0-1,000 free, 1,001-10,000 at 0.02, above at 0.01."""
    graduated = price(ChargeModel.GRADUATED, tiers=tuple(TIERS))
    lines = charges(graduated, upto=12_345)
    assert as_rows(lines) == [
        (1_000, "calls", 0, 0),
        (9_000, "calls", 2, 18_000),
        (2_345, "calls", 1, 2_345),
    ]
    assert lines[1].description == "API calls \u2014 graduated, tier 2 (1,001\u201310,000 calls)"
    assert as_rows(charges(graduated, upto=900)) == [(900, "calls", 0, 0)]


def test_late_units_cost_what_they_would_have_cost_on_the_first_invoice():
    """charges(after=B, upto=T): the units above B, at their tier or in their block."""
    graduated = price(ChargeModel.GRADUATED, tiers=tuple(TIERS))
    assert as_rows(charges(graduated, after=950, upto=1_100)) == [
        (50, "calls", 0, 0),
        (100, "calls", 2, 200),
    ]
    package = price(ChargeModel.PACKAGE, unit_price_minor=25, package_size=1_000)
    assert charges(package, after=1_793, upto=1_999) == []  # still in the second block
    assert as_rows(charges(package, after=1_793, upto=2_100)) == [(1, "1,000 calls", 25, 25)]
    assert charges(price(ChargeModel.PER_UNIT, unit_price_minor=2), after=5, upto=5) == []


def test_prices_read_in_major_units():
    assert price(ChargeModel.PACKAGE, unit_price_minor=2_500, package_size=1_000).describe() == (
        "25.00 EUR per 1,000 calls (package; a partial package is billed as a whole one)"
    )
    assert (
        price(ChargeModel.PER_UNIT, unit_price_minor=10).describe() == "0.10 EUR per unit (calls)"
    )
    assert price(ChargeModel.GRADUATED, tiers=tuple(TIERS)).describe() == (
        "graduated per calls: 0\u20131,000: free; 1,001\u201310,000: 0.02 EUR each; "
        "10,001 and above: 0.01 EUR each"
    )


def test_set_metric_price_writes_the_price_and_its_tiers():
    plan, metric = PlanFactory(), BillableMetricFactory(code="api_calls", unit="calls")
    stored = set_metric_price(
        plan=plan, metric=metric, charge_model=ChargeModel.GRADUATED, tiers=TIERS[::-1]
    )
    assert [(t.first_unit, t.last_unit) for t in stored.tiers.all()] == [
        (0, 1_000),
        (1_001, 10_000),
        (10_001, None),
    ]
    again = set_metric_price(
        plan=plan,
        metric=metric,
        charge_model=ChargeModel.PACKAGE,
        unit_price_minor=25,
        package_size=1_000,
    )
    assert again.pk == stored.pk and not again.tiers.exists()
    assert price_of(again).describe().startswith("0.25 EUR per 1,000 calls")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"charge_model": "volume"}, "unknown charge model 'volume'"),
        ({"charge_model": "package", "package_size": 0}, "package size must be at least 1"),
        ({"charge_model": "per_unit", "unit_price_minor": -1}, "cannot be negative"),
        ({"charge_model": "graduated", "tiers": []}, "at least one tier"),
        (
            {"charge_model": "graduated", "tiers": [Tier(0, 100, 0), Tier(50, None, 1)]},
            "overlap",
        ),
        (
            {"charge_model": "graduated", "tiers": [Tier(0, 100, 0), Tier(200, None, 1)]},
            "leave a gap",
        ),
        (
            {"charge_model": "graduated", "tiers": [Tier(0, 100, -3), Tier(101, None, 1)]},
            "negative",
        ),
        (
            {"charge_model": "graduated", "tiers": [Tier(-5, 100, 0), Tier(101, None, 1)]},
            "negative",
        ),
        ({"charge_model": "graduated", "tiers": [Tier(1, None, 1)]}, "must start at 0"),
        ({"charge_model": "graduated", "tiers": [Tier(0, 100, 1)]}, "must be open-ended"),
        ({"charge_model": "per_unit", "tiers": [Tier(0, None, 1)]}, "only graduated prices"),
    ],
)
def test_bad_prices_are_refused_and_nothing_is_written(kwargs, message):
    plan, metric = PlanFactory(), BillableMetricFactory(code="api_calls")
    with pytest.raises(ValueError, match=message):
        set_metric_price(plan=plan, metric=metric, **kwargs)
    assert not PlanMetricPrice.objects.exists() and not PriceTier.objects.exists()


def _january_customer(plan, total):
    org = OrganizationFactory()
    SubscriptionFactory(
        organization=org,
        plan=plan,
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    UsageAggregateFactory(
        organization=org, metric="api_calls", hour=JAN + timedelta(days=4), total=total
    )
    return org


@pytest.mark.parametrize(
    ("model", "kwargs", "lines"),
    [
        (
            ChargeModel.PACKAGE,
            {"unit_price_minor": 25, "package_size": 1_000},
            [("API calls \u2014 package of 1,000 calls: 1,793 calls", 2, "1,000 calls", 25, 50)],
        ),
        (
            ChargeModel.GRADUATED,
            {"tiers": TIERS},
            [
                ("API calls \u2014 graduated, tier 1 (0\u20131,000 calls)", 1_000, "calls", 0, 0),
                (
                    "API calls \u2014 graduated, tier 2 (1,001\u201310,000 calls)",
                    793,
                    "calls",
                    2,
                    1_586,
                ),
            ],
        ),
        (
            ChargeModel.PER_UNIT,
            {"unit_price_minor": 3},
            [("API calls \u2014 per unit", 1_793, "calls", 3, 5_379)],
        ),
    ],
)
def test_the_invoice_line_says_the_model_and_bills_as_printed(model, kwargs, lines):
    plan = PlanFactory(price_minor=900)
    metric = BillableMetricFactory(code="api_calls", name="API calls", unit="calls")
    set_metric_price(plan=plan, metric=metric, charge_model=model, **kwargs)
    _january_customer(plan, 1_793)

    run_job("billing.generate_monthly_invoices", slot=SLOT)

    invoice = Invoice.objects.get()
    usage = [
        (line.description, line.quantity, line.unit, line.unit_price_minor, line.amount_minor)
        for line in invoice.lines.filter(kind="usage")
    ]
    assert [row[1:] for row in usage] == [row[1:] for row in lines]
    assert all(got[0].startswith(want[0]) for got, want in zip(usage, lines, strict=True))
    assert invoice.subtotal_minor == 900 + sum(row[4] for row in lines)


def test_the_price_admin_saves_tiers_through_the_service_and_refuses_bad_ones(admin_client):
    plan, metric = PlanFactory(), BillableMetricFactory(code="api_calls")
    url = reverse("admin:billing_planmetricprice_add")

    def post(model, tiers, package_size=1):
        data = {
            "plan": plan.pk,
            "metric": metric.pk,
            "charge_model": model,
            "unit_price_minor": 0,
            "package_size": package_size,
            "tiers-TOTAL_FORMS": len(tiers),
            "tiers-INITIAL_FORMS": 0,
            "tiers-MIN_NUM_FORMS": 0,
            "tiers-MAX_NUM_FORMS": 1000,
        }
        for i, (first, last, unit_price) in enumerate(tiers):
            data |= {
                f"tiers-{i}-first_unit": first,
                f"tiers-{i}-last_unit": "" if last is None else last,
                f"tiers-{i}-unit_price_minor": unit_price,
            }
        return admin_client.post(url, data)

    overlapping = post("graduated", [(0, 100, 0), (90, None, 1)])
    assert overlapping.status_code == 200 and "overlap" in overlapping.content.decode()
    unknown = post("volume", [])
    assert unknown.status_code == 200 and "Select a valid choice" in unknown.content.decode()
    empty_package = post("package", [], package_size=0)
    assert empty_package.status_code == 200
    assert "at least 1" in empty_package.content.decode()
    assert not PlanMetricPrice.objects.exists() and not PriceTier.objects.exists()

    saved = post("graduated", [(0, 100, 0), (101, None, 1)])
    assert saved.status_code == 302, saved.content.decode()[:2000]
    stored = PlanMetricPrice.objects.get()
    assert list(stored.tiers.values_list("first_unit", "last_unit", "unit_price_minor")) == [
        (0, 100, 0),
        (101, None, 1),
    ]
    listing = admin_client.get(reverse("admin:billing_planmetricprice_changelist")).content.decode()
    assert "graduated per unit: 0\u2013100: free; 101 and above: 0.01 EUR each" in listing

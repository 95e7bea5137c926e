"""Demo usage for `make run` (called by `manage.py seed_demo`).

Three metrics (one sum, one max, one unique count) priced on every demo plan
with the three charge models (API calls by the package of 1,000, storage per
GB, active users in graduated tiers, the first 5 free), a few events an hour
over the last three days for each demo organization, those hours aggregated,
and the last month's daily analytics, so the usage admin, the analytics chart
and the invoices have something to show. Idempotent: metrics and prices are
found by natural keys and events carry deterministic idempotency keys, so a
second run adds only the hours since the first.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from billing.models import AggregationType, BillableMetric, ChargeModel, PlanMetricPrice
from billing.services.analytics import aggregate_day
from billing.services.pricing import Tier, price_of, set_metric_price
from billing.services.usage import UsageEventIn, aggregate_hour, floor_hour, record_usage_events
from subscriptions.models import Organization, Plan

# The price of each metric on a monthly and on a yearly plan, in minor units:
# what the invoices bill is what `seed_demo` prints (describe()).
METRICS = [
    # code, name, aggregation, unit, {interval: price}
    (
        "api_calls",
        "API calls",
        AggregationType.SUM,
        "calls",
        {
            "month": {
                "charge_model": ChargeModel.PACKAGE,
                "unit_price_minor": 4000,
                "package_size": 1000,
            },
            "year": {
                "charge_model": ChargeModel.PACKAGE,
                "unit_price_minor": 2500,
                "package_size": 1000,
            },
        },
    ),
    (
        "storage_gb",
        "Peak storage",
        AggregationType.MAX,
        "GB",
        {
            "month": {"charge_model": ChargeModel.PER_UNIT, "unit_price_minor": 10},
            "year": {"charge_model": ChargeModel.PER_UNIT, "unit_price_minor": 6},
        },
    ),
    (
        "active_users",
        "Active users",
        AggregationType.UNIQUE_COUNT,
        "users",
        {
            "month": {
                "charge_model": ChargeModel.GRADUATED,
                "tiers": [Tier(0, 5, 0), Tier(6, None, 100)],
            },
            "year": {
                "charge_model": ChargeModel.GRADUATED,
                "tiers": [Tier(0, 5, 0), Tier(6, None, 60)],
            },
        },
    ),
]
DEMO_HOURS = 72
ANALYTICS_DAYS = 30


def seed_usage_demo(*, organization_keys: list[str]) -> list[str]:
    """Create the demo usage of these organizations; returns what it created, one line each."""
    created: list[str] = []
    for code, name, aggregation, unit, by_interval in METRICS:
        metric, new = BillableMetric.objects.get_or_create(
            code=code, defaults={"name": name, "aggregation": aggregation, "unit": unit}
        )
        if new:
            created.append(f"billable metric {code} ({aggregation})")
        for plan in Plan.objects.all():
            if PlanMetricPrice.objects.filter(plan=plan, metric=metric).exists():
                continue
            price = set_metric_price(plan=plan, metric=metric, **by_interval[plan.interval])
            created.append(
                f"price of {code} on {plan.name} ({plan.interval}ly): {price_of(price).describe()}"
            )
    now = timezone.now()
    last_hour = floor_hour(now) - timedelta(hours=1)
    hours = [last_hour - timedelta(hours=h) for h in range(DEMO_HOURS - 1, -1, -1)]
    events: list[UsageEventIn] = []
    organizations = list(Organization.objects.filter(key__in=organization_keys).order_by("pk"))
    for n, org in enumerate(organizations):
        for hour in hours:
            stamp = f"{hour:%Y%m%dT%H}"
            busy = 1 + (hour.hour * 7 + n * 3) % 5  # a daily rhythm per organization
            for i in range(busy):
                at = hour + timedelta(minutes=7 + i * 11)
                events.append(
                    UsageEventIn(
                        organization_id=org.pk,
                        metric="api_calls",
                        occurred_at=at,
                        quantity=1 + (hour.hour + i + n) % 9,
                        idempotency_key=f"demo:{stamp}:api:{i}",
                    )
                )
                events.append(
                    UsageEventIn(
                        organization_id=org.pk,
                        metric="active_users",
                        occurred_at=at,
                        value_key=f"user-{(hour.hour + i * 5) % (6 + n * 4)}",
                        idempotency_key=f"demo:{stamp}:user:{i}",
                    )
                )
            events.append(
                UsageEventIn(
                    organization_id=org.pk,
                    metric="storage_gb",
                    occurred_at=hour + timedelta(minutes=30),
                    quantity=20 + n * 15 + (hour - hours[0]).days * 2,
                    idempotency_key=f"demo:{stamp}:storage",
                )
            )
    new_events = record_usage_events(events=events)
    if new_events:
        created.append(f"{new_events} usage events over the last {DEMO_HOURS} hours")
        written = sum(aggregate_hour(hour=hour).written for hour in hours)
        created.append(f"{written} hourly usage aggregates")
        today = now.date()
        for days_back in range(ANALYTICS_DAYS, 0, -1):
            aggregate_day(day=today - timedelta(days=days_back))
        created.append(f"daily analytics of the last {ANALYTICS_DAYS} days")
    return created

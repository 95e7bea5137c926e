"""Demo usage for `make run` (called by `manage.py seed_demo`).

Three metrics (one sum, one max, one unique count) priced on every demo plan,
a few events an hour over the last three days for each demo organization,
those hours aggregated, and the last week's daily analytics, so the usage
admin and the analytics chart have something to show. Idempotent: metrics
and prices are found by natural keys and events carry deterministic
idempotency keys, so a second run adds only the hours since the first.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from billing.models import AggregationType, BillableMetric, PlanMetricPrice
from billing.services.analytics import aggregate_day
from billing.services.usage import UsageEventIn, aggregate_hour, floor_hour, record_usage_events
from subscriptions.models import Organization, Plan

METRICS = [
    # code, name, aggregation, unit, unit price per plan interval (month, year)
    ("api_calls", "API calls", AggregationType.SUM, "1,000 calls", (40, 25)),
    ("storage_gb", "Peak storage", AggregationType.MAX, "GB", (10, 6)),
    ("active_users", "Active users", AggregationType.UNIQUE_COUNT, "user", (100, 60)),
]
DEMO_HOURS = 72
ANALYTICS_DAYS = 30


def seed_usage_demo(*, organization_keys: list[str]) -> list[str]:
    """Create the demo usage of these organizations; returns what it created, one line each."""
    created: list[str] = []
    for code, name, aggregation, unit, (monthly, yearly) in METRICS:
        metric, new = BillableMetric.objects.get_or_create(
            code=code, defaults={"name": name, "aggregation": aggregation, "unit": unit}
        )
        if new:
            created.append(f"billable metric {code} ({aggregation})")
        for plan in Plan.objects.all():
            price = yearly if plan.interval == "year" else monthly
            _, new = PlanMetricPrice.objects.get_or_create(
                plan=plan, metric=metric, defaults={"unit_price_minor": price}
            )
            if new:
                created.append(
                    f"price of {code} on {plan.name}: {price} {plan.currency} per {unit}"
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

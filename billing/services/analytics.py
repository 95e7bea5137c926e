"""Daily analytics: one DailyMetrics row per active organization and day, set-based.

A day (UTC, [00:00, 24:00)) is computed by one `INSERT ... SELECT ... ON
CONFLICT DO UPDATE` over every active organization, from history kept in
timestamps, so a rerun or a backfill of an old day gives the same row:

* revenue: succeeded payments whose `succeeded_at` is in the day;
* new: subscriptions created in the day;
* churned: subscriptions whose end (the first of `canceled_at`, `expired_at`)
  is in the day;
* active: subscriptions created before the day's end and not ended by then
  (trialing, active or past due at the day's end);
* MRR: the active ones' plan prices, a yearly plan counting price / 12
  (rounded half up, per subscription);
* usage: per metric, from the hourly aggregates as the invoice adds them
  (sum/count: summed; max: the day's max); unique_count: the largest hourly
  distinct count (a lower bound: exact distinct counts need the raw events).

Money is in the organization's currency: that of its active subscriptions'
plans (alphabetically first if several), else of its payments that day.
Amounts in other currencies are left out (an organization bills in one currency).
Each row is cached for ANALYTICS_CACHE_SECONDS under
`analytics:<tenant>:overview:daily:<date>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from billing.models import AggregationType, DailyMetrics, UsageAggregate
from billing.selectors import OVERVIEW_FIELDS, daily_cache_key, metric_aggregations
from payments.models import Payment, PaymentStatus
from subscriptions.models import Organization, OrganizationStatus, Plan, Subscription

CACHE_CHUNK = 1_000


@dataclass
class DayResult:
    day: date
    organizations: int = 0
    cached: int = 0
    totals: dict[str, int] = field(default_factory=dict)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _select_sql(*, day: date, organization_id: int | None) -> tuple[str, dict[str, Any]]:
    """The SELECT of one day's rows, and its parameters."""
    ops = connection.ops
    start, end = day_bounds(day)
    params: dict[str, Any] = {
        "ds": ops.adapt_datetimefield_value(start),
        "de": ops.adapt_datetimefield_value(end),
        "day": ops.adapt_datefield_value(day),
        "now": ops.adapt_datetimefield_value(timezone.now()),
        "succeeded": PaymentStatus.SUCCEEDED.value,
        "active": OrganizationStatus.ACTIVE.value,
    }
    org_filter = {"s": "", "p": "", "a": "", "o": ""}
    if organization_id is not None:
        params["org"] = organization_id
        org_filter = {k: f" AND {k}.organization_id = %(org)s" for k in "spa"}
        org_filter["o"] = " AND o.id = %(org)s"
    by_max = [
        code
        for code, kind in sorted(metric_aggregations().items())
        if kind in (AggregationType.MAX, AggregationType.UNIQUE_COUNT)
    ]
    for i, code in enumerate(by_max):
        params[f"mx{i}"] = code
    day_total = "sum(a.total)"
    if by_max:
        codes = ", ".join(f"%(mx{i})s" for i in range(len(by_max)))
        day_total = f"CASE WHEN a.metric IN ({codes}) THEN max(a.total) ELSE sum(a.total) END"
    if connection.vendor == "postgresql":
        usage_json, empty_json = "jsonb_object_agg(metric, total)", "'{}'::jsonb"
    else:
        usage_json, empty_json = "json_group_object(metric, total)", "'{}'"
    churn_at = (
        "CASE WHEN s.canceled_at IS NULL THEN s.expired_at"
        " WHEN s.expired_at IS NULL OR s.canceled_at < s.expired_at THEN s.canceled_at"
        " ELSE s.expired_at END"
    )
    running = f"(s.created_at < %(de)s AND ({churn_at} IS NULL OR {churn_at} >= %(de)s))"
    monthly_price = (
        "CASE WHEN p.interval = 'year' THEN (p.price_minor + 6) / 12 ELSE p.price_minor END"
    )
    currency = "COALESCE(subs.currency, paycur.currency, '')"
    sql = f"""
        WITH subs_c AS (
            SELECT s.organization_id AS org, p.currency,
                   sum(CASE WHEN s.created_at >= %(ds)s THEN 1 ELSE 0 END) AS new_subs,
                   sum(CASE WHEN {churn_at} >= %(ds)s AND {churn_at} < %(de)s
                       THEN 1 ELSE 0 END) AS churned,
                   sum(CASE WHEN {running} THEN 1 ELSE 0 END) AS active,
                   sum(CASE WHEN {running} THEN {monthly_price} ELSE 0 END) AS mrr
            FROM {Subscription._meta.db_table} s JOIN {Plan._meta.db_table} p ON p.id = s.plan_id
            WHERE s.created_at < %(de)s{org_filter["s"]}
            GROUP BY s.organization_id, p.currency
        ),
        subs AS (
            SELECT org, sum(new_subs) AS new_subs, sum(churned) AS churned,
                   sum(active) AS active, min(CASE WHEN active > 0 THEN currency END) AS currency
            FROM subs_c GROUP BY org
        ),
        pay AS (
            SELECT p.organization_id AS org, p.currency, sum(p.amount_minor) AS revenue
            FROM {Payment._meta.db_table} p
            WHERE p.status = %(succeeded)s AND p.succeeded_at >= %(ds)s
              AND p.succeeded_at < %(de)s{org_filter["p"]}
            GROUP BY p.organization_id, p.currency
        ),
        paycur AS (
            SELECT org, min(currency) AS currency FROM pay GROUP BY org
        ),
        usage_m AS (
            SELECT a.organization_id AS org, a.metric, {day_total} AS total
            FROM {UsageAggregate._meta.db_table} a
            WHERE a.hour >= %(ds)s AND a.hour < %(de)s{org_filter["a"]}
            GROUP BY a.organization_id, a.metric
        ),
        usage AS (SELECT org, {usage_json} AS usage FROM usage_m GROUP BY org)
        SELECT o.id AS organization_id, %(day)s AS day, {currency} AS currency,
               COALESCE(pay.revenue, 0) AS revenue_minor,
               COALESCE(subs.new_subs, 0) AS new_subscriptions,
               COALESCE(subs.churned, 0) AS churned_subscriptions,
               COALESCE(subs.active, 0) AS active_subscriptions,
               COALESCE(sc.mrr, 0) AS mrr_minor,
               COALESCE(usage.usage, {empty_json}) AS usage,
               %(now)s AS computed_at
        FROM {Organization._meta.db_table} o
        LEFT JOIN subs ON subs.org = o.id
        LEFT JOIN paycur ON paycur.org = o.id
        LEFT JOIN subs_c sc ON sc.org = o.id AND sc.currency = {currency}
        LEFT JOIN pay ON pay.org = o.id AND pay.currency = {currency}
        LEFT JOIN usage ON usage.org = o.id
        WHERE o.status = %(active)s{org_filter["o"]}
    """
    return sql, params


COLUMNS = (
    "organization_id, day, currency, revenue_minor, new_subscriptions, churned_subscriptions, "
    "active_subscriptions, mrr_minor, usage, computed_at"
)


def aggregate_day(
    *, day: date, organization_id: int | None = None, dry_run: bool = False
) -> DayResult:
    """Rebuild one day's DailyMetrics rows (and their cache entries).

    Dry run: the rows it would write, summed; nothing written or cached.
    """
    select, params = _select_sql(day=day, organization_id=organization_id)
    sums = (
        "SELECT count(*), COALESCE(sum(revenue_minor), 0), COALESCE(sum(new_subscriptions), 0),"
        " COALESCE(sum(churned_subscriptions), 0), COALESCE(sum(active_subscriptions), 0),"
        " COALESCE(sum(mrr_minor), 0)"
    )
    table = DailyMetrics._meta.db_table
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute(f"{sums} FROM ({select}) x", params)
        else:
            with transaction.atomic():
                cursor.execute(
                    f"""
                    INSERT INTO {table} ({COLUMNS})
                    SELECT {COLUMNS} FROM ({select}) x WHERE true
                    ON CONFLICT (organization_id, day) DO UPDATE SET
                        currency = excluded.currency, revenue_minor = excluded.revenue_minor,
                        new_subscriptions = excluded.new_subscriptions,
                        churned_subscriptions = excluded.churned_subscriptions,
                        active_subscriptions = excluded.active_subscriptions,
                        mrr_minor = excluded.mrr_minor, usage = excluded.usage,
                        computed_at = excluded.computed_at
                    """,
                    params,
                )
            # What was written, summed from the table (one day's rows, by its index).
            where = "d.day = %(day)s"
            if organization_id is not None:
                where += " AND d.organization_id = %(org)s"
            cursor.execute(f"{sums} FROM {table} d WHERE {where}", params)
        row = [int(v) for v in cursor.fetchone()]
    result = DayResult(day=day, organizations=row[0])
    result.totals = dict(
        zip(
            (
                "revenue_minor",
                "new_subscriptions",
                "churned_subscriptions",
                "active_subscriptions",
                "mrr_minor",
            ),
            row[1:],
            strict=True,
        )
    )
    if not dry_run:
        result.cached = cache_day(day=day, organization_id=organization_id)
    return result


def cache_day(*, day: date, organization_id: int | None = None) -> int:
    """Put a day's rows in the cache, each under its tenant's key (as `metrics_as_dict`)."""
    rows = DailyMetrics.objects.filter(day=day)
    if organization_id is not None:
        rows = rows.filter(organization_id=organization_id)
    fields = OVERVIEW_FIELDS
    batch: dict[str, Any] = {}
    cached = 0
    for key, *values in rows.values_list("organization__key", *fields).iterator(
        chunk_size=CACHE_CHUNK
    ):
        batch[daily_cache_key(tenant=key, day=day)] = {
            "day": day.isoformat(),
            **dict(zip(fields, values, strict=True)),
        }
        if len(batch) >= CACHE_CHUNK:
            cache.set_many(batch, timeout=settings.ANALYTICS_CACHE_SECONDS)
            cached += len(batch)
            batch = {}
    if batch:
        cache.set_many(batch, timeout=settings.ANALYTICS_CACHE_SECONDS)
        cached += len(batch)
    return cached

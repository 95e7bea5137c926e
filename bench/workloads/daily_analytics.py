"""billing.aggregate_daily_analytics for 10,000 organizations.

Seeds 10,000 organizations with BENCH_ANALYTICS_SUBSCRIPTIONS subscriptions
(monthly and yearly plans, created over the past year, some canceled or
expired, a few of them on the day), BENCH_ANALYTICS_PAYMENTS payments around
the day (half of them succeeded on it) and the day's hourly usage aggregates
(4 metrics x 24 hours per organization, 960,000 rows). Then times, alternating
BENCH_ROUNDS times on an emptied DailyMetrics table (medians compared):
* project: the job through jobs.runner.run_job for the day: one INSERT ...
  SELECT ... ON CONFLICT DO UPDATE, the totals read back, every row cached
  (Django's cache: Redis when REDIS_URL is set, else local memory);
* raw_sql: the same rows by one hand-written PostgreSQL INSERT ... SELECT
  (FILTER clauses, LEAST, jsonb_object_agg), nothing else; the bench checks
  both give identical rows.
"""

from __future__ import annotations

import os
import statistics
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

from bench.common import (
    Result,
    log,
    seed_organizations,
    seed_usage_metrics,
    settle,
    table_names,
    timed,
)

ORGANIZATIONS = int(os.environ.get("BENCH_ORGANIZATIONS", 10_000))
SUBSCRIPTIONS = int(os.environ.get("BENCH_ANALYTICS_SUBSCRIPTIONS", 500_000))
PAYMENTS = int(os.environ.get("BENCH_ANALYTICS_PAYMENTS", 200_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
DAY = date(2030, 1, 1)
START = datetime(2030, 1, 1, tzinfo=UTC)
SLOT = START + timedelta(days=1, hours=1)
JOB = "billing.aggregate_daily_analytics"


def seed() -> None:
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['daily']}, {t['agg']}, {t['payment']}, {t['sub']}, {t['org']}, "
            f"{t['plan']}, {t['metric']} RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = %s", [JOB])
        seed_usage_metrics(c)
        c.execute(
            f"""INSERT INTO {t["plan"]} (name, price_minor, currency, interval) VALUES
            ('Starter', 900, 'EUR', 'month'), ('Pro', 2900, 'EUR', 'month'),
            ('Pro yearly', 29000, 'EUR', 'year'), ('Team', 9900, 'EUR', 'month')"""
        )
        seed_organizations(c, count=ORGANIZATIONS, created_at=START - timedelta(days=400))
        # created over the past year (1 in 200 on the day); 1 in 10 canceled and
        # 1 in 10 expired at some time around the day (some on it).
        c.execute(
            f"""INSERT INTO {t["sub"]} (organization_id, plan_id, status, current_period_start,
                current_period_end, auto_renew, canceled_at, expired_at, suspended_at,
                created_at, updated_at, cancel_at_period_end, stripe_subscription_id,
                reconciliation_status, reconciliation_error)
            SELECT org, 1 + g %% 4, status,
                   %(start)s - interval '10 days', %(start)s + interval '20 days', true,
                   CASE WHEN status = 'canceled' THEN ended END,
                   CASE WHEN status = 'expired' THEN ended END, NULL, created, created,
                   false, '', 'PENDING', ''
            FROM (SELECT g, 1 + g %% %(orgs)s AS org,
                         CASE WHEN k %% 10 = 3 THEN 'canceled' WHEN k %% 10 = 7 THEN 'expired'
                              ELSE 'active' END AS status,
                         CASE WHEN k %% 200 = 0 THEN %(start)s + (g %% 86400) * interval '1 s'
                              ELSE %(start)s - (1 + k %% 365) * interval '1 day' END AS created,
                         %(start)s + ((k %% 41) - 20) * interval '1 hour' * 12 AS ended
                  FROM (SELECT g, g / %(orgs)s + g AS k FROM generate_series(1, %(n)s) g) x) s""",
            {"start": START, "orgs": ORGANIZATIONS, "n": SUBSCRIPTIONS},
        )
        c.execute(
            f"""INSERT INTO {t["payment"]} (organization_id, amount_minor, currency,
                provider_reference, status, attempts, failure_reason, succeeded_at,
                created_at, updated_at)
            SELECT 1 + g %% %(orgs)s, 100 + g %% 5000, 'EUR', '',
                   CASE WHEN (g + g / %(orgs)s) %% 5 = 0 THEN 'failed' ELSE 'succeeded' END, 1, '',
                   CASE WHEN (g + g / %(orgs)s) %% 5 <> 0 THEN at END, at, at
            FROM (SELECT g, %(start)s - interval '1 day' + (g %% 259200) * interval '1 s' AS at
                  FROM generate_series(1, %(n)s) g) s""",
            {"start": START, "orgs": ORGANIZATIONS, "n": PAYMENTS},
        )
        c.execute(
            f"""INSERT INTO {t["agg"]} (organization_id, metric, hour, total, event_count,
                updated_at)
            SELECT o, m, %(start)s + h * interval '1 hour', 1 + (o * h) %% 97, 1 + o %% 50,
                   %(start)s + interval '1 day'
            FROM generate_series(1, %(orgs)s) o,
                 unnest(ARRAY['api_calls', 'requests', 'storage_gb', 'active_users']) m,
                 generate_series(0, 23) h""",
            {"start": START, "orgs": ORGANIZATIONS},
        )
    settle(t["sub"], t["org"], t["plan"], t["payment"], t["agg"], t["metric"], t["daily"])


def empty_daily() -> None:
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {table_names()['daily']} RESTART IDENTITY")
    settle(table_names()["daily"])


def raw_sql() -> int:
    t = table_names()
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            f"""INSERT INTO {t["daily"]} (organization_id, day, currency, revenue_minor,
                new_subscriptions, churned_subscriptions, active_subscriptions, mrr_minor,
                usage, computed_at)
            WITH subs AS (
                SELECT s.organization_id AS org, p.currency,
                       count(*) FILTER (WHERE s.created_at >= %(ds)s) AS new_subs,
                       count(*) FILTER (WHERE LEAST(s.canceled_at, s.expired_at) >= %(ds)s
                                        AND LEAST(s.canceled_at, s.expired_at) < %(de)s)
                           AS churned,
                       count(*) FILTER (WHERE LEAST(s.canceled_at, s.expired_at) IS NULL
                                        OR LEAST(s.canceled_at, s.expired_at) >= %(de)s)
                           AS active,
                       COALESCE(sum(CASE p.interval WHEN 'year' THEN (p.price_minor + 6) / 12
                                     ELSE p.price_minor END)
                                FILTER (WHERE LEAST(s.canceled_at, s.expired_at) IS NULL
                                        OR LEAST(s.canceled_at, s.expired_at) >= %(de)s), 0)
                           AS mrr
                FROM {t["sub"]} s JOIN {t["plan"]} p ON p.id = s.plan_id
                WHERE s.created_at < %(de)s
                GROUP BY 1, 2
            ),
            org_subs AS (
                SELECT org, sum(new_subs) AS new_subs, sum(churned) AS churned,
                       sum(active) AS active, min(currency) FILTER (WHERE active > 0) AS currency
                FROM subs GROUP BY org
            ),
            pay AS (
                SELECT organization_id AS org, currency, sum(amount_minor) AS revenue
                FROM {t["payment"]}
                WHERE status = 'succeeded' AND succeeded_at >= %(ds)s AND succeeded_at < %(de)s
                GROUP BY 1, 2
            ),
            usage AS (
                SELECT org, jsonb_object_agg(metric, total) AS usage
                FROM (SELECT a.organization_id AS org, a.metric,
                             CASE WHEN m.aggregation IN ('max', 'unique_count') THEN max(a.total)
                                  ELSE sum(a.total) END AS total
                      FROM {t["agg"]} a LEFT JOIN {t["metric"]} m ON m.code = a.metric
                      WHERE a.hour >= %(ds)s AND a.hour < %(de)s
                      GROUP BY a.organization_id, a.metric, m.aggregation) u
                GROUP BY org
            )
            SELECT o.id, %(day)s, COALESCE(os.currency, pc.currency, ''),
                   COALESCE(pay.revenue, 0), COALESCE(os.new_subs, 0), COALESCE(os.churned, 0),
                   COALESCE(os.active, 0), COALESCE(subs.mrr, 0),
                   COALESCE(usage.usage, '{{}}'::jsonb), now()
            FROM {t["org"]} o
            LEFT JOIN org_subs os ON os.org = o.id
            LEFT JOIN (SELECT org, min(currency) AS currency FROM pay GROUP BY org) pc
                ON pc.org = o.id
            LEFT JOIN subs ON subs.org = o.id
                AND subs.currency = COALESCE(os.currency, pc.currency)
            LEFT JOIN pay ON pay.org = o.id AND pay.currency = COALESCE(os.currency, pc.currency)
            LEFT JOIN usage ON usage.org = o.id
            WHERE o.status = 'active'
            ON CONFLICT (organization_id, day) DO UPDATE SET
                currency = excluded.currency, revenue_minor = excluded.revenue_minor,
                new_subscriptions = excluded.new_subscriptions,
                churned_subscriptions = excluded.churned_subscriptions,
                active_subscriptions = excluded.active_subscriptions,
                mrr_minor = excluded.mrr_minor, usage = excluded.usage,
                computed_at = excluded.computed_at""",
            {"ds": START, "de": START + timedelta(days=1), "day": DAY},
        )
        return c.rowcount


def project_job(slot: datetime) -> int:
    from jobs.runner import run_job

    run = run_job(JOB, slot=slot, params={"day": DAY.isoformat()})
    if run.status != "succeeded":
        raise SystemExit(f"bench: the job did not succeed: {run.status} {run.error}")
    with connection.cursor() as c:
        c.execute("DELETE FROM jobs_jobrun WHERE id = %s", [run.pk])
    return run.summary["rows_written"]


def rows() -> dict[int, tuple]:
    with connection.cursor() as c:
        c.execute(
            f"""SELECT organization_id, currency, revenue_minor, new_subscriptions,
                       churned_subscriptions, active_subscriptions, mrr_minor, usage::text
                FROM {table_names()["daily"]} WHERE day = %s""",
            [DAY],
        )
        return {r[0]: r[1:] for r in c.fetchall()}


def run() -> Result:
    log(
        f"seeding {ORGANIZATIONS:,} organizations, {SUBSCRIPTIONS:,} subscriptions, "
        f"{PAYMENTS:,} payments, {ORGANIZATIONS * 96:,} hourly aggregates"
    )
    seed()
    raw_times, project_times = [], []
    for round_ in range(ROUNDS):
        n = round_ + 1
        timings: dict[str, float] = {}
        empty_daily()
        with timed(f"round {n} raw_sql", timings):
            raw_rows = raw_sql()
        expected = rows()
        empty_daily()
        with timed(f"round {n} project", timings):
            project_rows = project_job(SLOT + timedelta(minutes=round_))
        if raw_rows != ORGANIZATIONS or project_rows != ORGANIZATIONS:
            raise SystemExit(f"bench: rows: raw {raw_rows}, job {project_rows}")
        got = rows()
        if got != expected:
            diff = next(k for k in expected if got.get(k) != expected[k])
            raise SystemExit(f"bench: org {diff}: job {got.get(diff)} != raw {expected[diff]}")
        raw_times.append(timings[f"round {n} raw_sql"])
        project_times.append(timings[f"round {n} project"])
    sample = rows()[1]
    log(f"org 1: {sample}")
    return Result(
        project=statistics.median(project_times),
        baseline_name="raw_sql",
        baseline=statistics.median(raw_times),
        extras={"organizations": f"{ORGANIZATIONS:,}", "cached": f"{ORGANIZATIONS:,}"},
    )

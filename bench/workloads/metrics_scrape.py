"""/metrics at 1,000,000 JobRun rows on PostgreSQL.

Seeds BENCH_JOB_RUNS (1,000,000) finished runs over the past year (one every
~30 s, ten jobs, ~3% failed, ~5% skipped, ~1% dry runs), so the last hour
holds ~120 of them, plus a few running and queued. Then:

* the first scrape after deploying, which folds the whole history into
  JobRunTotals once (printed as `first_scrape`);
* `project`: the median of BENCH_SCRAPES (30) scrapes of `/metrics` through
  Django's test client (the whole view: django-prometheus and job metrics);
* `count_last_hour`: the median of as many bare `SELECT count(*)` over the
  last hour's runs, the floor of reading recent runs at all.

Target: project <= 0.1 s per scrape (and flat in the number of rows).
"""

from __future__ import annotations

import os
import statistics
import time

from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from bench.common import Result, log, settle

ROWS = int(os.environ.get("BENCH_JOB_RUNS", 1_000_000))
SCRAPES = int(os.environ.get("BENCH_SCRAPES", 30))
JOBS = [
    "notifications.send_pending",
    "subscriptions.expire",
    "payments.reconcile",
    "billing.aggregate_usage",
    "billing.aggregate_daily_analytics",
    "subscriptions.send_renewal_reminders",
    "subscriptions.sync_renewals",
    "maintenance.cleanup",
    "maintenance.purge_audit_trail",
    "billing.generate_monthly_invoices",
]


def seed(rows: int) -> None:
    from jobs.models import JobRun, JobRunTotals, MetricsWatermark

    run = JobRun._meta.db_table
    jobs_array = "ARRAY[" + ",".join(f"'{j}'" for j in JOBS) + "]"
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {run} RESTART IDENTITY CASCADE")
        c.execute(f"TRUNCATE {JobRunTotals._meta.db_table}, {MetricsWatermark._meta.db_table}")
        c.execute(
            f"""INSERT INTO {run} (job, tenant, params, dry_run, trigger, triggered_by, status,
                queue, created_at, started_at, finished_at, heartbeat_at, attempts, processed,
                succeeded, failed, skipped, progress_done, summary, error, task_id)
            SELECT ({jobs_array})[1 + (g %% 10)], '', '{{}}', g %% 97 = 0, 'schedule', 'scheduler',
                CASE WHEN g %% 33 = 0 THEN 'failed' WHEN g %% 20 = 0 THEN 'skipped'
                     ELSE 'succeeded' END,
                'normal', ts, ts + interval '1 second',
                ts + interval '1 second' + (g %% 300) * interval '1 second',
                ts, 1, g %% 50, g %% 50 - least(g %% 3, g %% 50), least(g %% 3, g %% 50), 0, 0,
                '{{}}', '', ''
            FROM generate_series(1, %s) g,
                 LATERAL (SELECT now() - (%s - g) * interval '30 seconds'
                                 - interval '5 minutes' AS ts) t""",
            [rows, rows],
        )
        c.execute(
            f"""INSERT INTO {run} (job, tenant, params, dry_run, trigger, triggered_by, status,
                queue, created_at, started_at, heartbeat_at, attempts, processed, succeeded,
                failed, skipped, progress_done, summary, error, task_id)
            SELECT ({jobs_array})[1 + g], 'org_' || g, '{{}}', false, 'api', 'bench',
                CASE WHEN g % 2 = 0 THEN 'running' ELSE 'queued' END, 'normal', now(),
                CASE WHEN g % 2 = 0 THEN now() END, now(), 0, 0, 0, 0, 0, 0, '{{}}', '', ''
            FROM generate_series(0, 9) g"""
        )
    settle(run)


def median_seconds(fn, n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def run() -> Result:
    from jobs.models import JobRun

    log(f"seeding {ROWS:,} job runs")
    seed(ROWS)
    headers = {}
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    client = Client()
    table = JobRun._meta.db_table

    def scrape() -> None:
        response = client.get("/metrics", **headers)
        assert response.status_code == 200, response.status_code
        assert b"jobs_metrics_scrape_error 0.0" in response.content

    def count_last_hour() -> None:
        with connection.cursor() as c:
            c.execute(f"SELECT count(*) FROM {table} WHERE created_at >= now() - interval '1 hour'")
            c.fetchone()

    with override_settings(ALLOWED_HOSTS=["testserver"]):
        start = time.perf_counter()
        scrape()
        first = time.perf_counter() - start
        log(f"first scrape (folds the history once): {first:.2f} s")
        project, project_p95 = median_seconds(scrape, SCRAPES)
    baseline, _ = median_seconds(count_last_hour, SCRAPES)
    with connection.cursor() as c:
        c.execute(f"SELECT count(*) FROM {table} WHERE created_at >= now() - interval '1 hour'")
        last_hour = c.fetchone()[0]
    log(f"scrape median {project * 1000:.1f} ms (p95 {project_p95 * 1000:.1f} ms)")
    return Result(
        project=project,
        baseline_name="count_last_hour",
        baseline=baseline,
        extras={
            "rows": f"{ROWS:,}",
            "last_hour_runs": str(last_hour),
            "scrape_ms": f"{project * 1000:.1f} (p95 {project_p95 * 1000:.1f}, target <= 100)",
            "first_scrape": f"{first:.2f} s",
        },
    )

"""`jobs.evaluate_alerts` (every minute) at 1,000,000 JobRun rows on PostgreSQL.

Seeds the runs of `metrics_scrape` (BENCH_JOB_RUNS, one every ~30 s over the
past year, ten jobs, ~3% failed), syncs the schedules and adds one enabled
rule of each kind for every job or one job: run failed, failed or partial,
last retry failed, no success in 24 h, `expired` zero for 7 days, `expired`
above a limit and above 3x its median of 20 runs, overdue; email channel
(queued through the outbox). The first evaluation opens what is open and
queues its alerts; then:

* `project`: the median of BENCH_ALERT_ROUNDS (20) evaluations (every rule,
  the recent runs, silence and overdue, due deliveries);
* `recent_window`: the median of as many bare `SELECT count(*)` over the runs
  finished in the evaluation's lookback (`JOBS_ALERT_LOOKBACK_MINUTES`), the
  floor of reading recent runs at all.

Target: cheap at 1,000,000 runs (indexed windows only): project <= 0.1 s and
flat in the number of rows.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.db import connection

from bench.common import Result, log
from bench.workloads.metrics_scrape import ROWS, median_seconds, seed

ROUNDS = int(os.environ.get("BENCH_ALERT_ROUNDS", 20))


def add_rules() -> int:
    from jobs.alert_models import AlertCondition as C
    from jobs.alert_models import AlertIncident, AlertRule

    AlertIncident.objects.all().delete()
    AlertRule.objects.all().delete()
    common = {"channel": "email", "target": "ops@example.com", "created_by": "bench"}
    expire = "subscriptions.expire"
    rules = [
        AlertRule(name="failed", condition=C.FAILED, **common),
        AlertRule(name="failed or partial", condition=C.FAILED_OR_PARTIAL, **common),
        AlertRule(name="retries spent", condition=C.RETRIES_SPENT, **common),
        AlertRule(name="silence", condition=C.SILENCE_SUCCESS, hours=24, **common),
        AlertRule(
            name="no expiries",
            condition=C.SILENCE_ZERO,
            job=expire,
            figure="expired",
            days=7,
            **common,
        ),
        AlertRule(
            name="expiries over limit",
            condition=C.EXCESS_LIMIT,
            job=expire,
            figure="expired",
            limit=10_000,
            **common,
        ),
        AlertRule(
            name="excessive expiries",
            condition=C.EXCESS_MEDIAN,
            job=expire,
            figure="expired",
            factor=3,
            runs=20,
            **common,
        ),
        AlertRule(name="overdue", condition=C.OVERDUE, **common),
    ]
    AlertRule.objects.bulk_create(rules)
    return len(rules)


def clean_up() -> None:
    """Leave no rule, incident or alert email behind: the next workloads seed
    runs and mail of their own (an incident would hold its run by key)."""
    from jobs.alert_models import AlertRule
    from notifications.models import OutboundEmail

    AlertRule.objects.all().delete()  # incidents and deliveries go with their rule
    OutboundEmail.objects.filter(kind="jobs.alert").delete()


def run() -> Result:
    from jobs.alerts import evaluate_alerts
    from jobs.models import JobRun
    from jobs.schedules import sync_schedules

    log(f"seeding {ROWS:,} job runs")
    seed(ROWS)
    sync_schedules()
    rules = add_rules()
    try:
        first = evaluate_alerts()
        log(f"first evaluation: {first}")
        project, project_p95 = median_seconds(evaluate_alerts, ROUNDS)
    finally:
        clean_up()
    table = JobRun._meta.db_table
    lookback = int(settings.JOBS_ALERT_LOOKBACK_MINUTES)

    def recent_window() -> None:
        with connection.cursor() as c:
            c.execute(
                f"SELECT count(*) FROM {table} "
                f"WHERE finished_at >= now() - interval '{lookback} minutes'"
            )
            c.fetchone()

    baseline, _ = median_seconds(recent_window, ROUNDS)
    log(f"evaluation median {project * 1000:.1f} ms (p95 {project_p95 * 1000:.1f} ms)")
    return Result(
        project=project,
        baseline_name="recent_window",
        baseline=baseline,
        extras={
            "rows": f"{ROWS:,}",
            "rules": str(rules),
            "evaluate_ms": f"{project * 1000:.1f} (p95 {project_p95 * 1000:.1f}, target <= 100)",
            "open_incidents": str(first["open_incidents"]),
        },
    )

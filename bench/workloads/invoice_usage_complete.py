"""The invoice run making its month's usage complete, beside the hourly job.

Seeds 2,000 organizations with a monthly subscription, a month (January
2026) of hourly aggregates of two metrics for each (the hours in the
aggregation ledger, as billing.aggregate_usage leaves them) except the
month's last hour, which holds BENCH_COMPLETE_EVENTS (500,000) events not yet
aggregated: the invoice run at 00:00 on 1 February, started in the same
second as the hourly job. Then, BENCH_ROUNDS (3) times, each from the same
state (the last hour's aggregates and ledger row removed, no invoice):

* baseline `aggregate_usage`: `billing.aggregate_usage` of that hour alone,
  through jobs.runner.run_job;
* project: the invoice run's extra time to complete the period, measured as
  the wall time of `billing.generate_monthly_invoices` (one tenant, so the
  PDF of one invoice is all it renders beside the completion) with the hour
  missing, less the same run when the month is already complete. The
  completion is the same whatever the tenant: every hour of the month is
  checked in the ledger and the missing one aggregated for all organizations.

The bench checks the completed hour's aggregates equal the hourly job's, and
that the invoice bills the last hour's usage. Also printed: the completion's
own time as the run's summary records it (`usage.seconds`). Target: ratio ≤ 1.2.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection

from bench.common import (
    Result,
    log,
    seed_organizations,
    seed_usage_metrics,
    settle,
    table_names,
    timed,
)

ORGANIZATIONS = int(os.environ.get("BENCH_COMPLETE_ORGANIZATIONS", 2_000))
EVENTS = int(os.environ.get("BENCH_COMPLETE_EVENTS", 500_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
JAN = datetime(2026, 1, 1, tzinfo=UTC)
SLOT = datetime(2026, 2, 1, tzinfo=UTC)
LAST_HOUR = SLOT - timedelta(hours=1)
INVOICES = "billing.generate_monthly_invoices"
HOURLY = "billing.aggregate_usage"
TENANT = "org_00001"


def forget_runs(cursor) -> None:
    """This workload's JobRuns (and what hangs off them) go between timings."""
    runs = "SELECT id FROM jobs_jobrun WHERE job IN (%s, %s)"
    cursor.execute(f"DELETE FROM jobs_jobitemfailure WHERE run_id IN ({runs})", [INVOICES, HOURLY])
    cursor.execute(f"DELETE FROM jobs_jobchunk WHERE run_id IN ({runs})", [INVOICES, HOURLY])
    cursor.execute("DELETE FROM jobs_jobrun WHERE job IN (%s, %s)", [INVOICES, HOURLY])


def seed() -> None:
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['event']}, {t['agg']}, {t['hour']}, {t['late']}, {t['line']}, "
            f"{t['invoice']}, {t['sequence']}, {t['sub']}, {t['org']}, {t['plan']}, "
            f"{t['price']}, {t['metric']}, {t['chunk']} RESTART IDENTITY CASCADE"
        )
        forget_runs(c)
        seed_usage_metrics(c)
        c.execute(
            f"""INSERT INTO {t["plan"]} (name, price_minor, currency, interval)
            VALUES ('Pro', 2900, 'EUR', 'month')"""
        )
        c.execute(
            f"""INSERT INTO {t["price"]} (plan_id, metric_id, charge_model, unit_price_minor,
                package_size)
            SELECT p.id, m.id, 'per_unit', 1, 1 FROM {t["plan"]} p CROSS JOIN {t["metric"]} m"""
        )
        seed_organizations(c, count=ORGANIZATIONS, created_at=JAN - timedelta(days=60))
        c.execute(
            f"""INSERT INTO {t["sub"]} (organization_id, plan_id, status, current_period_start,
                current_period_end, auto_renew, created_at, updated_at)
            SELECT o.id, p.id, 'active', %(start)s, %(end)s, true, %(start)s, %(start)s
            FROM {t["org"]} o CROSS JOIN {t["plan"]} p""",
            {"start": JAN - timedelta(days=10), "end": JAN + timedelta(days=20)},
        )
        # A month of aggregates, every hour but the last one, as the hourly job left them.
        c.execute(
            f"""INSERT INTO {t["agg"]} (organization_id, metric, hour, total, event_count,
                updated_at)
            SELECT o.id, m.code, %(jan)s + h * interval '1 hour', 1 + (o.id + h) %% 50, 1, %(jan)s
            FROM {t["org"]} o CROSS JOIN (VALUES ('api_calls'), ('storage_gb')) m(code)
            CROSS JOIN generate_series(0, 742) h""",
            {"jan": JAN},
        )
        c.execute(
            f"""INSERT INTO {t["hour"]} (hour, aggregated_at)
            SELECT %(jan)s + h * interval '1 hour', %(jan)s FROM generate_series(0, 742) h""",
            {"jan": JAN},
        )
        # The last hour's events, not aggregated: the four aggregation types.
        c.execute(
            f"""INSERT INTO {t["event"]} (organization_id, metric, quantity, value_key,
                occurred_at, idempotency_key, received_at)
            SELECT 1 + g %% %(orgs)s,
                   CASE WHEN k < 5 THEN 'api_calls' WHEN k < 7 THEN 'requests'
                        WHEN k < 9 THEN 'storage_gb' ELSE 'active_users' END,
                   1 + g %% 13,
                   CASE WHEN k = 9 THEN 'user' || (g / (10 * %(orgs)s)) %% 100 ELSE '' END,
                   at, 'evt-' || g, at
            FROM (SELECT g, (g / %(orgs)s) %% 10 AS k, %(start)s + (g - 1) * %(step)s AS at
                  FROM generate_series(1, %(n)s) g) s""",
            {
                "orgs": ORGANIZATIONS,
                "n": EVENTS,
                "step": timedelta(hours=1) / EVENTS,
                "start": LAST_HOUR,
            },
        )
    settle(t["event"], t["agg"], t["hour"], t["org"], t["sub"], t["metric"], t["price"])


def reset(*, complete: bool) -> None:
    """No invoice; the last hour missing (its aggregates and ledger row gone), or
    aggregated (`complete`)."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['line']}, {t['invoice']}, {t['sequence']}, {t['chunk']}, "
            f"{t['billed']}, {t['revision']}, {t['audit']}, {t['late']} RESTART IDENTITY CASCADE"
        )
        forget_runs(c)
        if not complete:
            c.execute(f"DELETE FROM {t['agg']} WHERE hour = %s", [LAST_HOUR])
            c.execute(f"DELETE FROM {t['hour']} WHERE hour = %s", [LAST_HOUR])
    settle(t["agg"], t["hour"], t["invoice"], "jobs_jobrun")


def last_hour_aggregates() -> dict[tuple[int, str], tuple[int, int]]:
    with connection.cursor() as c:
        c.execute(
            f"SELECT organization_id, metric, total, event_count FROM {table_names()['agg']} "
            "WHERE hour = %s",
            [LAST_HOUR],
        )
        return {(o, m): (total, n) for o, m, total, n in c.fetchall()}


def hourly_job() -> None:
    from jobs.runner import run_job

    run = run_job(HOURLY, slot=SLOT, params={"hour": LAST_HOUR.isoformat()})
    if run.status != "succeeded":
        raise SystemExit(f"bench: the hourly job failed: {run.status} {run.error}")


def invoice_run() -> dict:
    from jobs.runner import run_job

    run = run_job(INVOICES, slot=SLOT, tenant=TENANT)
    if run.status != "succeeded" or run.summary.get("invoices_created") != 1:
        raise SystemExit(f"bench: the invoice run failed: {run.status} {run.error} {run.summary}")
    return run.summary


def check(expected: dict) -> None:
    """The run's aggregates of the last hour are the hourly job's, and the
    invoice bills the month's usage with them (every price: 0.01 per unit)."""
    from billing.models import Invoice
    from billing.selectors import usage_totals

    if last_hour_aggregates() != expected:
        raise SystemExit("bench: the run's aggregates of the last hour differ from the job's")
    invoice = Invoice.objects.get(organization__key=TENANT)
    totals = usage_totals(organization_ids=[invoice.organization_id], start=JAN, end=SLOT)
    last = sum(
        total for (org_id, _), (total, _) in expected.items() if org_id == invoice.organization_id
    )
    if last <= 0 or invoice.subtotal_minor != 2900 + sum(totals.values()):
        raise SystemExit(
            f"bench: the invoice does not bill the month's usage: {invoice.subtotal_minor}"
        )


def run() -> Result:
    media = tempfile.mkdtemp(prefix="bench-usage-complete-")
    settings.MEDIA_ROOT = media
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_ENABLE_S3 = False
    settings.INVOICE_GRACE_HOURS = 0
    log(
        f"invoice_usage_complete: seeding {ORGANIZATIONS:,} organizations, a month of hourly "
        f"aggregates and {EVENTS:,} events in the last hour"
    )
    seed()
    reset(complete=False)
    hourly_job()
    expected = last_hour_aggregates()
    reset(complete=True)
    invoice_run()  # warm-up: weasyprint loaded, as a long-lived worker has it
    hourly, missing, complete, inside = [], [], [], []
    for n in range(1, ROUNDS + 1):
        timings: dict[str, float] = {}
        reset(complete=False)
        with timed(f"round {n} aggregate_usage (the hour alone)", timings):
            hourly_job()
        reset(complete=False)
        with timed(f"round {n} invoice run, last hour missing", timings):
            summary = invoice_run()
        check(expected)
        inside.append(summary["usage"]["seconds"])
        reset(complete=True)
        with timed(f"round {n} invoice run, month complete", timings):
            invoice_run()
        hourly.append(timings[f"round {n} aggregate_usage (the hour alone)"])
        missing.append(timings[f"round {n} invoice run, last hour missing"])
        complete.append(timings[f"round {n} invoice run, month complete"])
    extra = statistics.median(m - c for m, c in zip(missing, complete, strict=True))
    return Result(
        project=extra,
        baseline_name="aggregate_usage",
        baseline=statistics.median(hourly),
        extras={
            "organizations": f"{ORGANIZATIONS:,}",
            "events": f"{EVENTS:,}",
            "completion_in_summary_s": f"{statistics.median(inside):.2f}",
            "run_missing_s": f"{statistics.median(missing):.2f}",
            "run_complete_s": f"{statistics.median(complete):.2f}",
        },
    )

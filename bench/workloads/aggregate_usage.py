"""billing.aggregate_usage rolling up 5,000,000 usage events of one hour.

Seeds 10,000 organizations and BENCH_USAGE_EVENTS events in the hour being
aggregated (plus BENCH_USAGE_OTHER_EVENTS just before and after it, so the hour
has to be found), over four metrics, one per aggregation type: half the events
`sum`, a fifth `count`, a fifth `max`, a tenth `unique_count` (every one a new
value: the worst case, 500,000 distinct values). Then times, alternating
BENCH_ROUNDS times on an emptied aggregate table (medians compared):
* project: the job through jobs.runner.run_job for that hour (the JobRun
  recorded, closed organizations left out);
* raw_insert_select: the same rows by one hand-written `INSERT ... SELECT ...
  GROUP BY ... ON CONFLICT DO UPDATE` (per value, then per metric with the
  metric's type), nothing else; the bench checks both give identical rows;
* sum_only (printed): `sum(quantity), count(*) GROUP BY organization_id,
  metric`, types ignored: the least any aggregation of these rows costs.
All three run with the job's session settings (work_mem 64MB, jit off). Also
printed: a rerun of the hour by the job (every row unchanged, none rewritten).
"""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime, timedelta

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

EVENTS = int(os.environ.get("BENCH_USAGE_EVENTS", 5_000_000))
OTHER_EVENTS = int(os.environ.get("BENCH_USAGE_OTHER_EVENTS", 500_000))
ORGANIZATIONS = int(os.environ.get("BENCH_ORGANIZATIONS", 10_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
HOUR = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
SLOT = HOUR + timedelta(hours=1)
JOB = "billing.aggregate_usage"


def seed() -> None:
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['event']}, {t['agg']}, {t['org']}, {t['metric']}, {t['hour']} "
            "RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = %s", [JOB])
        seed_usage_metrics(c)
        seed_organizations(c, count=ORGANIZATIONS, created_at=HOUR - timedelta(days=30))
        # Events arrive in time order, as a product reports them.
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
                "n": EVENTS + OTHER_EVENTS,
                # EVENTS an hour; the others just before and after the hour.
                "step": timedelta(hours=1) / EVENTS,
                "start": HOUR - timedelta(hours=1) / EVENTS * (OTHER_EVENTS // 2),
            },
        )
        c.execute(
            f"SELECT count(*) FROM {t['event']} WHERE occurred_at >= %s AND occurred_at < %s",
            [HOUR, HOUR + timedelta(hours=1)],
        )
        log(f"events in the hour: {c.fetchone()[0]:,}")
    settle(t["event"], t["org"], t["metric"], t["agg"])


def empty_aggregates() -> None:
    """No aggregate, and no hour in the aggregation ledger: a first aggregation."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {t['agg']}, {t['hour']}, {t['revision']} RESTART IDENTITY")
    settle(t["agg"], t["hour"])


RAW_SETTINGS = ("SET LOCAL work_mem = '64MB'", "SET LOCAL jit = off")  # what the job sets

UPSERT = """ON CONFLICT (organization_id, metric, hour) DO UPDATE
    SET total = excluded.total, event_count = excluded.event_count,
        updated_at = excluded.updated_at"""


def raw_insert_select() -> int:
    """The same rows by hand, in one statement: per value, then per metric."""
    t = table_names()
    with transaction.atomic(), connection.cursor() as c:
        for setting in RAW_SETTINGS:
            c.execute(setting)
        c.execute(
            f"""INSERT INTO {t["agg"]} (organization_id, metric, hour, total, event_count,
                updated_at)
            SELECT v.organization_id, v.metric, %(hour)s,
                   CASE m.aggregation WHEN 'count' THEN sum(v.n) WHEN 'max' THEN max(v.mx)
                        WHEN 'unique_count' THEN count(*) ELSE sum(v.s) END,
                   sum(v.n), now()
            FROM (SELECT organization_id, metric, value_key, sum(quantity) AS s,
                         count(*) AS n, max(quantity) AS mx
                  FROM {t["event"]}
                  WHERE occurred_at >= %(hour)s AND occurred_at < %(end)s
                  GROUP BY organization_id, metric, value_key) v
            JOIN {t["metric"]} m ON m.code = v.metric
            GROUP BY v.organization_id, v.metric, m.aggregation
            {UPSERT}""",
            {"hour": HOUR, "end": HOUR + timedelta(hours=1)},
        )
        return c.rowcount


def sum_only() -> int:
    """The floor: sum and count per organization and metric, types ignored."""
    t = table_names()
    with transaction.atomic(), connection.cursor() as c:
        for setting in RAW_SETTINGS:
            c.execute(setting)
        c.execute(
            f"""INSERT INTO {t["agg"]} (organization_id, metric, hour, total, event_count,
                updated_at)
            SELECT organization_id, metric, %(hour)s, sum(quantity), count(*), now()
            FROM {t["event"]}
            WHERE occurred_at >= %(hour)s AND occurred_at < %(end)s
            GROUP BY organization_id, metric
            {UPSERT}""",
            {"hour": HOUR, "end": HOUR + timedelta(hours=1)},
        )
        return c.rowcount


def project_job(slot: datetime = SLOT) -> int:
    from jobs.runner import run_job

    run = run_job(JOB, slot=slot, params={"hour": HOUR.isoformat()})
    if run.status != "succeeded":
        raise SystemExit(f"bench: the job did not succeed: {run.status} {run.error}")
    with connection.cursor() as c:
        c.execute("DELETE FROM jobs_jobrun WHERE id = %s", [run.pk])
    return run.summary["aggregates_written"]


def totals() -> dict[tuple[int, str], tuple[int, int]]:
    with connection.cursor() as c:
        c.execute(f"SELECT organization_id, metric, total, event_count FROM {table_names()['agg']}")
        return {(o, m): (t, n) for o, m, t, n in c.fetchall()}


def check() -> None:
    """The job's rows: one per organization and metric, every event counted."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"""SELECT count(*), sum(event_count),
                       sum(total) FILTER (WHERE metric = 'requests')
                FROM {t["agg"]}"""
        )
        rows, events, requests = c.fetchone()
        c.execute(
            f"""SELECT count(*) FROM {t["event"]} WHERE metric = 'requests'
                AND occurred_at >= %s AND occurred_at < %s""",
            [HOUR, HOUR + timedelta(hours=1)],
        )
        expected_requests = c.fetchone()[0]
    if rows != ORGANIZATIONS * 4 or events != EVENTS or requests != expected_requests:
        raise SystemExit(f"bench: wrong aggregates: {rows} rows, {events} events, {requests}")


def run() -> Result:
    log(f"seeding {EVENTS:,} usage events in one hour (+{OTHER_EVENTS:,} around it)")
    seed()
    raw_times, project_times, floor_times = [], [], []
    for round_ in range(ROUNDS):
        n = round_ + 1
        timings: dict[str, float] = {}
        empty_aggregates()
        with timed(f"round {n} raw_insert_select", timings):
            raw_rows = raw_insert_select()
        raw_check = totals()
        empty_aggregates()
        with timed(f"round {n} project", timings):
            project_rows = project_job(SLOT + timedelta(minutes=round_))
        if raw_rows != ORGANIZATIONS * 4 or project_rows != ORGANIZATIONS * 4:
            raise SystemExit(f"bench: rows: raw {raw_rows}, job {project_rows}")
        if totals() != raw_check:
            raise SystemExit("bench: the job's aggregates differ from the raw statement's")
        check()
        empty_aggregates()
        with timed(f"round {n} sum_only", timings):
            sum_only()
        raw_times.append(timings[f"round {n} raw_insert_select"])
        project_times.append(timings[f"round {n} project"])
        floor_times.append(timings[f"round {n} sum_only"])
    empty_aggregates()
    project_job(SLOT + timedelta(minutes=29))
    timings = {}
    with timed("rerun (unchanged)", timings):
        again = project_job(SLOT + timedelta(minutes=30))
    if again:
        raise SystemExit(f"bench: a rerun rewrote {again} unchanged aggregates")
    project, floor = statistics.median(project_times), statistics.median(floor_times)
    return Result(
        project=project,
        baseline_name="raw_insert_select",
        baseline=statistics.median(raw_times),
        extras={
            "events": f"{EVENTS:,}",
            "aggregates": f"{ORGANIZATIONS * 4:,}",
            "rerun_s": f"{timings['rerun (unchanged)']:.2f}",
            "sum_only_s": f"{floor:.2f}",
            "ratio_to_sum_only": f"{project / floor:.2f}",
        },
    )

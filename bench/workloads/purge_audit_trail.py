"""maintenance.purge_audit_trail on 2,000,000 audit records, half past retention.

Three timings, each on a fresh seed:
* project: the job through jobs.runner.run_job with its default batch size
  and pause, so the platform's JobRun bookkeeping and checkpoints count;
* raw_delete: one `DELETE ... WHERE at < cutoff` (the limit: one statement
  holding 1,000,000 row locks for its whole run);
* hangfire_design_scaled: the seed design (`DELETE` 1,000 rows, sleep 100 ms,
  repeat) timed on BENCH_HANGFIRE_BATCHES batches and scaled to the full set.
The line also prints the largest single batch statement of the job.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection

from bench.common import Result, log, settle, timed

ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", 2_000_000))
HANGFIRE_BATCHES = int(os.environ.get("BENCH_HANGFIRE_BATCHES", 50))
HANGFIRE_BATCH, HANGFIRE_PAUSE = 1_000, 0.1
JOB = "maintenance.purge_audit_trail"
SLOT = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)  # in the past: the job never looks past now


def table() -> str:
    from audit.models import AuditTrail

    return connection.ops.quote_name(AuditTrail._meta.db_table)


def cutoff() -> datetime:
    return SLOT - timedelta(days=settings.AUDIT_RETENTION_DAYS)


def seed() -> int:
    """ROWS records over 2 x the retention before the slot, in time order (as
    an append-only trail is): every other one a bulk record listing 3 ids."""
    span = timedelta(days=2 * settings.AUDIT_RETENTION_DAYS)
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {table()} RESTART IDENTITY")
        c.execute("DELETE FROM jobs_jobrun WHERE job = %s", [JOB])
        c.execute(
            f"""INSERT INTO {table()} (at, actor, tenant, action, object_type, object_id,
                object_ids, changes, job_run_id, request_id)
            SELECT %(start)s + g * %(step)s, 'job:subscriptions.expire#' || (g / 1000),
                   'org_' || lpad((g %% 10000)::text, 5, '0'), 'subscription.expired',
                   'subscriptions.subscription',
                   CASE WHEN g %% 2 = 0 THEN g::text ELSE '' END,
                   CASE WHEN g %% 2 = 0 THEN '[]'::jsonb
                        ELSE jsonb_build_array(g, g + 1, g + 2) END,
                   '{{"status": ["active", "expired"]}}'::jsonb, g / 1000, ''
            FROM generate_series(1, %(n)s) g""",
            {"start": SLOT - span, "step": span / ROWS, "n": ROWS},
        )
        c.execute(f"SELECT count(*) FROM {table()} WHERE at < %s", [cutoff()])
        old = c.fetchone()[0]
    settle(table().strip('"'), "jobs_jobrun")
    return old


def raw_delete() -> int:
    with connection.cursor() as c:
        c.execute(f"DELETE FROM {table()} WHERE at < %s", [cutoff()])
        return c.rowcount


def hangfire_sample(batches: int) -> tuple[int, float]:
    """The seed design: delete 1,000 old rows, pause 100 ms, repeat."""
    deleted, worst = 0, 0.0
    with connection.cursor() as c:
        for _ in range(batches):
            started = time.perf_counter()
            c.execute(
                f"DELETE FROM {table()} WHERE id IN "
                f"(SELECT id FROM {table()} WHERE at < %s LIMIT {HANGFIRE_BATCH})",
                [cutoff()],
            )
            worst = max(worst, time.perf_counter() - started)
            deleted += c.rowcount
            time.sleep(HANGFIRE_PAUSE)
    return deleted, worst


def project_job():
    from jobs.runner import run_job

    run = run_job(JOB, slot=SLOT)
    if run.status != "succeeded":
        raise SystemExit(f"bench: the job did not succeed: {run.status} {run.error}")
    return run


def run() -> Result:
    times: dict[str, float] = {}
    log(f"purge_audit_trail: seeding {ROWS:,} audit records")
    with timed("seed", times):
        old = seed()
    log(f"{old:,} past the {settings.AUDIT_RETENTION_DAYS}-day retention")

    with timed("raw_delete", times):
        deleted_raw = raw_delete()
    assert deleted_raw == old, (deleted_raw, old)

    seed()
    with timed("hangfire_sample", times):
        sampled, _ = hangfire_sample(HANGFIRE_BATCHES)
    hangfire_scaled = times["hangfire_sample"] * old / sampled

    seed()
    with timed("project", times):
        job_run = project_job()
    summary = job_run.summary
    assert summary["deleted"] == old, (summary, old)
    with connection.cursor() as c:
        c.execute(f"SELECT count(*), min(at) FROM {table()}")
        left, oldest = c.fetchone()
    assert left == ROWS - old and oldest >= cutoff(), (left, oldest)
    log(
        f"job: {summary['batches']} batches of {summary['batch_size']:,}, "
        f"{summary['batch_delay_ms']} ms pauses"
    )

    return Result(
        project=times["project"],
        baseline_name="raw_delete",
        baseline=times["raw_delete"],
        extras={
            "hangfire_design_scaled": (
                f"{hangfire_scaled:.0f} s (timed on {sampled:,} rows, scaled)"
            ),
            "speedup": f"{hangfire_scaled / times['project']:.0f}x",
            "max_batch_ms": f"{summary['max_batch_ms']:.0f}",
            "deleted": f"{summary['deleted']:,}",
            "batch_size": f"{summary['batch_size']:,}",
            "batch_delay_ms": str(summary["batch_delay_ms"]),
        },
    )

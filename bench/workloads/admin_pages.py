"""The admin's heavy pages on big tables, each beside a bare query of its rows.

Seeded: 1,000,000 JobRuns, BENCH_ADMIN_EVENTS usage events (10,000,000 by
default), 2,000,000 audit records, 1,000,000 subscriptions of 10,000
organizations. Each page is fetched through Django's test client as a
superuser (the median of BENCH_ADMIN_ROUNDS after a warm-up), beside a bare
`SELECT * ... ORDER BY <the list's ordering> LIMIT 100` of the same table;
a line per page prints both in ms and their ratio (the budget: 300 ms, ratio
at most 3). The workload's own line is the slowest page against its baseline.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from django.db import connection

from bench.common import Result, format_line, log, seed_usage_metrics, settle, table_names, timed

JOB_RUNS = int(os.environ.get("BENCH_JOB_RUNS", 1_000_000))
EVENTS = int(os.environ.get("BENCH_ADMIN_EVENTS", 10_000_000))
ROUNDS = int(os.environ.get("BENCH_ADMIN_ROUNDS", 5))
BUDGET_MS = 300


def seed() -> None:
    """Subscriptions and organizations (expire_subscriptions' seed), audit
    records (purge_audit_trail's), usage events, then the JobRuns
    (metrics_scrape's): each seed truncates only what it owns, in this order."""
    from bench.workloads import expire_subscriptions, metrics_scrape, purge_audit_trail

    t = table_names()
    if seeded(t["sub"], 1_000_000) and seeded(t["org"], 10_000):
        log("subscriptions already seeded; kept")
    else:
        expire_subscriptions.seed()
    if seeded(t["audit"], purge_audit_trail.ROWS):
        log("audit records already seeded; kept")
    else:
        purge_audit_trail.seed()
    if seeded(t["event"], EVENTS):
        log("usage events already seeded; kept")
    else:
        seed_events(t)
    metrics_scrape.seed(JOB_RUNS)


def seeded(table: str, rows: int) -> bool:
    """The table holds about `rows` rows already (a rerun keeps a seed it can use)."""
    with connection.cursor() as c:
        c.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) s", [rows])
        return c.fetchone()[0] >= rows


def seed_events(t: dict[str, str]) -> None:
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {t['event']}, {t['metric']} RESTART IDENTITY CASCADE")
        seed_usage_metrics(c)
        c.execute(
            f"""INSERT INTO {t["event"]} (organization_id, metric, quantity, value_key,
                occurred_at, idempotency_key, received_at)
            SELECT 1 + g %% 10000, CASE WHEN g %% 4 = 0 THEN 'requests' ELSE 'api_calls' END,
                   1 + g %% 13, '', at, 'evt-' || g, at
            FROM (SELECT g, now() - (%(n)s - g) * interval '10 milliseconds' AS at
                  FROM generate_series(1, %(n)s) g) s""",
            {"n": EVENTS},
        )
    settle(t["event"], t["metric"])


def median_ms(fn: Callable[[], object]) -> float:
    fn()  # warm-up: caches, plans, templates
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def bare(sql: str) -> Callable[[], object]:
    def query() -> object:
        with connection.cursor() as c:
            c.execute(sql)
            return c.fetchall()

    return query


def pages() -> list[tuple[str, str, str]]:
    """(name, admin URL, the bare query of its rows)."""
    from jobs.models import JobRun

    t = table_names()
    run_id = JobRun.objects.order_by("-id").values_list("id", flat=True)[500]
    runs = "SELECT * FROM jobs_jobrun"
    newest = "ORDER BY created_at DESC, id DESC LIMIT 100"
    return [
        ("jobrun_list", "/admin/jobs/jobrun/", f"{runs} {newest}"),
        (
            "jobrun_list_by_job",
            "/admin/jobs/jobrun/?job=subscriptions.expire",
            f"{runs} WHERE job = 'subscriptions.expire' {newest}",
        ),
        (
            "jobrun_list_failed",
            "/admin/jobs/jobrun/?status__exact=failed",
            f"{runs} WHERE status = 'failed' {newest}",
        ),
        ("jobrun_detail", f"/admin/jobs/jobrun/{run_id}/change/", f"{runs} WHERE id = {run_id}"),
        ("overview", "/admin/jobs/overview/", f"{runs} {newest}"),
        ("charts", "/admin/jobs/charts/", f"{runs} {newest}"),
        ("schedules", "/admin/jobs/schedulestate/", f"{runs} {newest}"),
        (
            "audit_list",
            "/admin/audit/audittrail/",
            f"SELECT * FROM {t['audit']} ORDER BY at DESC, id DESC LIMIT 100",
        ),
        (
            "usage_event_list",
            "/admin/billing/usageevent/",
            f"SELECT * FROM {t['event']} ORDER BY id DESC LIMIT 100",
        ),
        (
            "subscription_list",
            "/admin/subscriptions/subscription/",
            f"SELECT * FROM {t['sub']} ORDER BY id DESC LIMIT 100",
        ),
    ]


def client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    browser = Client(HTTP_HOST="localhost")
    browser.force_login(user)
    return browser


def run() -> Result:
    """The pages render with plain static storage: the bench runs without
    `collectstatic`, whose manifest DEBUG-off settings otherwise require."""
    from django.conf import settings
    from django.test import override_settings

    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages):
        return measure()


def measure() -> Result:
    times: dict[str, float] = {}
    log(
        f"admin_pages: seeding {JOB_RUNS:,} runs, {EVENTS:,} usage events, "
        "2,000,000 audit records, 1,000,000 subscriptions"
    )
    with timed("seed", times):
        seed()
    from jobs.schedules import sync_schedules

    sync_schedules()
    browser = client()
    worst: tuple[str, float, float] = ("", 0.0, 1.0)
    over: list[str] = []
    for name, url, sql in pages():

        def page(url: str = url) -> None:
            response = browser.get(url, secure=True)
            if response.status_code != 200:
                raise SystemExit(f"bench: {url} answered {response.status_code}")

        page_ms, bare_ms = median_ms(page), median_ms(bare(sql))
        print(
            format_line(
                f"admin_pages.{name}",
                Result(
                    project=page_ms / 1000,
                    baseline_name="bare_select",
                    baseline=bare_ms / 1000,
                    extras={"page_ms": f"{page_ms:.0f}", "bare_ms": f"{bare_ms:.1f}"},
                ),
            ),
            flush=True,
        )
        if page_ms > BUDGET_MS:
            over.append(f"{name} {page_ms:.0f} ms")
        if page_ms > worst[1]:
            worst = (name, page_ms, bare_ms)
    name, page_ms, bare_ms = worst
    return Result(
        project=page_ms / 1000,
        baseline_name=f"bare_select_of_{name}",
        baseline=bare_ms / 1000,
        extras={
            "slowest_page": name,
            "slowest_ms": f"{page_ms:.0f}",
            "over_300ms": ", ".join(over) or "none",
            "events": f"{EVENTS:,}",
        },
    )

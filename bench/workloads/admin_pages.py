"""The admin's heavy pages on big tables, each beside bare SELECTs of its rows.

Seeded: 1,000,000 JobRuns, BENCH_ADMIN_EVENTS usage events (10,000,000 by
default), 2,000,000 audit records, 1,000,000 subscriptions of 10,000
organizations. Each page is fetched through Django's test client as a
superuser, and so is the plainest page of the same rows: the bare SELECTs of
the rows and columns the page shows (`SELECT <columns> ... ORDER BY <the
list's ordering> LIMIT <its page size>`, a run's related rows, each job's
latest runs), printed in a table by a template. The two are fetched in turn,
BENCH_ADMIN_ROUNDS times after a warm-up of each, and each figure is the
median of its fetches: their database times are a millisecond or two, so a
drift of the machine must fall on both alike.

A line per page: `project` is the page's time in the database (every
statement it ran, timed by an execute wrapper), `bare_select` the plain
page's (the bare SELECTs plus the session and user reads every page makes);
their ratio is what a big table costs the page beyond reading what it shows
(a COUNT(*), a DISTINCT filter, a history-wide GROUP BY would make it
hundreds). Also printed: the bare SELECTs alone, the page's whole time
(`page_ms`, the 300 ms budget) and the plain page's. The workload's own line
is the page with the highest ratio.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from django.contrib import admin
from django.db import connection
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.template import engines
from django.urls import include, path

from bench.common import Result, format_line, log, seed_usage_metrics, settle, table_names, timed

JOB_RUNS = int(os.environ.get("BENCH_JOB_RUNS", 1_000_000))
EVENTS = int(os.environ.get("BENCH_ADMIN_EVENTS", 10_000_000))
ROUNDS = int(os.environ.get("BENCH_ADMIN_ROUNDS", 15))
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


def median_ms(*fns: Callable[[], object]) -> list[float]:
    """Each of `fns` warmed up (caches, plans, templates), then all called in
    turn ROUNDS times: the median milliseconds of each."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(ROUNDS):
        for fn, times in zip(fns, samples, strict=True):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
    return [statistics.median(times) for times in samples]


class SqlClock:
    """The time a request spends in the database: every statement the
    connection executes while installed, summed (connection.execute_wrapper)."""

    def __init__(self) -> None:
        self.ms = 0.0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.ms += (time.perf_counter() - started) * 1000


def bare(statements: list[str]) -> Callable[[], object]:
    def query() -> object:
        with connection.cursor() as c:
            for sql in statements:
                c.execute(sql)
                c.fetchall()
        return None

    return query


PLAIN_PAGE = """<!doctype html><html><head><title>{{ name }}</title></head><body>
{% for columns, rows in tables %}<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}</body></html>"""


def plain_page(request: HttpRequest, name: str) -> HttpResponse:
    """The plainest page Django can serve of a page's rows: its bare SELECTs,
    every column of every row printed in a table by a template, for a staff
    user, through the same middleware as the admin."""
    if not request.user.is_staff:
        return HttpResponseForbidden()
    tables = []
    with connection.cursor() as c:
        for sql in BARE_SQL[name]:
            c.execute(sql)
            tables.append(([d.name for d in c.description], c.fetchall()))
    return HttpResponse(plain_template().render({"name": name, "tables": tables}, request))


@cache
def plain_template() -> Any:
    """Compiled once, as the admin's templates are by the cached loader."""
    return engines["django"].from_string(PLAIN_PAGE)


BARE_SQL: dict[str, list[str]] = {}


def quoted(statuses: tuple[Any, ...]) -> str:
    """Statuses as an SQL list: 'succeeded', 'partial'."""
    return ", ".join(f"'{status.value}'" for status in statuses)


def rows_shown(model: type[Model]) -> int:
    """How many rows the model's changelist shows on a page."""
    return admin.site.get_model_admin(model).list_per_page


def pages() -> list[tuple[str, str, list[str]]]:
    """(name, admin URL, bare SELECTs of the rows and columns the page shows)."""
    from audit.models import AuditTrail
    from billing.models import UsageEvent
    from jobs.models import JobRun, RunStatus
    from jobs.registry import all_jobs
    from jobs.selectors import FAILING_STATUSES, OUTCOME_STATUSES
    from subscriptions.models import Subscription

    t = table_names()
    run_id = JobRun.objects.order_by("-id").values_list("id", flat=True)[500]
    run_columns = (
        "SELECT id, job, tenant, status, trigger, triggered_by, created_at, started_at, "
        "finished_at, processed, succeeded, failed, skipped FROM jobs_jobrun"
    )
    listed = f"ORDER BY created_at DESC, id DESC LIMIT {rows_shown(JobRun)}"
    # A run's page shows the run, its log, item failures, chunks, and the
    # retries and reruns it led to.
    run_page = [
        f"SELECT * FROM jobs_jobrun WHERE id = {run_id}",
        f"SELECT * FROM jobs_jobrunlog WHERE run_id = {run_id}",
        f"SELECT * FROM jobs_jobitemfailure WHERE run_id = {run_id} ORDER BY id LIMIT 100",
        f"SELECT * FROM jobs_jobchunk WHERE run_id = {run_id} ORDER BY id",
        f"{run_columns} WHERE retry_of_id = {run_id} OR rerun_of_id = {run_id}",
    ]
    # The schedules list shows each job's schedule and its latest run.
    run_row = "SELECT id, job, status, created_at, finished_at, processed, failed FROM jobs_jobrun"
    newest = "ORDER BY created_at DESC, id DESC LIMIT 1"
    names = [spec.name for spec in all_jobs()]
    latest = " UNION ALL ".join(f"({run_row} WHERE job = '{job}' {newest})" for job in names)
    schedules = [
        "SELECT s.job, s.paused, s.paused_by, s.pause_reason, q.cron, q.next_run "
        "FROM jobs_schedulestate s JOIN django_q_schedule q ON q.id = s.schedule_id "
        "ORDER BY s.job",
        latest,
    ]
    # The overview shows that too, and per job its latest real run, outcome
    # and success and its failures in 24 hours, then the runs running now,
    # the queues, the clusters and the outbox.
    real = "NOT dry_run"
    outcomes = f"{real} AND status IN ({quoted(OUTCOME_STATUSES)})"
    per_job = " UNION ALL ".join(
        f"({run_row} WHERE job = '{job}' AND {real} {newest}) UNION ALL "
        f"({run_row} WHERE job = '{job}' AND {outcomes} {newest}) UNION ALL "
        f"({run_row} WHERE job = '{job}' AND {real} AND status = '{RunStatus.SUCCEEDED.value}' "
        "AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1)"
        for job in names
    )
    overview = [
        *schedules,
        per_job,
        "SELECT job, count(*) FROM jobs_jobrun WHERE created_at >= now() - interval '24 hours' "
        f"AND {real} AND status IN ({quoted(FAILING_STATUSES)}) GROUP BY job",
        "SELECT id, job, tenant, started_at, progress_done, progress_total FROM jobs_jobrun "
        "WHERE status = 'running' ORDER BY started_at",
        "SELECT queue, count(*) FROM jobs_jobrun WHERE status = 'queued' GROUP BY queue",
        "SELECT cluster, host, pid, seen_at FROM jobs_clusterheartbeat ORDER BY cluster LIMIT 50",
        "SELECT status, count(*) FROM notifications_outboundemail GROUP BY status",
    ]
    # The charts draw runs and items per hour by outcome over 24 hours and 7 days.
    charts = [
        "SELECT date_trunc('hour', created_at), status, count(*), sum(processed) "
        f"FROM jobs_jobrun WHERE created_at >= now() - interval '{hours} hours' "
        "AND NOT dry_run GROUP BY 1, 2"
        for hours in (24, 24 * 7)
    ]
    return [
        ("jobrun_list", "/admin/jobs/jobrun/", [f"{run_columns} {listed}"]),
        (
            "jobrun_list_by_job",
            "/admin/jobs/jobrun/?job=subscriptions.expire",
            [f"{run_columns} WHERE job = 'subscriptions.expire' {listed}"],
        ),
        (
            "jobrun_list_failed",
            "/admin/jobs/jobrun/?status__exact=failed",
            [f"{run_columns} WHERE status = 'failed' {listed}"],
        ),
        ("jobrun_detail", f"/admin/jobs/jobrun/{run_id}/change/", run_page),
        ("overview", "/admin/jobs/overview/", overview),
        ("charts", "/admin/jobs/charts/", charts),
        ("schedules", "/admin/jobs/schedulestate/", schedules),
        (
            "audit_list",
            "/admin/audit/audittrail/",
            [
                "SELECT at, actor, tenant, action, object_type, object_id, "
                "jsonb_array_length(object_ids), changes, job_run_id "
                f"FROM {t['audit']} ORDER BY at DESC, id DESC LIMIT {rows_shown(AuditTrail)}"
            ],
        ),
        (
            "usage_event_list",
            "/admin/billing/usageevent/",
            [
                "SELECT e.id, o.name, o.key, e.metric, e.quantity, e.value_key, e.occurred_at, "
                f"e.received_at, e.idempotency_key FROM {t['event']} e "
                f"JOIN {t['org']} o ON o.id = e.organization_id "
                f"ORDER BY e.id DESC LIMIT {rows_shown(UsageEvent)}"
            ],
        ),
        (
            "subscription_list",
            "/admin/subscriptions/subscription/",
            [
                "SELECT s.id, o.name, o.key, p.name, p.price_minor, p.currency, p.interval, "
                "s.status, s.current_period_end, s.auto_renew, s.expired_at, s.suspended_at, "
                "s.reconciliation_status, s.last_stripe_sync_at "
                f"FROM {t['sub']} s JOIN {t['org']} o ON o.id = s.organization_id "
                f"JOIN {t['plan']} p ON p.id = s.plan_id "
                f"ORDER BY s.id DESC LIMIT {rows_shown(Subscription)}"
            ],
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
    `collectstatic`, whose manifest DEBUG-off settings otherwise require. The
    URLconf is the project's plus the bench's bare pages."""
    from django.conf import settings
    from django.test import override_settings

    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    class urlconf:  # a URLconf: anything with urlpatterns
        urlpatterns = [
            path("bench/plain/<slug:name>/", plain_page),
            path("", include(settings.ROOT_URLCONF)),
        ]

    with override_settings(STORAGES=storages, ROOT_URLCONF=urlconf):
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

    def fetch(url: str, sql_ms: list[float]) -> None:
        clock = SqlClock()
        with connection.execute_wrapper(clock):
            response = browser.get(url, secure=True)
        if response.status_code != 200:
            raise SystemExit(f"bench: {url} answered {response.status_code}")
        sql_ms.append(clock.ms)

    worst: tuple[str, Result] | None = None
    slowest = 0.0
    over: list[str] = []
    for name, url, statements in pages():
        BARE_SQL[name] = statements
        page_sql: list[float] = []
        plain_sql: list[float] = []
        page_ms, plain_ms = median_ms(
            lambda url=url, into=page_sql: fetch(url, into),
            lambda name=name, into=plain_sql: fetch(f"/bench/plain/{name}/", into),
        )
        # The database time of the same fetches, the warm-up left out.
        page_sql_ms = statistics.median(page_sql[1:])
        plain_sql_ms = statistics.median(plain_sql[1:])
        (bare_ms,) = median_ms(bare(statements))
        result = Result(
            project=page_sql_ms / 1000,
            baseline_name="bare_select",
            baseline=plain_sql_ms / 1000,
            digits=4,
            extras={
                "page_sql_ms": f"{page_sql_ms:.1f}",
                "bare_select_ms": f"{plain_sql_ms:.1f}",
                "bare_select_alone_ms": f"{bare_ms:.1f}",
                "page_ms": f"{page_ms:.1f}",
                "plain_page_ms": f"{plain_ms:.1f}",
                "page_to_plain_page": f"{page_ms / plain_ms:.2f}",
            },
        )
        print(format_line(f"admin_pages.{name}", result), flush=True)
        if worst is None or result.ratio > worst[1].ratio:
            worst = (name, result)
        slowest = max(slowest, page_ms)
        if page_ms > BUDGET_MS:
            over.append(f"{name} {page_ms:.0f} ms")
    assert worst is not None
    name, result = worst
    return Result(
        project=result.project,
        baseline_name=f"bare_select_of_{name}",
        baseline=result.baseline,
        digits=4,
        extras={
            "slowest_page_ms": f"{slowest:.0f}",
            "over_300ms": ", ".join(over) or "none",
            "events": f"{EVENTS:,}",
        },
    )

"""Reads behind the jobs admin: schedules with their last run, and the overview.

Each function runs a fixed, small number of queries whatever the number of
jobs or runs: per-job index lookups joined in one statement, and counts over
a recent window, never a GROUP BY over the whole history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from jobs.humanize import cron_in_words
from jobs.models import JobRun, RunStatus, ScheduleState
from jobs.registry import JobSpec, all_jobs
from jobs.schedules import is_overdue

# Runs that say how the job is doing; skipped slots and queued runs say nothing.
OUTCOME_STATUSES = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)
FAILING_STATUSES = (RunStatus.PARTIAL, RunStatus.FAILED)


def latest_runs(jobs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each job's latest run (id, status, created_at), by job, in two queries
    however many jobs: one index lookup per job, each planned for its job
    (a correlated subquery over every job's rows is not, on PostgreSQL: it
    walks the whole history of a job with few runs), then those runs."""
    names = sorted(set(jobs))
    if not names:
        return {}
    table = connection.ops.quote_name(JobRun._meta.db_table)
    sql = " UNION ALL ".join(
        f"SELECT * FROM (SELECT id FROM {table} WHERE job = %s "
        f"ORDER BY created_at DESC, id DESC LIMIT 1) AS r{i}"
        for i in range(len(names))
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, names)
        ids = [run_id for (run_id,) in cursor.fetchall()]
    runs = JobRun.objects.filter(id__in=ids).values("id", "job", "status", "created_at")
    return {run["job"]: run for run in runs}


@dataclass
class JobHealth:
    """One row of the overview: what a person needs to see about one job."""

    spec: JobSpec
    state: ScheduleState | None
    last_run: JobRun | None = None
    last_outcome: JobRun | None = None
    last_success_at: datetime | None = None
    failures_24h: int = 0
    running: list[JobRun] = field(default_factory=list)
    overdue: bool = False
    ever_ran: bool = False  # a real (not dry) run was ever recorded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cron(self) -> str | None:
        if self.state is not None:
            return self.state.schedule.cron
        return None

    @property
    def cron_words(self) -> str:
        return cron_in_words(self.cron or self.spec.schedule)

    @property
    def has_required_params(self) -> bool:
        return any(p.required for p in self.spec.params)

    @property
    def paused(self) -> bool:
        return bool(self.state and self.state.paused)

    @property
    def failing(self) -> bool:
        """The latest real outcome was a failure or left failed items."""
        return self.last_outcome is not None and self.last_outcome.status in FAILING_STATUSES

    @property
    def never_run(self) -> bool:
        return not self.ever_ran

    @property
    def healthy(self) -> bool:
        return not self.failing and not self.overdue and not self.paused and self.ever_ran

    @property
    def health(self) -> str:
        """One word for the tile: paused, failing, overdue, never run or healthy."""
        if self.paused:
            return "paused"
        if self.failing:
            return "failing"
        if self.overdue:
            return "overdue"
        if self.never_run:
            return "never run"
        return "healthy"


@dataclass
class Overview:
    jobs: list[JobHealth]
    now: datetime

    @property
    def healthy(self) -> int:
        return sum(1 for j in self.jobs if j.healthy)

    @property
    def failing(self) -> int:
        return sum(1 for j in self.jobs if j.failing)

    @property
    def overdue(self) -> int:
        return sum(1 for j in self.jobs if j.overdue)

    @property
    def running(self) -> int:
        return sum(1 for j in self.jobs if j.running)

    @property
    def paused(self) -> int:
        return sum(1 for j in self.jobs if j.paused)

    @property
    def never_run(self) -> int:
        return sum(1 for j in self.jobs if j.health == "never run")


def job_overview(*, now: datetime | None = None) -> Overview:
    """Every registered job with its schedule, last outcomes and what runs now.

    Five queries: schedule states, one of index lookups per job over JobRun
    and one count of the last day's failures (latest_run_ids), the latest
    runs it points at, and the runs running now.
    Dry runs say nothing about health: they are neither a job's last
    outcome, its last success nor its failures.
    """
    now = now or timezone.now()
    specs = all_jobs()
    names = [spec.name for spec in specs]
    states = {
        state.job: state
        for state in ScheduleState.objects.select_related("schedule").filter(job__in=names)
    }
    stats = latest_run_ids(names, since=now - timedelta(hours=24))
    wanted = {
        row[key]
        for row in stats.values()
        for key in ("last_id", "last_outcome_id", "last_success_id")
    }
    wanted.discard(None)
    runs = JobRun.objects.in_bulk(wanted) if wanted else {}
    running: dict[str, list[JobRun]] = {}
    for run in JobRun.objects.filter(job__in=names, status=RunStatus.RUNNING).order_by(
        "started_at"
    ):
        running.setdefault(run.job, []).append(run)

    rows = []
    for spec in specs:
        state = states.get(spec.name)
        row = stats.get(spec.name, {})
        rows.append(
            JobHealth(
                spec=spec,
                state=state,
                last_run=runs.get(row.get("last_id")),
                last_outcome=runs.get(row.get("last_outcome_id")),
                last_success_at=getattr(runs.get(row.get("last_success_id")), "finished_at", None),
                failures_24h=row.get("failures_24h", 0),
                running=running.get(spec.name, []),
                overdue=state is not None and is_overdue(state.schedule, state, now=now),
                ever_ran=row.get("last_real_id") is not None,
            )
        )
    return Overview(jobs=rows, now=now)


def latest_run_ids(names: list[str], *, since: datetime) -> dict[str, dict[str, int | None]]:
    """Per job: its latest run, latest real run, latest real outcome, latest
    real success (by finish) and real failures since `since`: one query of
    correlated index lookups (the list indexes on job and created_at, and
    job/status/finished_at), not a GROUP BY over the whole history, and one
    count over the window since `since`, grouped by job."""
    if not names:
        return {}
    table = connection.ops.quote_name(JobRun._meta.db_table)
    newest = "ORDER BY r.created_at DESC, r.id DESC LIMIT 1"
    outcomes = ", ".join(f"'{s.value}'" for s in OUTCOME_STATUSES)
    real = "r.job = %s AND r.dry_run = %s"
    # One SELECT per job, its name a value rather than a column of an outer
    # query: PostgreSQL then plans each lookup for that job (its statistics
    # say a job with no runs has none), not for "any job".
    block = f"""
        SELECT %s,
            (SELECT r.id FROM {table} r WHERE r.job = %s {newest}),
            (SELECT r.id FROM {table} r WHERE {real} {newest}),
            (SELECT r.id FROM {table} r WHERE {real} AND r.status IN ({outcomes}) {newest}),
            (SELECT r.id FROM {table} r WHERE {real} AND r.status = '{RunStatus.SUCCEEDED.value}'
                AND r.finished_at IS NOT NULL ORDER BY r.finished_at DESC LIMIT 1)"""
    sql = " UNION ALL ".join([block] * len(names))
    params: list[object] = []
    for name in names:
        params += [name, name, name, False, name, False, name, False]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # A window scan once, rather than once per job.
    failures = dict(
        JobRun.objects.filter(
            job__in=names, dry_run=False, status__in=FAILING_STATUSES, created_at__gte=since
        )
        .values("job")
        .annotate(n=Count("id"))
        .values_list("job", "n")
    )
    keys = ("last_id", "last_real_id", "last_outcome_id", "last_success_id")
    return {
        job: {**dict(zip(keys, values, strict=True)), "failures_24h": failures.get(job, 0)}
        for job, *values in rows
    }

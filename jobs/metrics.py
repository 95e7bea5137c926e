"""`/metrics`: django-prometheus's process metrics plus job metrics.

Job metrics are not counted in memory: they are read from the database at
scrape time, so every web process on every machine reports the same, right
numbers however many workers ran the jobs. A scrape costs the same whatever
the history: runs finished before the watermark (the start of the hour, ten
minutes back) are folded once into `JobRunTotals` (a handful of rows per
job), and only runs finished since are aggregated live, through an index on
`finished_at`. Deleting old runs (retention) therefore never lowers a
counter.

Every job metric is labelled `job_name` (Prometheus adds its own `job`
label, the scrape target's, and would rename a `job` label of ours to
`exported_job`). Dry runs are left out of every job metric: they change
nothing, so they must not make a job look productive or busy.
`jobs_runs_total` counts finished runs (succeeded, partial, failed, skipped)
and is 0, not absent, for a job with none, so `increase()` sees the first one;
in-flight runs are the `jobs_running` and `jobs_queued` gauges.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs.cron import next_runs
from jobs.models import (
    ClusterHeartbeat,
    JobRun,
    JobRunTotals,
    MetricsWatermark,
    RunStatus,
    ScheduleState,
)
from jobs.registry import all_jobs
from jobs.schedules import is_overdue

logger = logging.getLogger(__name__)

LABEL = "job_name"
OUTCOMES = ("processed", "succeeded", "failed", "skipped")
FINISHED = (
    RunStatus.SUCCEEDED,
    RunStatus.PARTIAL,
    RunStatus.FAILED,
    RunStatus.SKIPPED,
    RunStatus.CANCELED,
)
IN_FLIGHT = (RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.INTERRUPTED)
# Upper bounds in seconds: jobs take from a second to a couple of hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# A run is folded into the totals once it finished this long before an hour's
# start: a run whose finish is committed a little late is still counted live.
FOLD_LAG = timedelta(minutes=10)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MetricSource = Callable[[], Iterable[Metric]]
_sources: list[MetricSource] = globals().get("_sources", [])  # kept across importlib.reload


def register_metric_source(source: MetricSource) -> None:
    """Add an app's own metrics to /metrics (e.g. the outbox's backlog); the
    platform knows no business domain, so apps hand it a function. Idempotent."""
    if source not in _sources:
        _sources.append(source)


def _families() -> dict[str, Metric]:
    return {
        "runs": CounterMetricFamily(
            "jobs_runs",
            "Finished job runs (dry runs excluded), by job and status.",
            labels=[LABEL, "status"],
        ),
        "items": CounterMetricFamily(
            "jobs_items",
            "Items handled by finished job runs (dry runs excluded), by outcome.",
            labels=[LABEL, "outcome"],
        ),
        "duration": HistogramMetricFamily(
            "jobs_run_duration_seconds",
            "Duration of finished runs (dry runs excluded), started to finished.",
            labels=[LABEL],
        ),
        "last_success": GaugeMetricFamily(
            "jobs_last_success_timestamp_seconds",
            "Unix time the job's last succeeded run (not a dry run) finished.",
            labels=[LABEL],
        ),
        "overdue": GaugeMetricFamily(
            "jobs_schedule_overdue",
            "1 when the job's active schedule missed its next slot by more than the grace.",
            labels=[LABEL],
        ),
        "interval": GaugeMetricFamily(
            "jobs_schedule_interval_seconds",
            "Seconds between the next two slots of the job's active schedule.",
            labels=[LABEL],
        ),
        "running": GaugeMetricFamily(
            "jobs_running", "Runs in status running (dry runs excluded).", labels=[LABEL]
        ),
        "queued": GaugeMetricFamily(
            "jobs_queued",
            "Runs waiting for a worker (dry runs excluded): queued, or interrupted by a "
            "cluster's shutdown and waiting to be continued.",
            labels=[LABEL],
        ),
        "heartbeat": GaugeMetricFamily(
            "jobs_cluster_heartbeat_timestamp_seconds",
            "Unix time a cluster last executed its heartbeat task.",
            labels=["cluster"],
        ),
        "scrape_error": GaugeMetricFamily(
            "jobs_metrics_scrape_error",
            "1 when the job metrics could not be read from the database.",
        ),
    }


def _duration_aggregates() -> dict[str, Any]:
    """Timed count, duration sum and one conditional COUNT per bucket, as
    Django expressions, so the SQL is right on SQLite and PostgreSQL."""
    timed = Q(started_at__isnull=False, finished_at__isnull=False)
    return {
        "timed": Count("pk", filter=timed),
        "duration_sum": Sum("duration", filter=timed),
        **{
            f"le_{i}": Count("pk", filter=timed & Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        },
    }


def _finished_rows(since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
    """Per (job, status): runs, item sums, durations and last finish of the
    finished, real runs with `since <= finished_at < until`."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    runs = JobRun.objects.filter(dry_run=False, status__in=FINISHED, finished_at__gte=since)
    if until is not None:
        runs = runs.filter(finished_at__lt=until)
    return list(
        runs.order_by()
        .annotate(duration=duration)
        .values("job", "status")
        .annotate(
            runs=Count("pk"),
            last_finished_at=Max("finished_at"),
            **{outcome: Sum(outcome) for outcome in OUTCOMES},
            **_duration_aggregates(),
        )
    )


def fold_target(now: datetime) -> datetime:
    return (now - FOLD_LAG).replace(minute=0, second=0, microsecond=0)


def fold_finished_runs(*, now: datetime | None = None) -> datetime:
    """Fold runs finished before this hour's fold target into JobRunTotals
    (once: the watermark row is locked while folding). Returns the watermark.

    The first fold after deploying takes in the whole history once."""
    target = fold_target(now or timezone.now())
    with transaction.atomic():
        mark = MetricsWatermark.objects.select_for_update().filter(pk=1).first()
        if mark is None:
            mark, _ = MetricsWatermark.objects.get_or_create(pk=1, defaults={"folded_until": EPOCH})
            mark = MetricsWatermark.objects.select_for_update().get(pk=1)
        if mark.folded_until >= target:
            return mark.folded_until
        for row in _finished_rows(mark.folded_until, target):
            totals, _ = JobRunTotals.objects.select_for_update().get_or_create(
                job=row["job"], status=row["status"]
            )
            totals.runs += row["runs"]
            for outcome in OUTCOMES:
                setattr(totals, outcome, getattr(totals, outcome) + (row[outcome] or 0))
            totals.timed += row["timed"]
            totals.duration_seconds += (row["duration_sum"] or timedelta(0)).total_seconds()
            buckets = list(totals.duration_buckets) or [0] * len(DURATION_BUCKETS)
            totals.duration_buckets = [
                buckets[i] + row[f"le_{i}"] for i in range(len(DURATION_BUCKETS))
            ]
            if row["last_finished_at"] and (
                totals.last_finished_at is None or row["last_finished_at"] > totals.last_finished_at
            ):
                totals.last_finished_at = row["last_finished_at"]
            totals.save()
        mark.folded_until = target
        mark.save(update_fields=["folded_until"])
    return target


class _JobSums:
    """One job's numbers, folded and live added together."""

    def __init__(self) -> None:
        self.runs = dict.fromkeys((s.value for s in FINISHED), 0)
        self.items = dict.fromkeys(OUTCOMES, 0)
        self.timed = 0
        self.duration = 0.0
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.last_success: datetime | None = None

    def add(self, status: str, row: Any, *, live: bool) -> None:
        get = row.get if isinstance(row, dict) else lambda k, d=None: getattr(row, k, d)
        self.runs[status] = self.runs.get(status, 0) + get("runs")
        for outcome in OUTCOMES:
            self.items[outcome] += get(outcome) or 0
        self.timed += get("timed") or 0
        if live:
            self.duration += (get("duration_sum") or timedelta(0)).total_seconds()
            bucket_counts = [get(f"le_{i}") for i in range(len(DURATION_BUCKETS))]
        else:
            self.duration += get("duration_seconds") or 0.0
            bucket_counts = list(get("duration_buckets") or []) or [0] * len(DURATION_BUCKETS)
        self.buckets = [a + b for a, b in zip(self.buckets, bucket_counts, strict=True)]
        finished = get("last_finished_at")
        if status == RunStatus.SUCCEEDED and finished:
            self.last_success = max(filter(None, (self.last_success, finished)))


class JobsCollector(Collector):
    """Job metrics computed from the database on every scrape."""

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry detect duplicates without a query at
        # registration time (import time, maybe before the database exists).
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        try:
            if not self._collect(families):
                fold_finished_runs()
                self._collect(families)
        except Exception:
            logger.exception("job metrics could not be read")
            families = {"scrape_error": _families()["scrape_error"]}
            families["scrape_error"].add_metric([], 1)
        else:
            families["scrape_error"].add_metric([], 0)
        yield from families.values()

    def _collect(self, families: dict[str, Metric]) -> bool:
        """Fill the families; False (nothing filled) when the totals are due a
        fold first: once an hour, and on the first scrape after deploying."""
        with transaction.atomic():
            if connection.vendor == "postgresql" and not _in_outer_transaction():
                # One snapshot for the totals and the live rows, so a fold
                # committed by another process mid-scrape is counted once.
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            mark = MetricsWatermark.objects.filter(pk=1).first()
            since = mark.folded_until if mark else EPOCH
            if since < fold_target(timezone.now()):
                return False  # the caller folds first, then reads again
            jobs: dict[str, _JobSums] = {spec.name: _JobSums() for spec in all_jobs()}
            for totals in JobRunTotals.objects.all():
                jobs.setdefault(totals.job, _JobSums()).add(totals.status, totals, live=False)
            for row in _finished_rows(since):
                jobs.setdefault(row["job"], _JobSums()).add(row["status"], row, live=True)
            in_flight = (
                JobRun.objects.filter(dry_run=False, status__in=IN_FLIGHT)
                .order_by()
                .values("job", "status")
                .annotate(n=Count("pk"))
            )
            running = dict.fromkeys(jobs, 0)
            queued = dict.fromkeys(jobs, 0)
            for row in in_flight:
                target = running if row["status"] == RunStatus.RUNNING else queued
                target[row["job"]] = target.get(row["job"], 0) + row["n"]
            self._add_jobs(families, jobs, running, queued)
            self._collect_schedules(families)
            for beat in ClusterHeartbeat.objects.order_by("cluster"):
                families["heartbeat"].add_metric([beat.cluster], beat.seen_at.timestamp())
        return True

    @staticmethod
    def _add_jobs(
        families: dict[str, Metric],
        jobs: dict[str, _JobSums],
        running: dict[str, int],
        queued: dict[str, int],
    ) -> None:
        for job in sorted(jobs):
            sums = jobs[job]
            for status, n in sums.runs.items():
                families["runs"].add_metric([job, status], n)
            for outcome, n in sums.items.items():
                families["items"].add_metric([job, outcome], n)
            if sums.timed:
                histogram = [
                    (str(float(bound)), sums.buckets[i]) for i, bound in enumerate(DURATION_BUCKETS)
                ]
                histogram.append(("+Inf", sums.timed))
                families["duration"].add_metric([job], buckets=histogram, sum_value=sums.duration)
            if sums.last_success:
                families["last_success"].add_metric([job], sums.last_success.timestamp())
        for job in sorted(running):
            families["running"].add_metric([job], running[job])
        for job in sorted(queued):
            families["queued"].add_metric([job], queued[job])

    @staticmethod
    def _collect_schedules(families: dict[str, Metric]) -> None:
        """Same rule as /health/ (`is_overdue`); one query, few rows."""
        now = timezone.now()
        for state in ScheduleState.objects.select_related("schedule").order_by("job"):
            schedule = state.schedule
            families["overdue"].add_metric(
                [state.job], 1 if is_overdue(schedule, state, now=now) else 0
            )
            if state.paused or schedule.repeats == 0 or not schedule.cron:
                continue
            try:
                first, second = next_runs(schedule.cron, after=now, count=2)
            except Exception:  # a cron staff broke: overdue tells the story
                continue
            families["interval"].add_metric([state.job], (second - first).total_seconds())


def _in_outer_transaction() -> bool:
    """True inside a transaction opened before this scrape's (tests): the
    isolation level can only be set as a transaction's first statement."""
    return len(connection.savepoint_ids) > 0


def register_collector(registry: CollectorRegistry = REGISTRY) -> JobsCollector | None:
    """Register the jobs collector once per registry. Safe to call again, and
    safe when this module is imported twice (autoreload, a second import
    path): a collector whose metric names are already registered is skipped."""
    collector = JobsCollector()
    try:
        registry.register(collector)
    except ValueError:  # "Duplicated timeseries": already registered
        return None
    return collector


class _SourcesCollector(Collector):
    """The apps' registered metric sources (register_metric_source)."""

    def collect(self) -> Iterator[Metric]:
        for source in _sources:
            try:
                yield from source()
            except Exception:
                logger.exception("metrics of %s could not be read", source.__qualname__)


register_collector()
if not getattr(REGISTRY, "jobs_sources_registered", False):  # once, even if reloaded
    REGISTRY.register(_SourcesCollector())
    REGISTRY.jobs_sources_registered = True  # type: ignore[attr-defined]


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition: process metrics and job metrics."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        register_collector(registry)
        registry.register(_SourcesCollector())
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

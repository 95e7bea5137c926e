"""`/metrics`: django-prometheus's process metrics plus job metrics.

Job metrics are not counted in memory: a collector reads them from JobRun and
the schedules at scrape time, so every web process on every machine reports
the same, right numbers however many workers ran the jobs. A scrape costs
three set-based queries (GROUP BY job, status; GROUP BY job; the schedules),
whatever the number of runs.

Dry runs count in `jobs_runs_total` but not in items, durations or last
success: they change nothing, so they must not make a job look productive.
Deleting old JobRun rows lowers the counters; Prometheus reads that as a
counter reset, which `rate()` and `increase()` handle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from datetime import timedelta

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

from jobs.models import JobRun, RunStatus, ScheduleState
from jobs.registry import all_jobs
from jobs.schedules import is_overdue

logger = logging.getLogger(__name__)

OUTCOMES = ("processed", "succeeded", "failed", "skipped")
# Upper bounds in seconds: jobs take from a second to a couple of hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def _families() -> dict[str, Metric]:
    return {
        "runs": CounterMetricFamily(
            "jobs_runs", "Job runs recorded, by job and status.", labels=["job", "status"]
        ),
        "items": CounterMetricFamily(
            "jobs_items",
            "Items handled by job runs (dry runs excluded), by outcome.",
            labels=["job", "outcome"],
        ),
        "duration": HistogramMetricFamily(
            "jobs_run_duration_seconds",
            "Duration of finished runs (dry runs excluded), started to finished.",
            labels=["job"],
        ),
        "last_success": GaugeMetricFamily(
            "jobs_last_success_timestamp_seconds",
            "Unix time the job's last succeeded run (not a dry run) finished.",
            labels=["job"],
        ),
        "overdue": GaugeMetricFamily(
            "jobs_schedule_overdue",
            "1 when the job's active schedule missed its next slot by more than the grace.",
            labels=["job"],
        ),
        "running": GaugeMetricFamily(
            "jobs_running", "Runs in status running, by job.", labels=["job"]
        ),
        "queued": GaugeMetricFamily(
            "jobs_queued", "Runs waiting in status queued, by job.", labels=["job"]
        ),
        "scrape_error": GaugeMetricFamily(
            "jobs_metrics_scrape_error",
            "1 when the job metrics could not be read from the database.",
        ),
    }


class JobsCollector(Collector):
    """Job metrics computed from the database on every scrape."""

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry detect duplicates without a query at
        # registration time (import time, maybe before the database exists).
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        try:
            self._collect_runs(families)
            self._collect_durations(families)
            self._collect_schedules(families)
        except Exception:
            logger.exception("job metrics could not be read")
            families = {"scrape_error": _families()["scrape_error"]}
            families["scrape_error"].add_metric([], 1)
        else:
            families["scrape_error"].add_metric([], 0)
        yield from families.values()

    def _collect_runs(self, families: dict[str, Metric]) -> None:
        live = Q(dry_run=False)
        rows = (
            JobRun.objects.order_by()
            .values("job", "status")
            .annotate(
                runs=Count("pk"),
                **{outcome: Sum(outcome, filter=live) for outcome in OUTCOMES},
            )
        )
        items: dict[str, dict[str, int]] = {}
        running = dict.fromkeys((spec.name for spec in all_jobs()), 0)
        queued = dict(running)
        for row in rows:
            job = row["job"]
            families["runs"].add_metric([job, row["status"]], row["runs"])
            sums = items.setdefault(job, dict.fromkeys(OUTCOMES, 0))
            for outcome in OUTCOMES:
                sums[outcome] += row[outcome] or 0
            running.setdefault(job, 0)
            queued.setdefault(job, 0)
            if row["status"] == RunStatus.RUNNING:
                running[job] = row["runs"]
            elif row["status"] == RunStatus.QUEUED:
                queued[job] = row["runs"]
        for job, sums in sorted(items.items()):
            for outcome, value in sums.items():
                families["items"].add_metric([job, outcome], value)
        for job in sorted(running):
            families["running"].add_metric([job], running[job])
            families["queued"].add_metric([job], queued[job])

    def _collect_durations(self, families: dict[str, Metric]) -> None:
        """One GROUP BY with a conditional COUNT per bucket. The duration is a
        Django expression, so the SQL is right on SQLite and PostgreSQL."""
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        timed = Q(started_at__isnull=False, finished_at__isnull=False)
        buckets = {
            f"le_{i}": Count("pk", filter=timed & Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        rows = (
            JobRun.objects.filter(dry_run=False)
            .order_by()
            .annotate(duration=duration)
            .values("job")
            .annotate(
                timed_count=Count("pk", filter=timed),
                duration_sum=Sum("duration", filter=timed),
                last_success=Max("finished_at", filter=Q(status=RunStatus.SUCCEEDED)),
                **buckets,
            )
        )
        for row in sorted(rows, key=lambda r: r["job"]):
            job = row["job"]
            if row["timed_count"]:
                total = row["duration_sum"] or timedelta(0)
                histogram = [
                    (str(float(bound)), row[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)
                ]
                histogram.append(("+Inf", row["timed_count"]))
                families["duration"].add_metric(
                    [job], buckets=histogram, sum_value=total.total_seconds()
                )
            if row["last_success"]:
                families["last_success"].add_metric([job], row["last_success"].timestamp())

    def _collect_schedules(self, families: dict[str, Metric]) -> None:
        """Same rule as /health/ (`is_overdue`); one query, few rows."""
        now = timezone.now()
        states = ScheduleState.objects.select_related("schedule").order_by("job")
        for state in states:
            overdue = is_overdue(state.schedule, state, now=now)
            families["overdue"].add_metric([state.job], 1 if overdue else 0)


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


register_collector()


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition: process metrics and job metrics."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        register_collector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

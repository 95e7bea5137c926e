"""Reads behind the console's charts and panels: runs per hour by outcome,
durations, items processed, queue depth and the clusters.

Each is a fixed number of bounded queries over the recent window (the
`created_at` index), whatever the size of the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.status import Stat

from jobs.models import ClusterHeartbeat, JobRun, RunStatus
from jobs.registry import QUEUES

OUTCOMES = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)
DURATION_SAMPLE = 20_000  # finished runs read for the percentiles, newest first


@dataclass
class Activity:
    """Per hour of the window: runs by outcome and items processed."""

    hours: list[datetime]
    by_outcome: dict[str, list[int]]
    processed: list[int]
    durations: list[dict[str, Any]] = field(default_factory=list)


def activity(
    *, job: str = "", hours: int = 24, now: datetime | None = None, with_durations: bool = False
) -> Activity:
    """Real (not dry) runs of the last `hours` hours, of one job or all."""
    now = (now or timezone.now()).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    slots = [start + timedelta(hours=i) for i in range(hours)]
    index = {slot: i for i, slot in enumerate(slots)}
    runs = JobRun.objects.filter(created_at__gte=start, dry_run=False)
    if job:
        runs = runs.filter(job=job)
    by_outcome = {status.value: [0] * hours for status in OUTCOMES}
    processed = [0] * hours
    rows = (
        runs.annotate(hour=TruncHour("created_at"))
        .values("hour", "status")
        .annotate(n=Count("id"), items=Sum("processed"))
        .order_by()
    )
    for row in rows:
        i = index.get(row["hour"])
        if i is None:
            continue
        if row["status"] in by_outcome:
            by_outcome[row["status"]][i] += row["n"]
        processed[i] += row["items"] or 0
    return Activity(
        hours=slots,
        by_outcome=by_outcome,
        processed=processed,
        durations=durations(runs) if with_durations else [],
    )


def durations(runs) -> list[dict[str, Any]]:
    """p50 and p95 run time per job, from the window's finished runs."""
    per_job: dict[str, list[float]] = {}
    finished = (
        runs.filter(status__in=OUTCOMES, started_at__isnull=False, finished_at__isnull=False)
        .order_by("-created_at")
        .values_list("job", "started_at", "finished_at")[:DURATION_SAMPLE]
    )
    for name, started, ended in finished:
        per_job.setdefault(name, []).append((ended - started).total_seconds())
    result = []
    for name in sorted(per_job):
        values = sorted(per_job[name])
        result.append(
            {
                "job": name,
                "runs": len(values),
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
            }
        )
    return result


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def default_cluster() -> str:
    """The cluster serving queues JOBS_QUEUE_CLUSTERS does not name."""
    return str(settings.Q_CLUSTER.get("name", "default"))


def queue_depths() -> list[dict[str, Any]]:
    """Per queue: runs recorded as queued, and tasks waiting in its cluster's broker."""
    queued = dict(
        JobRun.objects.filter(status=RunStatus.QUEUED)
        .values_list("queue")
        .annotate(n=Count("id"))
        .order_by()
    )
    depths: dict[str, int | None] = {}
    rows = []
    for queue in QUEUES:
        cluster = settings.JOBS_QUEUE_CLUSTERS.get(queue) or default_cluster()
        if cluster not in depths:
            depths[cluster] = _broker_depth(cluster)
        rows.append(
            {
                "queue": queue,
                "cluster": cluster,
                "queued_runs": queued.get(queue, 0),
                "broker_tasks": depths[cluster],
            }
        )
    return rows


def _broker_depth(cluster: str) -> int | None:
    try:
        return get_broker(list_key=cluster).queue_size()
    except Exception:  # an unreachable broker is shown as unknown, not a 500
        return None


def clusters(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each cluster: name, host, workers, the queues it serves, last heartbeat."""
    now = now or timezone.now()
    serves: dict[str, list[str]] = {}
    for queue in QUEUES:
        serves.setdefault(settings.JOBS_QUEUE_CLUSTERS.get(queue) or default_cluster(), []).append(
            queue
        )
    try:
        stats = Stat.get_all()
    except Exception:
        stats = []
    workers_by_host: dict[str, int] = {}
    for stat in stats:
        workers_by_host[stat.host] = workers_by_host.get(stat.host, 0) + len(stat.workers or [])
    rows = []
    for beat in ClusterHeartbeat.objects.order_by("cluster")[:50]:
        rows.append(
            {
                "name": beat.cluster,
                "host": beat.host,
                "workers": workers_by_host.get(beat.host),
                "queues": serves.get(beat.cluster, []),
                "last_heartbeat": beat.seen_at,
                "age_seconds": int((now - beat.seen_at).total_seconds()),
            }
        )
    return rows

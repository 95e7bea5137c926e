"""/metrics: django-prometheus output plus job metrics read from JobRun rows."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from jobs import metrics
from jobs.models import JobRun, RunStatus
from jobs.schedules import sync_schedules
from tests.factories import JobRunFactory

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


def scrape(client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def timed_run(job="tests.sample", seconds=1.0, **fields):
    return JobRunFactory(
        job=job, started_at=T0, finished_at=T0 + timedelta(seconds=seconds), **fields
    )


def test_metrics_include_django_prometheus_output(client):
    client.get("/health/")
    text = client.get("/metrics").content.decode()

    assert "django_http_requests_total_by_method_total" in text
    assert "jobs_metrics_scrape_error 0.0" in text


def test_runs_total_counts_finished_real_runs(client):
    timed_run(status=RunStatus.SUCCEEDED)
    timed_run(status=RunStatus.SUCCEEDED)
    timed_run(status=RunStatus.FAILED)
    timed_run(status=RunStatus.SUCCEEDED, dry_run=True)
    timed_run(job="tests.other", status=RunStatus.PARTIAL)
    JobRunFactory(job="tests.other", status=RunStatus.QUEUED, started_at=None, finished_at=None)

    samples = scrape(client)

    expected = (
        JobRun.objects.filter(dry_run=False, finished_at__isnull=False)
        .values("job", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    assert len(expected) == 3
    for row in expected:
        got = value(samples, "jobs_runs_total", job_name=row["job"], status=row["status"])
        assert got == row["n"]
    assert value(samples, "jobs_runs_total", job_name="tests.sample", status="succeeded") == 2
    # A status with no run yet is 0, not absent, so increase() sees the first one.
    assert value(samples, "jobs_runs_total", job_name="tests.other", status="failed") == 0
    assert value(samples, "jobs_queued", job_name="tests.other") == 1
    assert not any(labels and labels[0][0] == "job" for _, labels in samples)


def test_items_total_sums_counts_of_real_runs_only(client):
    timed_run(processed=10, succeeded=8, failed=2, status=RunStatus.PARTIAL)
    timed_run(processed=5, succeeded=4, skipped=1)
    timed_run(processed=1000, succeeded=1000, dry_run=True)

    samples = scrape(client)

    sums = JobRun.objects.filter(dry_run=False).aggregate(
        processed=Sum("processed"),
        succeeded=Sum("succeeded"),
        failed=Sum("failed"),
        skipped=Sum("skipped"),
    )
    assert sums == {"processed": 15, "succeeded": 12, "failed": 2, "skipped": 1}
    for outcome, total in sums.items():
        assert value(samples, "jobs_items_total", job_name="tests.sample", outcome=outcome) == total


def test_run_duration_histogram_from_started_and_finished(client):
    timed_run(seconds=0.5)
    timed_run(seconds=10, status=RunStatus.FAILED)
    timed_run(seconds=100, status=RunStatus.PARTIAL)
    timed_run(seconds=9999, dry_run=True)
    JobRunFactory(status=RunStatus.RUNNING, started_at=T0, finished_at=None)
    JobRunFactory(status=RunStatus.SKIPPED, started_at=None, finished_at=T0)

    samples = scrape(client)

    def bucket(le):
        return value(samples, "jobs_run_duration_seconds_bucket", job_name="tests.sample", le=le)

    assert bucket("1.0") == 1
    assert bucket("5.0") == 1
    assert bucket("15.0") == 2
    assert bucket("60.0") == 2
    assert bucket("120.0") == 3
    assert bucket("+Inf") == 3
    assert value(samples, "jobs_run_duration_seconds_count", job_name="tests.sample") == 3
    assert value(
        samples, "jobs_run_duration_seconds_sum", job_name="tests.sample"
    ) == pytest.approx(110.5)


def test_last_success_is_newest_succeeded_real_run(client):
    timed_run(seconds=1)
    newest = timed_run(seconds=60)
    JobRunFactory(status=RunStatus.FAILED, finished_at=T0 + timedelta(hours=2))
    JobRunFactory(dry_run=True, finished_at=T0 + timedelta(hours=3))
    JobRunFactory(job="tests.never", status=RunStatus.FAILED)

    samples = scrape(client)

    last = value(samples, "jobs_last_success_timestamp_seconds", job_name="tests.sample")
    assert last == pytest.approx(newest.finished_at.timestamp())
    assert value(samples, "jobs_last_success_timestamp_seconds", job_name="tests.never") is None


def test_running_and_queued_gauges_cover_every_registered_job(client, register_job):
    @register_job("tests.idle")
    def idle(ctx):
        pass

    JobRunFactory(status=RunStatus.RUNNING, finished_at=None)
    JobRunFactory(status=RunStatus.QUEUED, started_at=None, finished_at=None)
    JobRunFactory(status=RunStatus.QUEUED, started_at=None, finished_at=None, tenant="t2")

    samples = scrape(client)

    assert value(samples, "jobs_running", job_name="tests.sample") == 1
    assert value(samples, "jobs_queued", job_name="tests.sample") == 2
    assert value(samples, "jobs_running", job_name="tests.idle") == 0
    JobRunFactory(status=RunStatus.RUNNING, finished_at=None, dry_run=True, tenant="t3")
    assert value(scrape(client), "jobs_running", job_name="tests.sample") == 1  # dry runs left out


def test_schedule_overdue_is_0_or_1_per_scheduled_job(client, register_job):
    @register_job("tests.on_time", schedule="*/5 * * * *")
    def on_time(ctx):
        pass

    @register_job("tests.late", schedule="0 * * * *")
    def late(ctx):
        pass

    sync_schedules()
    Schedule.objects.filter(name="tests.late").update(
        next_run=timezone.now() - timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS + 60)
    )

    samples = scrape(client)

    assert value(samples, "jobs_schedule_overdue", job_name="tests.on_time") == 0
    assert value(samples, "jobs_schedule_overdue", job_name="tests.late") == 1
    assert value(samples, "jobs_schedule_overdue", job_name="jobs.cluster_heartbeat") is None


def test_scrape_cost_does_not_grow_with_the_number_of_runs(client):
    def queries_per_scrape() -> int:
        with CaptureQueriesContext(connection) as captured:
            list(metrics.JobsCollector().collect())
        return len(captured)

    timed_run()
    queries_per_scrape()  # the first scrape folds the history into the totals
    few = queries_per_scrape()
    for i in range(30):
        timed_run(job=f"tests.job{i % 5}", status=RunStatus.FAILED if i % 3 else "succeeded")
        JobRunFactory(job=f"tests.job{i % 5}", status=RunStatus.SUCCEEDED)  # live, this hour
    many = queries_per_scrape()

    assert few == many <= 10  # savepoints included


def test_database_error_is_reported_as_a_metric_not_a_500(client, monkeypatch):
    def broken(self, families):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(metrics.JobsCollector, "_collect", broken)

    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert "jobs_metrics_scrape_error 1.0" in text
    assert "jobs_runs_total{" not in text


def test_collector_is_registered_once_even_if_module_is_imported_again(client):
    timed_run()

    assert metrics.register_collector() is None
    importlib.reload(metrics)
    text = client.get("/metrics").content.decode()

    assert text.count("# TYPE jobs_runs_total counter") == 1
    assert text.count('jobs_runs_total{job_name="tests.sample",status="succeeded"}') == 1


def test_registering_on_a_fresh_registry_does_not_query_the_database():
    registry = CollectorRegistry()

    with CaptureQueriesContext(connection) as captured:
        assert metrics.register_collector(registry) is not None
        assert metrics.register_collector(registry) is None

    assert len(captured) == 0


def test_folded_and_live_runs_add_up_and_deleting_old_runs_lowers_no_counter(client):
    old = [timed_run(processed=2, succeeded=2) for _ in range(3)]  # a day ago: folded
    JobRunFactory(processed=1, succeeded=1)  # just now: read live
    first = scrape(client)
    assert value(first, "jobs_runs_total", job_name="tests.sample", status="succeeded") == 4
    assert value(first, "jobs_items_total", job_name="tests.sample", outcome="processed") == 7
    assert metrics.JobRunTotals.objects.get(job="tests.sample", status="succeeded").runs == 3

    JobRun.objects.filter(pk__in=[r.pk for r in old]).delete()  # retention
    again = scrape(client)
    assert value(again, "jobs_runs_total", job_name="tests.sample", status="succeeded") == 4
    assert value(again, "jobs_run_duration_seconds_count", job_name="tests.sample") == 4


def test_the_next_hours_fold_moves_live_runs_into_the_totals_once(client, time_machine):
    time_machine.move_to(T0 + timedelta(days=1, minutes=30), tick=False)
    JobRunFactory(started_at=timezone.now(), finished_at=timezone.now())
    before = scrape(client)
    time_machine.move_to(T0 + timedelta(days=1, hours=2), tick=False)
    after = scrape(client)
    again = scrape(client)
    for samples in (before, after, again):
        assert value(samples, "jobs_runs_total", job_name="tests.sample", status="succeeded") == 1
    assert metrics.JobRunTotals.objects.get(job="tests.sample", status="succeeded").runs == 1


def test_schedule_interval_and_cluster_heartbeats_are_exported(client, register_job):
    from jobs.models import ClusterHeartbeat

    @register_job("tests.every_five", schedule="*/5 * * * *")
    def every_five(ctx):
        pass

    sync_schedules()
    ClusterHeartbeat.objects.create(cluster="backoffice", seen_at=T0)
    samples = scrape(client)
    assert value(samples, "jobs_schedule_interval_seconds", job_name="tests.every_five") == 300
    assert value(
        samples, "jobs_cluster_heartbeat_timestamp_seconds", cluster="backoffice"
    ) == pytest.approx(T0.timestamp())


def test_the_outbox_backlog_is_exported(client):
    from tests.factories import OutboundEmailFactory

    OutboundEmailFactory(next_attempt_at=timezone.now() - timedelta(minutes=10))
    OutboundEmailFactory(next_attempt_at=timezone.now() + timedelta(minutes=10))
    samples = scrape(client)
    assert value(samples, "notifications_outbox_emails", status="queued") == 2
    assert value(samples, "notifications_outbox_emails", status="sending") == 0
    assert value(samples, "notifications_outbox_oldest_due_age_seconds") == pytest.approx(
        600, abs=5
    )

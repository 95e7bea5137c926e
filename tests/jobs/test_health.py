"""/health/: database, broker, cluster heartbeat and overdue schedules."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from django_q.models import Schedule

from jobs import health
from jobs.models import ClusterHeartbeat
from jobs.schedule_models import CustomSchedule
from jobs.schedules import pause, sync_schedules

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_heartbeat():
    return ClusterHeartbeat.objects.create(cluster="backoffice", seen_at=timezone.now())


@pytest.fixture
def scheduled_job(register_job):
    """A throwaway job with a schedule, synced into a django-q2 Schedule."""

    @register_job("tests.tick", schedule="*/5 * * * *")
    def tick(ctx):
        pass

    sync_schedules()
    return Schedule.objects.get(name="tests.tick")


def make_overdue(schedule: Schedule) -> None:
    late = timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS + 600)
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - late)


def test_health_is_ok_with_recent_heartbeat_and_no_overdue_schedule(
    client, fresh_heartbeat, scheduled_job
):
    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "cluster", "schedules"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["cluster"]["cluster"] == "backoffice"
    assert body["checks"]["schedules"]["checked"] >= 1  # tests.tick, plus any app job
    assert body["background_jobs_enabled"] is True


def test_health_needs_no_token(client, fresh_heartbeat):
    assert client.get("/health/").status_code == 200


def test_health_without_any_heartbeat_is_503(client):
    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["cluster"]["ok"] is False
    assert "no cluster heartbeat" in body["checks"]["cluster"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_health_with_stale_heartbeat_is_503(client):
    max_age = settings.JOBS_CLUSTER_HEARTBEAT_MAX_AGE_SECONDS
    ClusterHeartbeat.objects.create(
        cluster="backoffice", seen_at=timezone.now() - timedelta(seconds=max_age + 60)
    )

    response = client.get("/health/")

    assert response.status_code == 503
    cluster = response.json()["checks"]["cluster"]
    assert cluster["ok"] is False
    assert cluster["age_seconds"] > max_age
    assert "old" in cluster["error"]


def test_newest_of_several_cluster_heartbeats_counts(client):
    ClusterHeartbeat.objects.create(cluster="old", seen_at=timezone.now() - timedelta(days=1))
    ClusterHeartbeat.objects.create(cluster="critical", seen_at=timezone.now())

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["checks"]["cluster"]["cluster"] == "critical"


def test_heartbeat_task_makes_the_cluster_check_pass(client):
    from jobs.heartbeat import beat

    beat()

    assert client.get("/health/").json()["checks"]["cluster"]["ok"] is True


def test_overdue_schedule_is_503_and_named(client, fresh_heartbeat, scheduled_job):
    make_overdue(scheduled_job)

    response = client.get("/health/")

    assert response.status_code == 503
    schedules = response.json()["checks"]["schedules"]
    assert schedules["ok"] is False
    assert [item["job"] for item in schedules["overdue"]] == ["tests.tick"]
    assert schedules["overdue"][0]["late_seconds"] > settings.JOBS_OVERDUE_GRACE_SECONDS
    assert "tests.tick" in schedules["error"]


def test_a_staff_schedule_no_cluster_fired_is_overdue_too(client, fresh_heartbeat, scheduled_job):
    late = timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS + 600)
    own = CustomSchedule.objects.create(
        name="acme ticks", job="tests.tick", cron="0 * * * *", next_run=timezone.now() - late
    )
    CustomSchedule.objects.create(
        name="paused ticks",
        job="tests.tick",
        cron="0 * * * *",
        next_run=timezone.now() - late,
        paused=True,
        pause_reason="supplier outage",
    )

    response = client.get("/health/")

    assert response.status_code == 503
    overdue = response.json()["checks"]["schedules"]["overdue"]
    assert [(item["job"], item.get("schedule")) for item in overdue] == [("tests.tick", own.name)]


def test_schedule_late_within_grace_is_not_overdue(client, fresh_heartbeat, scheduled_job):
    Schedule.objects.filter(pk=scheduled_job.pk).update(
        next_run=timezone.now() - timedelta(seconds=settings.JOBS_OVERDUE_GRACE_SECONDS // 2)
    )

    assert client.get("/health/").status_code == 200


def test_paused_schedule_is_never_overdue(client, fresh_heartbeat, scheduled_job):
    make_overdue(scheduled_job)
    pause("tests.tick", actor="ops", reason="supplier outage")

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["checks"]["schedules"]["paused"] == ["tests.tick"]


@override_settings(BACKGROUND_JOBS_ENABLED=False)
def test_health_reports_background_jobs_disabled(client, fresh_heartbeat):
    body = client.get("/health/").json()

    assert body["background_jobs_enabled"] is False
    assert body["status"] == "ok"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_broker_is_503_without_details(client, fresh_heartbeat, monkeypatch):
    monkeypatch.setattr(health.Conf, "REDIS", f"redis://:hunter2@127.0.0.1:{free_port()}/0")

    response = client.get("/health/")

    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker == {"ok": False, "error": "check raised ConnectionError"}
    assert "hunter2" not in response.content.decode()


def test_a_broker_that_accepts_but_never_answers_fails_in_time_without_a_thread(
    client, fresh_heartbeat, monkeypatch
):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads
    monkeypatch.setattr(health, "BROKER_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(health.Conf, "REDIS", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    threads_before = threading.active_count()
    try:
        started = time.monotonic()
        response = client.get("/health/ready")
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert response.status_code == 503
    assert "no answer within 0.3 s" in response.json()["checks"]["broker"]["error"]
    assert elapsed < 3
    assert threading.active_count() == threads_before


def test_broker_ping_false_fails(client, fresh_heartbeat, monkeypatch):
    class DeadBroker:
        def ping(self):
            return False

    monkeypatch.setattr(health.Conf, "REDIS", None)
    monkeypatch.setattr(health, "get_broker", DeadBroker)

    assert client.get("/health/").status_code == 503


# --- live and ready ------------------------------------------------------------------


def test_live_answers_200_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_database_and_broker_only_so_a_stopped_cluster_keeps_it_up(
    client, scheduled_job
):
    make_overdue(scheduled_job)  # and no heartbeat at all: the cluster is down

    ready = client.get("/health/ready")
    full = client.get("/health/")

    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"database", "broker"}
    assert full.status_code == 503


def test_ready_fails_when_the_database_does_not_answer(client, monkeypatch):
    def broken(now):
        raise RuntimeError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", broken)

    response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["database"]["ok"] is False


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_live_and_ready_are_get_only_and_not_cached(client, path):
    assert client.post(path).status_code == 405
    assert "no-cache" in client.get(path)["Cache-Control"]


def test_a_check_that_raises_is_a_failed_check_not_a_500(client, fresh_heartbeat, monkeypatch):
    def broken(now):
        raise RuntimeError("password=s3cret")

    monkeypatch.setitem(health.CHECKS, "database", broken)

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == {"ok": False, "error": "check raised RuntimeError"}
    assert body["checks"]["cluster"]["ok"] is True
    assert "s3cret" not in response.content.decode()


def test_health_output_holds_no_secrets(client, fresh_heartbeat, scheduled_job):
    text = client.get("/health/").content.decode()

    for secret in (settings.SECRET_KEY, settings.JOBS_API_TOKEN):
        assert secret not in text
    password = settings.DATABASES["default"].get("PASSWORD")
    if password:
        assert password not in text
    if settings.REDIS_URL:
        assert settings.REDIS_URL not in text


def test_health_answers_json_405_to_post(client):
    response = client.post("/health/")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"]


def test_health_is_not_cached(client, fresh_heartbeat):
    assert "no-cache" in client.get("/health/")["Cache-Control"]

"""Schedules finer than django-q2's 30 s scheduler cadence fire at every slot."""

import itertools
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q import cluster
from django_q.models import Schedule

from jobs import cluster as jobs_cluster
from jobs import scheduler_tick
from jobs.schedules import pause, resume, set_cron, sync_schedules, upcoming

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_ten_seconds(register_job):
    @register_job("tests.every_ten_seconds", schedule="*/10 * * * * *")
    def job(ctx):
        ctx.count(processed=1)

    sync_schedules()
    return Schedule.objects.get(name="tests.every_ten_seconds")


def on_ten_second_grid(runs):
    return all(r.second % 10 == 0 and r.microsecond == 0 for r in runs) and all(
        b - a == timedelta(seconds=10) for a, b in itertools.pairwise(runs)
    )


def test_upcoming_runs_of_a_seconds_schedule_keep_its_seconds(every_ten_seconds):
    # The stored form is croniter's (seconds last); it must not be read as
    # seconds-first again.
    assert every_ten_seconds.cron == "* * * * * */10"
    assert on_ten_second_grid(upcoming(every_ten_seconds))


def test_resume_of_a_seconds_schedule_sets_the_next_slot_on_its_grid(every_ten_seconds):
    pause("tests.every_ten_seconds", actor="alice", reason="drill")
    resume("tests.every_ten_seconds", actor="alice")
    next_run = Schedule.objects.get(pk=every_ten_seconds.pk).next_run
    assert next_run.second % 10 == 0
    assert timezone.now() < next_run <= timezone.now() + timedelta(seconds=10)


def test_staff_edit_to_a_seconds_cron_sets_the_next_slot_on_its_grid(every_ten_seconds):
    set_cron("tests.every_ten_seconds", "*/15 * * * * *", actor="alice")
    next_run = Schedule.objects.get(pk=every_ten_seconds.pk).next_run
    assert next_run.second % 15 == 0
    assert timezone.now() < next_run <= timezone.now() + timedelta(seconds=15)


def test_ticker_runs_the_scheduler_every_interval_until_stopped(monkeypatch):
    calls = []
    monkeypatch.setattr("django_q.scheduler.scheduler", lambda broker=None: calls.append(broker))
    stop = threading.Event()
    ticker = scheduler_tick.SchedulerTicker(interval=0.05, stop_event=stop, broker="b")
    ticker.start()
    time.sleep(0.4)
    stop.set()
    ticker.join(timeout=2)
    assert not ticker.is_alive()
    assert len(calls) >= 3
    assert set(calls) == {"b"}


def test_ticker_survives_a_failing_tick(monkeypatch):
    def boom(broker=None):
        raise RuntimeError("database went away")

    monkeypatch.setattr("django_q.scheduler.scheduler", boom)
    stop = threading.Event()
    ticker = scheduler_tick.SchedulerTicker(interval=0.05, stop_event=stop)
    ticker.start()
    time.sleep(0.3)
    assert ticker.is_alive() and ticker.ticks >= 2
    stop.set()
    ticker.join(timeout=2)


def test_install_makes_qcluster_start_graceful_sentinels_and_workers(monkeypatch):
    monkeypatch.setattr(cluster, "Sentinel", cluster.Sentinel)
    monkeypatch.setattr(cluster, "worker", cluster.worker)
    jobs_cluster.install()  # ready() already did; the originals are restored here
    patched = cluster.Sentinel
    assert patched.jobs_graceful and patched.__name__ == "GracefulSentinel"
    assert cluster.worker is jobs_cluster.graceful_worker
    jobs_cluster.install()  # idempotent: not wrapped twice
    assert cluster.Sentinel is patched


def test_slots_are_polled_every_second_by_default():
    from django.conf import settings

    assert settings.JOBS_SCHEDULER_POLL_SECONDS == 1


def test_ticker_sweeps_for_lost_runs_even_with_the_poll_off(monkeypatch):
    sweeps = []
    monkeypatch.setattr("jobs.enqueue.requeue_lost_runs", lambda: sweeps.append(1))
    monkeypatch.setattr("django_q.scheduler.scheduler", lambda broker=None: pytest.fail())
    stop = threading.Event()
    ticker = scheduler_tick.SchedulerTicker(interval=0, stop_event=stop, sweep_interval=0.05)
    ticker.start()
    time.sleep(0.4)
    stop.set()
    ticker.join(timeout=2)
    assert ticker.sweeps >= 2 and len(sweeps) == ticker.sweeps


def test_a_seconds_schedule_without_the_poll_gets_a_system_check_warning(settings, register_job):
    from jobs.checks import sub_minute_schedules_need_the_poll

    @register_job("tests.every_five_seconds", schedule="*/5 * * * * *")
    def job(ctx):
        pass

    settings.JOBS_SCHEDULER_POLL_SECONDS = 0
    warnings = sub_minute_schedules_need_the_poll()
    assert [w.id for w in warnings] == ["jobs.W001"]
    assert "tests.every_five_seconds" in warnings[0].msg
    settings.JOBS_SCHEDULER_POLL_SECONDS = 1
    assert sub_minute_schedules_need_the_poll() == []


def test_minute_schedules_need_no_poll(settings):
    from jobs.checks import sub_minute_schedules_need_the_poll

    settings.JOBS_SCHEDULER_POLL_SECONDS = 0
    # The registered jobs: 5-field crons, or 6-field with seconds 0 (stored as 5 fields).
    assert sub_minute_schedules_need_the_poll() == []

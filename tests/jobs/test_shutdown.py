"""A job still running when its cluster's shutdown grace is over is interrupted,
recorded `interrupted`, and continued once from its checkpoint by the next
cluster; tasks a stopping cluster had not started go back to the broker; and
runs whose task was lost are sent again.

The sentinel's SIGUSR1 is `shutdown.request_interrupt`, called here where the
signal would land (the whole cluster is drilled in reliability/test_shutdown.py).
"""

from __future__ import annotations

import queue
import threading
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from jobs import cluster, shutdown
from jobs.enqueue import enqueue_run, requeue_lost_runs
from jobs.fanout import claim_chunk, process_chunk
from jobs.models import ChunkStatus, JobAction, JobChunk, JobRun, RunStatus, Trigger
from jobs.runner import execute_queued, run_job
from tests.conftest import run_queued_tasks
from tests.factories import JobRunFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

STEPS = "tests.shutdown_steps"


@pytest.fixture(autouse=True)
def fresh_interrupt_state():
    shutdown.reset()
    yield
    shutdown.reset()


@pytest.fixture
def steps_job(register_job):
    """Five steps, a checkpoint after each; the cluster's grace ends during step 3
    of the first attempt."""
    done: list[tuple[int, int]] = []  # (attempt, step)

    @register_job(STEPS)
    def steps(ctx):
        start = (ctx.resume_state or {}).get("next", 0)
        attempt = ctx.run.attempts
        for step in range(start, 5):
            if attempt == 1 and step == 3:
                shutdown.request_interrupt()  # SIGUSR1 from the sentinel, here
            done.append((attempt, step))
            ctx.count(processed=1, succeeded=1)
            ctx.checkpoint({"next": step + 1})
        return {"resumed_from": start}

    return done


def test_a_job_past_the_grace_is_recorded_interrupted_and_handed_to_the_next_cluster(steps_job):
    with pytest.raises(shutdown.ShutdownInterrupt):
        run_job(STEPS, trigger=Trigger.CLI)

    run = JobRun.objects.get(job=STEPS)
    assert run.status == RunStatus.INTERRUPTED
    assert run.error.startswith("interrupted:")
    assert run.finished_at is None
    assert run.checkpoint == {"next": 3}
    assert run.enqueued_at is not None  # its continuation is in the broker
    assert JobAction.objects.filter(run=run, action="interrupted", actor="cluster").exists()
    assert steps_job == [(1, 0), (1, 1), (1, 2)]


def test_the_next_cluster_continues_an_interrupted_run_from_its_checkpoint_once(steps_job):
    with pytest.raises(shutdown.ShutdownInterrupt):
        run_job(STEPS, trigger=Trigger.CLI)
    shutdown.reset()  # the next cluster's worker is a new process

    assert run_queued_tasks() == 1
    run = JobRun.objects.get(job=STEPS)
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempts == 2
    assert run.summary == {"resumed_from": 3}
    assert steps_job == [(1, 0), (1, 1), (1, 2), (2, 3), (2, 4)]  # no step twice
    execute_queued(run.pk)  # the same task delivered again
    assert JobRun.objects.get(pk=run.pk).attempts == 2
    assert len(steps_job) == 5


def test_an_interrupt_before_the_job_code_starts_interrupts_it_at_its_start(steps_job):
    shutdown.request_interrupt()  # landed in the platform's bookkeeping: only noted
    with pytest.raises(shutdown.ShutdownInterrupt):
        run_job(STEPS, trigger=Trigger.CLI)
    assert JobRun.objects.get(job=STEPS).status == RunStatus.INTERRUPTED
    assert steps_job == []


def test_an_interrupted_run_waits_while_another_run_of_its_job_is_running(steps_job):
    with pytest.raises(shutdown.ShutdownInterrupt):
        run_job(STEPS, trigger=Trigger.CLI)
    shutdown.reset()
    holder = JobRunFactory(job=STEPS, status=RunStatus.RUNNING, heartbeat_at=timezone.now())
    interrupted = JobRun.objects.get(job=STEPS, status=RunStatus.INTERRUPTED)

    execute_queued(interrupted.pk)
    assert JobRun.objects.get(pk=interrupted.pk).status == RunStatus.INTERRUPTED  # not skipped
    JobRun.objects.filter(pk=holder.pk).update(status=RunStatus.SUCCEEDED)
    execute_queued(interrupted.pk)
    assert JobRun.objects.get(pk=interrupted.pk).status == RunStatus.SUCCEEDED


def test_an_interrupted_chunk_goes_back_to_pending_without_using_up_an_attempt(steps_job):
    run = JobRunFactory(job=STEPS, status=RunStatus.RUNNING)
    JobChunk.objects.create(run=run, index=0, items=[1, 2, 3])
    chunk, worker = claim_chunk(run.pk)

    def interrupted_midway(ctx, items):
        shutdown.request_interrupt()

    with pytest.raises(shutdown.ShutdownInterrupt):
        process_chunk(chunk, worker=worker, func=interrupted_midway, lease_seconds=300)
    chunk.refresh_from_db()
    assert chunk.status == ChunkStatus.PENDING
    assert chunk.attempts == 0 and chunk.lease_until is None and chunk.claimed_by == ""


def task(name: str) -> dict:
    return {"id": name, "name": name, "func": "math.floor", "args": (1.5,), "kwargs": {}}


def test_a_stopping_clusters_worker_hands_its_next_task_back_and_stops():
    local: queue.Queue = queue.Queue()
    stopping = threading.Event()
    gated = cluster._GatedQueue(local, stopping)
    local.put(task("first"))
    assert gated.get()["name"] == "first"  # not stopping: worked as usual

    local.put(task("second"))
    local.put(task("third"))
    stopping.set()
    assert gated.get() == cluster.STOP
    broker = get_broker()
    assert broker.queue_size() == 2
    handed_back = sorted(SignedPackage.loads(p)["name"] for _, p in broker.dequeue() or [])
    if len(handed_back) < 2:  # the ORM broker dequeues one at a time
        handed_back += [SignedPackage.loads(p)["name"] for _, p in broker.dequeue() or []]
    assert sorted(handed_back) == ["second", "third"]


def age(run: JobRun, seconds: float) -> None:
    JobRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(seconds=seconds),
        enqueued_at=timezone.now() - timedelta(seconds=seconds),
    )


def test_a_queued_run_whose_task_was_lost_is_sent_again_once(settings, register_job):
    register_job("tests.accepted")(lambda ctx: {"ran": True})
    settings.JOBS_QUEUED_LOST_AFTER_SECONDS = 300
    run, _ = enqueue_run("tests.accepted", trigger=Trigger.API, triggered_by="api")
    get_broker().purge_queue()  # the broker restarted without persistence
    assert requeue_lost_runs() == []  # not yet: it may just be waiting for a worker
    age(run, 301)

    assert requeue_lost_runs() == [run.pk]
    assert requeue_lost_runs() == []  # sent again once, not on every sweep
    action = JobAction.objects.get(run=run, action="re-enqueued")
    assert action.actor == "platform" and action.detail["waited_seconds"] >= 300
    assert run_queued_tasks() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.summary == {"ran": True}


def test_finished_and_running_runs_are_never_sent_again(settings):
    settings.JOBS_QUEUED_LOST_AFTER_SECONDS = 60
    for status in (RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED):
        age(JobRunFactory(status=status), 3600)
    assert requeue_lost_runs() == []


def test_a_lost_continuation_of_an_interrupted_run_is_sent_again(settings, steps_job):
    settings.JOBS_QUEUED_LOST_AFTER_SECONDS = 60
    with pytest.raises(shutdown.ShutdownInterrupt):
        run_job(STEPS, trigger=Trigger.CLI)
    shutdown.reset()
    get_broker().purge_queue()
    run = JobRun.objects.get(job=STEPS)
    age(run, 61)
    assert requeue_lost_runs() == [run.pk]
    run_queued_tasks()
    assert JobRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    assert len(steps_job) == 5


def test_the_admin_shows_a_re_enqueue_on_the_runs_actions(settings, register_job, admin_client):
    register_job("tests.accepted_admin")(lambda ctx: {})
    settings.JOBS_QUEUED_LOST_AFTER_SECONDS = 60
    run, _ = enqueue_run("tests.accepted_admin", trigger=Trigger.API, triggered_by="api")
    get_broker().purge_queue()
    age(run, 61)
    requeue_lost_runs()
    page = admin_client.get("/admin/jobs/jobaction/", {"q": "tests.accepted_admin"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "re-enqueued" in text and f"#{run.pk}" in text

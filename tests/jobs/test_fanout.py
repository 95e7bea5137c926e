"""Fan-out: a run's items in chunks over cluster workers, gathered into one JobRun."""

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker

from jobs import run_log
from jobs.fanout import (
    MAX_CHUNK_ATTEMPTS,
    claim_chunk,
    merge_summaries,
    process_chunk,
    run_chunks,
)
from jobs.models import ChunkStatus, JobChunk, JobItemFailure, JobRun, JobRunLog, RunStatus
from jobs.runner import run_job
from tests.factories import JobRunFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 11, 1, tzinfo=UTC)
TARGET = f"{__name__}.square_chunk"
SEEN: list[int] = []


def square_chunk(ctx, items):
    """A chunk function: 'fails' item 13, counts the rest, sums squares."""
    squares = 0
    for item in items:
        SEEN.append(item)
        if item == 13:
            ctx.item_failed(item, ValueError("unlucky"))
            continue
        squares += item * item
        ctx.count(processed=1, succeeded=1)
    return {"squares": squares, "by_parity": {"even": sum(1 for i in items if i % 2 == 0)}}


def logging_chunk(ctx, items):
    logging.getLogger("tests.chunks").info("chunk of %s", items)
    return square_chunk(ctx, items)


def exploding_chunk(ctx, items):
    if 5 in items:
        raise RuntimeError("boom")
    return square_chunk(ctx, items)


@pytest.fixture(autouse=True)
def _clear_seen():
    SEEN.clear()


@pytest.fixture
def fanned_job(register_job):
    def declare(target=TARGET, items=range(1, 21), chunk_size=6):
        @register_job("tests.fanned", queue="low")
        def fanned(ctx):
            result = ctx.fan_out(target, items=list(items), chunk_size=chunk_size)
            return {
                **result.summary,
                "chunks": result.chunks,
                "failed_chunks": result.failed_chunks,
            }

        return "tests.fanned"

    return declare


def test_items_are_split_into_chunks_and_their_counts_and_summaries_are_gathered(fanned_job):
    run = run_job(fanned_job(), slot=SLOT)

    assert run.status == RunStatus.PARTIAL  # item 13 failed
    assert (run.processed, run.succeeded, run.failed) == (19, 19, 1)
    assert run.summary["squares"] == sum(i * i for i in range(1, 21)) - 169
    assert run.summary["by_parity"] == {"even": 10}
    assert run.summary["chunks"] == 4
    assert (run.progress_done, run.progress_total) == (20, 20)
    assert sorted(SEEN) == list(range(1, 21))
    chunks = list(JobChunk.objects.filter(run=run).order_by("index"))
    assert [c.items for c in chunks] == [
        list(range(1, 7)),
        list(range(7, 13)),
        list(range(13, 19)),
        [19, 20],
    ]
    assert {c.status for c in chunks} == {ChunkStatus.DONE}
    failure = JobItemFailure.objects.get(run=run)
    assert (failure.item_key, failure.error) == ("13", "unlucky")


def test_one_task_per_chunk_is_enqueued_and_surplus_tasks_find_nothing_left(
    fanned_job, drain_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = run_job(fanned_job(), slot=SLOT)
    assert get_broker().queue_size() == 4
    assert drain_queue() == 4  # the parent did every chunk while waiting; tasks do nothing
    assert sorted(SEEN) == list(range(1, 21))
    run.refresh_from_db()
    assert run.processed == 19


def test_chunk_tasks_hold_their_chunks_for_the_configured_lease(
    fanned_job, settings, django_capture_on_commit_callbacks
):
    from django_q.signing import SignedPackage

    settings.JOBS_CHUNK_LEASE_SECONDS = 77
    with django_capture_on_commit_callbacks(execute=True):
        run_job(fanned_job(), slot=SLOT)

    broker = get_broker()
    tasks = [SignedPackage.loads(payload) for _, payload in broker.dequeue() or []]
    assert tasks and {task["args"][2] for task in tasks} == {77}


def running_run_with_chunks(*parts, job="tests.fanned"):
    run = JobRunFactory(job=job, status=RunStatus.RUNNING, finished_at=None)
    JobChunk.objects.bulk_create(
        [JobChunk(run=run, index=i, items=list(p)) for i, p in enumerate(parts)]
    )
    return run


def test_a_chunk_task_claims_and_processes_chunks_of_a_running_run(fanned_job):
    fanned_job()
    run = running_run_with_chunks([1, 2], [3, 4], [13])
    assert run_chunks(run.pk, TARGET) == 3
    assert sorted(SEEN) == [1, 2, 3, 4, 13]
    assert set(JobChunk.objects.values_list("status", flat=True)) == {ChunkStatus.DONE}
    assert JobItemFailure.objects.get(run=run).item_key == "13"  # on the parent run


def test_a_chunk_workers_lines_join_the_runs_own_log(fanned_job):
    fanned_job()
    run = running_run_with_chunks([1, 2], [3])
    parent_line = {"at": "2000-01-01T00:00:00.000+00:00", "level": "INFO", "logger": "x"}
    run_log.append_lines(run.pk, [{**parent_line, "message": "fanned out into 2 chunks"}])

    run_chunks(run.pk, f"{__name__}.logging_chunk")

    messages = [line["message"] for line in JobRunLog.objects.get(run=run).lines]
    assert messages == ["fanned out into 2 chunks", "chunk of [1, 2]", "chunk of [3]"]


def test_chunks_of_a_finished_run_are_not_claimed(fanned_job):
    fanned_job()
    run = running_run_with_chunks([1, 2])
    JobRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    assert run_chunks(run.pk, TARGET) == 0
    assert SEEN == []


def test_a_chunk_held_under_a_live_lease_is_not_taken_but_an_expired_one_is(fanned_job):
    fanned_job()
    run = running_run_with_chunks([1], [2])
    now = timezone.now()
    JobChunk.objects.filter(index=0).update(
        status=ChunkStatus.RUNNING, claimed_by="other", lease_until=now + timedelta(minutes=5)
    )
    JobChunk.objects.filter(index=1).update(
        status=ChunkStatus.RUNNING, claimed_by="dead", lease_until=now - timedelta(seconds=1)
    )
    chunk, worker = claim_chunk(run.pk)
    assert chunk.index == 1 and chunk.claimed_by == worker and chunk.attempts == 1
    assert claim_chunk(run.pk) is None


def test_a_run_continued_after_its_worker_died_redoes_only_unfinished_chunks(fanned_job):
    """The run was taken over (same JobRun): done chunks are kept, the one whose
    worker died is reclaimed once its lease ran out."""
    name = fanned_job(items=range(1, 7), chunk_size=2)
    run = JobRun.objects.create(job=name, trigger="schedule", slot=SLOT)
    JobChunk.objects.bulk_create(
        [
            JobChunk(
                run=run,
                index=0,
                items=[1, 2],
                status=ChunkStatus.DONE,
                processed=2,
                succeeded=2,
                summary={"squares": 5},
            ),
            JobChunk(
                run=run,
                index=1,
                items=[3, 4],
                status=ChunkStatus.RUNNING,
                claimed_by="killed",
                attempts=1,
                lease_until=timezone.now() - timedelta(seconds=1),
            ),
            JobChunk(run=run, index=2, items=[5, 6]),
        ]
    )
    from jobs.registry import get_job
    from jobs.runner import _execute

    JobRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=timezone.now())
    run.refresh_from_db()
    run = _execute(get_job(name), run)

    assert sorted(SEEN) == [3, 4, 5, 6]
    assert run.status == RunStatus.SUCCEEDED
    assert run.processed == 6
    assert run.summary["squares"] == 1 + 4 + 9 + 16 + 25 + 36
    assert JobChunk.objects.get(index=1).attempts == 2


def test_a_failing_chunk_is_recorded_and_the_others_go_on(fanned_job):
    run = run_job(fanned_job(target=f"{__name__}.exploding_chunk", chunk_size=5), slot=SLOT)
    assert run.status == RunStatus.PARTIAL
    assert run.summary["failed_chunks"] == [0]
    assert sorted(SEEN) == list(range(6, 21))
    failure = JobItemFailure.objects.get(run=run, item_key="chunk:0")
    assert "boom" in failure.error
    assert "boom" in JobChunk.objects.get(run=run, index=0).error


def test_a_chunk_that_keeps_killing_its_worker_is_given_up(fanned_job):
    fanned_job()
    run = running_run_with_chunks([1, 2])
    JobChunk.objects.update(
        status=ChunkStatus.RUNNING,
        attempts=MAX_CHUNK_ATTEMPTS,
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    chunk, worker = claim_chunk(run.pk)
    process_chunk(chunk, worker=worker, func=square_chunk, lease_seconds=60)
    chunk.refresh_from_db()
    assert chunk.status == ChunkStatus.FAILED and "given up" in chunk.error
    assert SEEN == []
    assert JobItemFailure.objects.get(run=run).item_key == "chunk:0"


def test_a_dry_run_processes_every_chunk_here_and_stores_no_chunk(fanned_job):
    run = run_job(fanned_job(), slot=SLOT, dry_run=True)
    assert run.summary["chunks"] == 4
    assert run.processed == 19
    assert sorted(SEEN) == list(range(1, 21))
    assert not JobChunk.objects.exists()
    assert get_broker().queue_size() == 0


def test_summaries_merge_numbers_dicts_and_lists():
    merged = merge_summaries(
        {"n": 1, "by": {"EUR": 100}, "errors": ["a"], "name": "first"},
        {"n": 2, "by": {"EUR": 50, "USD": 7}, "errors": ["b"], "name": "second", "new": True},
    )
    assert merged == {
        "n": 3,
        "by": {"EUR": 150, "USD": 7},
        "errors": ["a", "b"],
        "name": "first",
        "new": True,
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_claim_the_same_chunk(fanned_job):
    fanned_job()
    run = running_run_with_chunks(*([i] for i in range(40)))
    claimed: list[int] = []
    lock = threading.Lock()

    def worker():
        try:
            while (claim := claim_chunk(run.pk)) is not None:
                with lock:
                    claimed.append(claim[0].index)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(40))


def test_a_working_chunk_renews_its_lease(fanned_job):
    from jobs.fanout import ChunkContext

    fanned_job()
    run = running_run_with_chunks([1])
    chunk, worker = claim_chunk(run.pk, lease_seconds=30)
    chunk_ctx = ChunkContext(
        run=run,
        tenant=None,
        params={},
        index=0,
        chunk_id=chunk.pk,
        worker=worker,
        lease_seconds=30,
    )
    chunk_ctx._renewed_at -= 11  # more than a third of the lease has passed
    chunk_ctx.count(processed=1)
    renewed = JobChunk.objects.get(pk=chunk.pk).lease_until
    assert renewed > chunk.lease_until


def test_a_run_waiting_on_a_chunk_held_elsewhere_fails_when_its_time_is_up(register_job):
    @register_job("tests.waiting")
    def waiting(ctx):
        JobChunk.objects.create(
            run=ctx.run,
            index=0,
            items=[1],
            status=ChunkStatus.RUNNING,
            claimed_by="other",
            lease_until=timezone.now() + timedelta(minutes=5),
        )
        ctx.fan_out(TARGET, items=[1], chunk_size=1, wait_timeout=0.3)

    run = run_job("tests.waiting", slot=SLOT)
    assert run.status == RunStatus.FAILED
    assert "FanOutTimeout" in run.error and "still unfinished" in run.error

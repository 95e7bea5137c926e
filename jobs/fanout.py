"""Fan a run's items out over cluster workers in chunks, and gather what they did.

For jobs whose items each need slow work or an outside call (a PDF, Stripe,
an email): the job calls `ctx.fan_out("app.module.process_chunk", items=...,
chunk_size=N)`. That

1. stores the items as `JobChunk` rows, once per run (a run continued after a
   crash finds its chunks and reuses them, so done chunks are not redone);
2. enqueues one django-q2 task per pending chunk on the job's cluster;
3. claims pending chunks itself while it waits, so a run finishes even when
   no worker is free (or none runs, as in tests), and waits for chunks held
   by other workers;
4. adds the chunks' counts to the run and merges their summaries.

Claiming is one short transaction (`SELECT ... FOR UPDATE SKIP LOCKED` on
PostgreSQL, the write lock on SQLite) that gives the chunk to one worker for
a lease, which the worker renews as it goes; a chunk whose worker died is
claimed again once its lease ran out, and given up after MAX_CHUNK_ATTEMPTS
claims so a chunk that kills its worker cannot stall the run forever.

The chunk function gets a `ChunkContext` (a JobContext for the parent run):
`item_failed` records on the parent run, `count` adds to the chunk's counts,
and its return value (a JSON dict) is the chunk's summary. A dry run runs the
chunks in this process, one after another, and stores no chunk.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs import run_log, shutdown
from jobs.context import COUNT_FIELDS, JobContext, RunCanceled
from jobs.logging import job_log_context
from jobs.models import ChunkStatus, JobChunk, JobRun, RunStatus
from jobs.params import coerce_params
from jobs.registry import get_job
from jobs.tenants import resolve

if TYPE_CHECKING:
    from jobs.registry import JobSpec

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300  # a chunk context's own default; fan_out reads the setting
MAX_CHUNK_ATTEMPTS = 3
POLL_SECONDS = 0.25
LIST_MERGE_LIMIT = 100  # list values in merged summaries keep at most this many entries
CHUNK_TASK = "jobs.fanout.run_chunks"


class FanOutTimeout(RuntimeError):
    """Chunks were still unfinished when the run's time was up."""


class ChunkContext(JobContext):
    """What a chunk function is handed: the parent run's context, scoped to one chunk.

    Failures go on the parent run; counts are the chunk's own (the parent adds
    them up once, so nothing is counted twice when a chunk is redone).
    """

    def __init__(
        self,
        *,
        run: JobRun,
        tenant: Any,
        params: dict[str, Any],
        index: int,
        chunk_id: int | None = None,
        worker: str = "",
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
    ) -> None:
        super().__init__(run=run, tenant=tenant, params=params)
        self.index = index
        self._chunk_id = chunk_id
        self._worker = worker
        self._lease_seconds = lease_seconds
        self._renewed_at = time.monotonic()

    def keep_alive(self) -> None:
        """Renew the chunk's lease (cheap: writes at most every third of the lease)."""
        if self._chunk_id is None:
            return
        now = time.monotonic()
        if now - self._renewed_at < self._lease_seconds / 3:
            return
        self._renewed_at = now
        JobChunk.objects.filter(pk=self._chunk_id, claimed_by=self._worker).update(
            lease_until=timezone.now() + timedelta(seconds=self._lease_seconds)
        )

    def progress(self, done: int, total: int | None = None) -> None:
        self.keep_alive()

    def count(self, **n: int) -> None:
        super().count(**n)
        self.keep_alive()

    def item_failed(self, key: Any, error: Any) -> None:
        super().item_failed(key, error)
        self.keep_alive()

    def checkpoint(self, state: Any) -> None:
        raise RuntimeError("chunks do not checkpoint: a chunk is redone whole or not at all")


@dataclass
class FanOutResult:
    chunks: int = 0
    failed_chunks: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_FIELDS, 0))
    summary: dict[str, Any] = field(default_factory=dict)


def merge_summaries(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add one chunk's summary to another: numbers add up, dicts merge the same
    way, lists are joined (up to LIST_MERGE_LIMIT), anything else keeps the first."""
    for key, value in other.items():
        if key not in into:
            into[key] = _copy(value)
            continue
        mine = into[key]
        if isinstance(mine, dict) and isinstance(value, dict):
            merge_summaries(mine, value)
        elif _is_number(mine) and _is_number(value):
            into[key] = mine + value
        elif isinstance(mine, list) and isinstance(value, list):
            into[key] = (mine + value)[:LIST_MERGE_LIMIT]
    return into


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value[:LIST_MERGE_LIMIT])
    return value


def split(items: Sequence[Any], chunk_size: int) -> list[list[Any]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be 1 or more, got {chunk_size}")
    return [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]


def fan_out(
    ctx: JobContext,
    target: str,
    *,
    items: Sequence[Any],
    chunk_size: int,
    lease_seconds: int | None = None,
    wait_timeout: float | None = None,
    enqueue: bool = True,
) -> FanOutResult:
    """Process `items` in chunks with `target(chunk_ctx, items) -> summary dict`,
    on cluster workers and in this process; returns the merged result and adds
    its counts to `ctx`. Items must be JSON values (ids, keys).

    `enqueue=False` hands no task to the cluster: this process does every
    chunk (what a dry run always does). Raises FanOutTimeout when chunks held
    by other workers are unfinished after `wait_timeout` seconds (default: the
    job's timeout). A chunk whose worker died is claimed again once its lease
    (`lease_seconds`, default JOBS_CHUNK_LEASE_SECONDS) runs out.
    """
    if lease_seconds is None:
        lease_seconds = settings.JOBS_CHUNK_LEASE_SECONDS
    func = import_string(target)
    parts = split(items, chunk_size)
    if ctx.dry_run:
        result = _run_in_process(ctx, func, parts)
    else:
        spec = get_job(ctx.job)
        chunk_ids = _ensure_chunks(ctx.run, parts)
        if enqueue:
            _enqueue_pending(spec, ctx.run, target, lease_seconds)
        result = _work_and_wait(
            ctx,
            func,
            lease_seconds=lease_seconds,
            wait_timeout=spec.timeout if wait_timeout is None else wait_timeout,
            total_items=len(items),
        )
        result.chunks = len(chunk_ids)
    ctx.count(**result.counts)
    return result


def _run_in_process(
    ctx: JobContext, func: Callable[..., Any], parts: list[list[Any]]
) -> FanOutResult:
    result = FanOutResult(chunks=len(parts))
    done = 0
    for index, part in enumerate(parts):
        if ctx.cancelled():  # a chunk boundary: the run keeps what its chunks did
            ctx.count(**result.counts)
            ctx.raise_if_cancelled()
        chunk_ctx = ChunkContext(run=ctx.run, tenant=ctx.tenant, params=ctx.params, index=index)
        summary = func(chunk_ctx, part) or {}
        for name in COUNT_FIELDS:
            result.counts[name] += chunk_ctx.counts[name]
        merge_summaries(result.summary, summary)
        done += len(part)
        ctx.progress(done, sum(len(p) for p in parts))
    return result


def _ensure_chunks(run: JobRun, parts: list[list[Any]]) -> list[int]:
    """The run's chunks: made now, or (a continued run) the ones made before;
    a rerun of a canceled run takes over its chunks, done ones as done."""
    existing = list(JobChunk.objects.filter(run=run).values_list("pk", flat=True))
    if existing:
        logger.info("run #%s continues with its %s chunks", run.pk, len(existing))
        return existing
    previous = run.rerun_of
    if previous is not None and previous.status == RunStatus.CANCELED:
        old = list(JobChunk.objects.filter(run=previous).order_by("index"))
        if old:
            with transaction.atomic():
                made = JobChunk.objects.bulk_create([_continued(run, chunk) for chunk in old])
            logger.info("run #%s continues the chunks of canceled run #%s", run.pk, previous.pk)
            return [c.pk for c in made]
    with transaction.atomic():
        made = JobChunk.objects.bulk_create(
            [JobChunk(run=run, index=i, items=part) for i, part in enumerate(parts)]
        )
    return [c.pk for c in made]


def _continued(run: JobRun, chunk: JobChunk) -> JobChunk:
    """A canceled run's chunk carried into its rerun: done stays done."""
    if chunk.status == ChunkStatus.DONE:
        return JobChunk(
            run=run,
            index=chunk.index,
            items=chunk.items,
            status=ChunkStatus.DONE,
            summary=chunk.summary,
            processed=chunk.processed,
            succeeded=chunk.succeeded,
            failed=chunk.failed,
            skipped=chunk.skipped,
            started_at=chunk.started_at,
            finished_at=chunk.finished_at,
        )
    return JobChunk(run=run, index=chunk.index, items=chunk.items)


def _enqueue_pending(spec: JobSpec, run: JobRun, target: str, lease_seconds: int) -> None:
    """One task per chunk still to do; a task that finds its chunk taken takes
    another or ends, so surplus tasks (after a resume, say) are harmless."""
    from django_q.tasks import async_task

    from jobs.enqueue import q_options

    pending = list(
        JobChunk.objects.filter(run=run)
        .exclude(status__in=[ChunkStatus.DONE, ChunkStatus.FAILED])
        .values_list("index", flat=True)
    )

    def send() -> None:
        for index in pending:
            try:
                async_task(
                    CHUNK_TASK,
                    run.pk,
                    target,
                    lease_seconds,
                    task_name=f"{spec.name}#{run.pk}:chunk{index}",
                    q_options=q_options(spec),
                )
            except Exception:
                logger.exception("could not enqueue chunks of run #%s; doing them here", run.pk)
                return

    transaction.on_commit(send)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_chunk(
    run_id: int, *, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> tuple[JobChunk, str] | None:
    """Take the next pending chunk (or one whose lease ran out) of a running run.

    Returns the chunk and the claim's worker name, or None when there is none.
    """
    now = timezone.now()
    claimable = Q(status=ChunkStatus.PENDING) | Q(status=ChunkStatus.RUNNING, lease_until__lt=now)
    worker = _worker_name()
    with transaction.atomic():
        chunk = (
            JobChunk.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                claimable,
                run_id=run_id,
                run__status=RunStatus.RUNNING,
                run__cancel_requested_at__isnull=True,  # asked to stop: no new chunk
            )
            .order_by("index")
            .first()
        )
        if chunk is None:
            return None
        claimed = (
            JobChunk.objects.filter(pk=chunk.pk)
            .filter(claimable)
            .update(
                status=ChunkStatus.RUNNING,
                claimed_by=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=F("attempts") + 1,
                started_at=now,
            )
        )
    if not claimed:
        return None
    chunk.refresh_from_db()
    return chunk, worker


def process_chunk(
    chunk: JobChunk, *, worker: str, func: Callable[..., Any], lease_seconds: int
) -> None:
    """Run one claimed chunk and store its outcome (if the claim is still ours)."""
    run = JobRun.objects.get(pk=chunk.run_id)
    spec = get_job(run.job)
    chunk_ctx = ChunkContext(
        run=run,
        tenant=resolve(run.tenant),
        params=coerce_params(spec.params, run.params),
        index=chunk.index,
        chunk_id=chunk.pk,
        worker=worker,
        lease_seconds=lease_seconds,
    )
    status, error, summary = ChunkStatus.DONE, "", {}
    if chunk.attempts > MAX_CHUNK_ATTEMPTS:
        status = ChunkStatus.FAILED
        error = f"given up after {chunk.attempts - 1} attempts whose worker stopped"
        chunk_ctx.item_failed(f"chunk:{chunk.index}", error)
    else:
        try:
            with shutdown.interruptible():
                summary = dict(func(chunk_ctx, list(chunk.items)) or {})
        except shutdown.ShutdownInterrupt:
            # Its cluster is stopping: the chunk goes back to pending at once
            # (not after its lease), to be redone whole by whoever continues.
            JobChunk.objects.filter(pk=chunk.pk, claimed_by=worker).update(
                status=ChunkStatus.PENDING,
                claimed_by="",
                lease_until=None,
                attempts=F("attempts") - 1,  # not a crash: no attempt used up
            )
            logger.warning("chunk %s of run #%s released: cluster stopping", chunk.index, run.pk)
            raise
        except RunCanceled:
            # The run was asked to stop: the chunk goes back to pending,
            # for a rerun to do whole (it continues the run's chunks).
            JobChunk.objects.filter(pk=chunk.pk, claimed_by=worker).update(
                status=ChunkStatus.PENDING,
                claimed_by="",
                lease_until=None,
                attempts=F("attempts") - 1,
            )
            logger.info("chunk %s of run #%s released: run canceled", chunk.index, run.pk)
            return
        except Exception as exc:
            status = ChunkStatus.FAILED
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=20)}"
            logger.exception("chunk %s of run #%s failed", chunk.index, run.pk)
            chunk_ctx.item_failed(f"chunk:{chunk.index}", f"{type(exc).__name__}: {exc}")
    written = JobChunk.objects.filter(pk=chunk.pk, claimed_by=worker).update(
        status=status,
        finished_at=timezone.now(),
        lease_until=None,
        error=error,
        summary=summary,
        **chunk_ctx.counts,
    )
    if not written:
        logger.warning(
            "chunk %s of run #%s was taken over; its result dropped", chunk.index, run.pk
        )


def _work_and_wait(
    ctx: JobContext,
    func: Callable[..., Any],
    *,
    lease_seconds: int,
    wait_timeout: float,
    total_items: int,
) -> FanOutResult:
    deadline = time.monotonic() + wait_timeout
    while True:
        if ctx.cancelled():  # between chunks; chunks in hand elsewhere finish
            ctx.count(**gather(ctx.run).counts)  # the run keeps what its chunks did
            ctx.raise_if_cancelled()
        claim = claim_chunk(ctx.run.pk, lease_seconds=lease_seconds)
        if claim is not None:
            chunk, worker = claim
            process_chunk(chunk, worker=worker, func=func, lease_seconds=lease_seconds)
        finished = JobChunk.objects.filter(
            run=ctx.run, status__in=[ChunkStatus.DONE, ChunkStatus.FAILED]
        ).values_list("items", flat=True)
        done_items = sum(len(items) for items in finished)
        ctx.progress(min(done_items, total_items), total_items)
        unfinished = JobChunk.objects.filter(run=ctx.run).count() - len(finished)
        if not unfinished:
            break
        if claim is None:
            if time.monotonic() > deadline:
                raise FanOutTimeout(
                    f"{unfinished} chunk(s) still unfinished after {wait_timeout:.0f} s"
                )
            time.sleep(POLL_SECONDS)
    return gather(ctx.run)


def gather(run: JobRun) -> FanOutResult:
    """The run's chunks added up."""
    result = FanOutResult()
    for chunk in JobChunk.objects.filter(run=run).order_by("index"):
        result.chunks += 1
        for name in COUNT_FIELDS:
            result.counts[name] += getattr(chunk, name)
        if chunk.status == ChunkStatus.FAILED:
            result.failed_chunks.append(chunk.index)
        merge_summaries(result.summary, chunk.summary or {})
    return result


def run_chunks(run_id: int, target: str, lease_seconds: int = DEFAULT_LEASE_SECONDS) -> int:
    """django-q2 task: claim and process the run's chunks until none is left
    (so a task whose chunk the parent already took helps with another)."""
    run = JobRun.objects.filter(pk=run_id).only("job", "tenant").first()
    if run is None:
        return 0
    func = import_string(target)
    done = 0
    capture = run_log.attach_unless_active(run_id)  # its lines go to the run's own log
    try:
        with job_log_context(job=run.job, run_id=run_id, tenant=run.tenant):
            while (claim := claim_chunk(run_id, lease_seconds=lease_seconds)) is not None:
                chunk, worker = claim
                process_chunk(chunk, worker=worker, func=func, lease_seconds=lease_seconds)
                done += 1
                if capture is not None:
                    capture.flush_to_db()
    finally:
        if capture is not None:
            run_log.detach(capture)
    return done

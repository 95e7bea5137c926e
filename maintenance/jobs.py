"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from jobs.context import JobAborted, JobContext
from jobs.registry import job
from maintenance import cleanup as cleanup_categories
from maintenance.retention import PurgeProgress, plan_audit_purge, purge_audit_trail

MAX_BATCH_SIZE = 100_000
MAX_BATCH_DELAY_MS = 10_000


def _reference_time(ctx: JobContext) -> datetime:
    """The slot, but never later than now: a slot given in the future must
    not make younger rows look old."""
    return min(ctx.slot, timezone.now()).astimezone(UTC)


def _purge_settings(
    retention_days: int | None, batch_size: int | None, batch_delay_ms: int | None
) -> tuple[int, int, int]:
    """The effective parameters, or JobAborted naming the bad one: the
    retention can be lengthened by a parameter, never shortened below
    AUDIT_RETENTION_DAYS."""
    floor = settings.AUDIT_RETENTION_DAYS
    if floor < 1:
        raise JobAborted(f"AUDIT_RETENTION_DAYS must be at least 1, is {floor}; nothing deleted")
    days = floor if retention_days is None else retention_days
    if days < floor:
        raise JobAborted(
            f"retention_days={days} is below AUDIT_RETENTION_DAYS ({floor}): the purge "
            "never deletes records younger than the configured retention; nothing deleted"
        )
    size = settings.AUDIT_PURGE_BATCH_SIZE if batch_size is None else batch_size
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise JobAborted(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {size}")
    delay = settings.AUDIT_PURGE_BATCH_DELAY_MS if batch_delay_ms is None else batch_delay_ms
    if not 0 <= delay <= MAX_BATCH_DELAY_MS:
        raise JobAborted(f"batch_delay_ms must be between 0 and {MAX_BATCH_DELAY_MS}, got {delay}")
    return days, size, delay


@job(
    "maintenance.purge_audit_trail",
    schedule="0 2 * * *",
    queue="low",
    timeout=3600,
    impact="deletes audit records past their retention",
)
def purge_audit_trail_job(
    ctx: JobContext,
    *,
    retention_days: int | None = None,
    batch_size: int | None = None,
    batch_delay_ms: int | None = None,
) -> dict[str, Any]:
    """Delete audit records older than AUDIT_RETENTION_DAYS, in short batches.

    Resumable: each batch checkpoints the next id, and a rerun after a crash
    continues from there with the crashed run's cutoff (never a later one).
    """
    days, size, delay = _purge_settings(retention_days, batch_size, batch_delay_ms)
    cutoff = _reference_time(ctx) - timedelta(days=days)
    start_id = 0
    resumed_from = None
    state = ctx.resume_state
    if isinstance(state, dict) and "next_id" in state and "cutoff" in state:
        start_id = int(state["next_id"])
        resumed_from = start_id
        cutoff = min(cutoff, datetime.fromisoformat(state["cutoff"]))
    summary: dict[str, Any] = {
        "cutoff": cutoff.isoformat(),
        "retention_days": days,
        "batch_size": size,
        "batch_delay_ms": delay,
        "resumed_from_id": resumed_from,
    }

    if ctx.dry_run:
        plan = plan_audit_purge(cutoff=cutoff, start_id=start_id)
        ctx.count(processed=plan.rows)
        return {
            **summary,
            "dry_run": True,
            "would_delete": plan.rows,
            "id_range": [plan.first_id, plan.last_id],
            "oldest_at": plan.oldest_at.isoformat() if plan.oldest_at else None,
            "newest_at": plan.newest_at.isoformat() if plan.newest_at else None,
        }

    def after_batch(progress: PurgeProgress) -> None:
        ctx.checkpoint(
            {
                "cutoff": progress.cutoff.isoformat(),
                "next_id": progress.next_id,
                "deleted": progress.deleted,
            }
        )
        ctx.progress(progress.deleted)

    started = time.perf_counter()
    progress = purge_audit_trail(
        cutoff=cutoff,
        batch_size=size,
        batch_delay_ms=delay,
        start_id=start_id,
        on_batch=after_batch,
    )
    ctx.count(processed=progress.deleted, succeeded=progress.deleted)
    ctx.checkpoint(None)  # done: a rerun of this run starts afresh, not from its end
    return {
        **summary,
        "deleted": progress.deleted,
        "batches": progress.batches,
        "max_batch_ms": round(progress.max_batch_ms, 1),
        "seconds": round(time.perf_counter() - started, 3),
    }


@job(
    "maintenance.cleanup",
    schedule="0 2 * * 0",
    queue="low",
    timeout=3600,
    impact="deletes orphaned invoice files and old records",
)
def cleanup(ctx: JobContext, *, batch_size: int | None = None) -> dict[str, Any]:
    """Remove what nothing points at any more, one counted category at a time.

    Categories: orphaned invoice PDFs, raw usage events past their retention
    (once aggregated) or of closed organizations, old outbox rows, old
    django-q2 task results, expired sessions, expired API idempotency keys.
    One category's failure is recorded and the others run.
    """
    size = settings.MAINTENANCE_CLEANUP_BATCH_SIZE if batch_size is None else batch_size
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise JobAborted(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {size}")
    now = _reference_time(ctx)
    categories: dict[str, Any] = {}
    total = 0
    for name, category in cleanup_categories.CATEGORIES.items():
        try:
            result = category(now=now, dry_run=ctx.dry_run, batch_size=size)
        except Exception as exc:  # isolated: record it, clean the rest
            ctx.item_failed(name, f"{type(exc).__name__}: {exc}")
            categories[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        categories[name] = result.describe(dry_run=ctx.dry_run)
        if not result.skipped:
            total += result.removed
    if ctx.dry_run:
        ctx.count(processed=total)
    else:
        ctx.count(processed=total, succeeded=total)
    return {
        "reference_time": now.isoformat(),
        "dry_run": ctx.dry_run,
        ("would_remove" if ctx.dry_run else "removed"): total,
        "categories": categories,
    }

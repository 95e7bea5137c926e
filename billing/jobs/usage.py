"""Billing jobs: usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from billing.selectors import late_hours
from billing.services.usage import HOUR, aggregate_hour, floor_hour, hours_between
from jobs.context import JobAborted, JobContext
from jobs.registry import job

HOURS_IN_SUMMARY = 48


def hours_to_aggregate(
    *,
    slot: datetime,
    hour: datetime | None,
    from_hour: datetime | None,
    to_hour: datetime | None,
) -> list[datetime]:
    """The hours a run works on, or JobAborted naming what is wrong.

    Default: the hour before the slot's hour. `hour`: the hour containing it.
    `from_hour`..`to_hour`: every hour start between them, both included, at
    most USAGE_BACKFILL_MAX_HOURS. Hours not yet over at the slot, and hours
    older than the event retention (their events may be gone: a rebuild would
    shrink them), are refused.
    """
    slot = slot.astimezone(UTC)
    if hour is not None and (from_hour is not None or to_hour is not None):
        raise JobAborted("give either hour or from_hour/to_hour, not both; nothing aggregated")
    if (from_hour is None) != (to_hour is None):
        raise JobAborted("from_hour and to_hour go together; nothing aggregated")
    if hour is not None:
        hours = [floor_hour(hour)]
    elif from_hour is not None and to_hour is not None:
        if to_hour < from_hour:
            raise JobAborted(f"to_hour {to_hour} is before from_hour {from_hour}")
        limit = settings.USAGE_BACKFILL_MAX_HOURS
        span = int((floor_hour(to_hour) - floor_hour(from_hour)) / HOUR) + 1
        if span > limit:
            raise JobAborted(
                f"from_hour..to_hour spans {span} hours; at most {limit} "
                "(USAGE_BACKFILL_MAX_HOURS) per run; nothing aggregated"
            )
        hours = hours_between(from_hour, to_hour)
    else:
        hours = [floor_hour(slot) - HOUR]
    if hours[-1] + HOUR > slot:
        raise JobAborted(
            f"hour {hours[-1].isoformat()} is not over at the slot {slot.isoformat()}; "
            "nothing aggregated"
        )
    oldest = slot - timedelta(days=settings.USAGE_EVENT_RETENTION_DAYS)
    if hours[0] < oldest:
        raise JobAborted(
            f"hour {hours[0].isoformat()} is older than the event retention "
            f"(USAGE_EVENT_RETENTION_DAYS={settings.USAGE_EVENT_RETENTION_DAYS}): its events "
            "may be purged and a rebuild would undercount; nothing aggregated"
        )
    return hours


@job(
    "billing.aggregate_usage",
    schedule="0 0 * * * *",
    queue="normal",
    timeout=3600,
    supports_item_rerun=True,
)
def aggregate_usage(
    ctx: JobContext,
    *,
    hour: datetime | None = None,
    from_hour: datetime | None = None,
    to_hour: datetime | None = None,
) -> dict[str, Any]:
    """Roll usage events up into hourly aggregates (the hour before the slot, or a backfill).

    One INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE per hour over
    all active organizations (or the run's tenant); rerunning an hour gives
    the same rows. A run for its slot also rebuilds hours that received
    events after they were aggregated (marked late by record_usage_events; at
    most USAGE_LATE_HOURS_PER_RUN, oldest first). Each hour commits on its own
    and is checkpointed, so a rerun after a crash continues with the next
    hour; a failed hour is an item failure (key: its ISO start) the others do
    not wait for.
    """
    hours = hours_to_aggregate(slot=ctx.slot, hour=hour, from_hour=from_hour, to_hour=to_hour)
    organization_id = ctx.organization_id
    late: list[datetime] = []
    if hour is None and from_hour is None and organization_id is None:
        oldest = ctx.slot - timedelta(days=settings.USAGE_EVENT_RETENTION_DAYS)
        late = late_hours(before=hours[0], since=oldest, limit=settings.USAGE_LATE_HOURS_PER_RUN)
        hours = [*late, *hours]
    state = ctx.resume_state
    done_through = None
    span = [hours[0].isoformat(), hours[-1].isoformat()]
    if isinstance(state, dict) and state.get("span") == span and state.get("done_through"):
        done_through = datetime.fromisoformat(state["done_through"])
    per_hour: dict[str, Any] = {}
    written = groups = events = 0
    skipped = 0
    for i, at in enumerate(hours):
        key = at.isoformat()
        if not ctx.should_process(key) or (done_through is not None and at <= done_through):
            skipped += 1
            continue
        try:
            with transaction.atomic():
                result = aggregate_hour(
                    hour=at, organization_id=organization_id, dry_run=ctx.dry_run
                )
        except Exception as exc:  # isolated: record the hour, do the others
            ctx.item_failed(key, f"{type(exc).__name__}: {exc}")
            continue
        if ctx.dry_run:
            groups += result.groups or 0
            events += result.events or 0
            per_hour[key] = {"would_write": result.groups, "events": result.events}
            ctx.count(processed=result.groups or 0)
        else:
            written += result.written
            per_hour[key] = {"written": result.written}
            ctx.count(processed=1, succeeded=1)
            if len(hours) > 1:
                ctx.checkpoint({"span": span, "done_through": key})
        ctx.progress(i + 1, len(hours))
    summary: dict[str, Any] = {
        "slot": ctx.slot.astimezone(UTC).isoformat(),
        "tenant": ctx.tenant_key or None,
        "hours": len(hours),
        "first_hour": hours[0].isoformat(),
        "last_hour": hours[-1].isoformat(),
    }
    if ctx.dry_run:
        summary.update({"dry_run": True, "would_write": groups, "events": events})
    else:
        summary["aggregates_written"] = written
        if len(hours) > 1:
            ctx.checkpoint(None)  # done: a rerun of this run starts afresh
    if late:
        summary["late_hours"] = [h.isoformat() for h in late]
    if skipped:
        summary["hours_skipped"] = skipped
    if len(per_hour) <= HOURS_IN_SUMMARY:
        summary["per_hour"] = per_hour
    return summary

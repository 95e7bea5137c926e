"""Billing jobs: analytics."""

from __future__ import annotations

from datetime import UTC, date, timedelta
from typing import Any

from django.conf import settings

from billing.services.analytics import aggregate_day
from jobs.context import JobAborted, JobContext
from jobs.dependency_spec import Dependency, start_of_day
from jobs.registry import job

DAYS_IN_SUMMARY = 31


def days_to_aggregate(
    *, slot_day: date, day: date | None, from_day: date | None, to_day: date | None
) -> list[date]:
    """The days a run works on, or JobAborted naming what is wrong.

    Default: the day before the slot's (UTC) day. `from_day`..`to_day`: both
    included, at most ANALYTICS_BACKFILL_MAX_DAYS. Days not over at the slot
    are refused.
    """
    if day is not None and (from_day is not None or to_day is not None):
        raise JobAborted("give either day or from_day/to_day, not both; nothing computed")
    if (from_day is None) != (to_day is None):
        raise JobAborted("from_day and to_day go together; nothing computed")
    if day is not None:
        days = [day]
    elif from_day is not None and to_day is not None:
        if to_day < from_day:
            raise JobAborted(f"to_day {to_day} is before from_day {from_day}")
        span = (to_day - from_day).days + 1
        limit = settings.ANALYTICS_BACKFILL_MAX_DAYS
        if span > limit:
            raise JobAborted(
                f"from_day..to_day spans {span} days; at most {limit} "
                "(ANALYTICS_BACKFILL_MAX_DAYS) per run; nothing computed"
            )
        days = [from_day + timedelta(days=i) for i in range(span)]
    else:
        days = [slot_day - timedelta(days=1)]
    if days[-1] >= slot_day:
        raise JobAborted(f"day {days[-1]} is not over at the slot; nothing computed")
    return days


@job(
    "billing.aggregate_daily_analytics",
    schedule="0 1 * * *",
    queue="low",
    timeout=3600,
    supports_item_rerun=True,
    after=(Dependency("payments.reconcile", slot=start_of_day, statuses=("succeeded", "partial")),),
)
def aggregate_daily_analytics(
    ctx: JobContext,
    *,
    day: date | None = None,
    from_day: date | None = None,
    to_day: date | None = None,
) -> dict[str, Any]:
    """Daily figures per organization (revenue, new/churned/active subscriptions, MRR, usage).

    One INSERT ... SELECT ... ON CONFLICT DO UPDATE per day over all active
    organizations (or the run's tenant), then each row cached for
    ANALYTICS_CACHE_SECONDS. Default: the day before the slot (UTC); a
    from_day..to_day range backfills. A failed day is an item failure (key:
    the date) and the other days still run.
    """
    slot = ctx.slot.astimezone(UTC)
    days = days_to_aggregate(slot_day=slot.date(), day=day, from_day=from_day, to_day=to_day)
    organization_id = ctx.organization_id
    per_day: dict[str, Any] = {}
    rows = cached = 0
    for i, at in enumerate(days):
        key = at.isoformat()
        if not ctx.should_process(key):
            continue
        try:
            result = aggregate_day(day=at, organization_id=organization_id, dry_run=ctx.dry_run)
        except Exception as exc:  # isolated: record the day, do the others
            ctx.item_failed(key, f"{type(exc).__name__}: {exc}")
            continue
        rows += result.organizations
        cached += result.cached
        label = "would_write" if ctx.dry_run else "written"
        per_day[key] = {label: result.organizations, **result.totals}
        if ctx.dry_run:
            ctx.count(processed=result.organizations)
        else:
            ctx.count(processed=result.organizations, succeeded=result.organizations)
        ctx.progress(i + 1, len(days))
    summary: dict[str, Any] = {
        "slot": slot.isoformat(),
        "tenant": ctx.tenant_key or None,
        "days": len(days),
        "first_day": days[0].isoformat(),
        "last_day": days[-1].isoformat(),
    }
    if ctx.dry_run:
        summary.update({"dry_run": True, "would_write": rows})
    else:
        summary.update({"rows_written": rows, "cached": cached})
    if len(per_day) <= DAYS_IN_SUMMARY:
        summary["per_day"] = per_day
    return summary

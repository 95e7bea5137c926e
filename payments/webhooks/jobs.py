"""The job that processes stored Stripe webhook events (payments.webhooks)."""

from __future__ import annotations

from typing import Annotated, Any

from jobs.context import JobContext
from jobs.params import Range
from jobs.registry import job
from payments.webhooks.processing import pending_event_ids, process_events

JOB = "payments.process_stripe_webhooks"


@job(JOB, schedule="*/5 * * * *", queue="critical", timeout=600)
def process_stripe_webhooks(
    ctx: JobContext, *, max_events: Annotated[int, Range(ge=1, le=100_000)] = 10_000
) -> dict[str, Any]:
    """Apply the Stripe webhook events received and not yet processed, in Stripe's order.

    Each webhook enqueues a run for its tenant; the schedule is the backstop
    (a run that could not be enqueued, or was skipped while another ran).
    A dry run counts what is pending and changes nothing.
    """
    ids = pending_event_ids(organization_id=ctx.organization_id, limit=max_events)
    if ctx.dry_run:
        return {"pending": len(ids)}
    result = process_events(
        event_ids=ids,
        actor=ctx.actor,
        job_run_id=ctx.run.pk,
        on_failure=ctx.item_failed,
    )
    ctx.count(processed=len(ids), succeeded=result.processed + result.ignored, failed=result.failed)
    return {
        "pending": len(ids),
        "processed": result.processed,
        "ignored": result.ignored,
        "failed": result.failed,
        "retrying": result.retrying,
        "by_type": result.by_type,
    }

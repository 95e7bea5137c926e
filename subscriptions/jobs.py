"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from django.conf import settings

from jobs.context import JobAborted, JobContext
from jobs.params import Range
from jobs.registry import job
from maintenance.services import job_actor
from subscriptions.services import (
    PER_TENANT_IN_SUMMARY,
    ExpiryGuardTripped,
    expire_subscriptions,
    plan_expiry,
)


def _expire_preview(summary: dict[str, Any]) -> str:
    """The confirmation page's sentence for a dry run of `expire`."""
    expire = summary.get("would_expire", 0)
    suspend = summary.get("would_suspend", 0)
    tenants = summary.get("tenants_affected", 0)
    return (
        f"expires {expire:,} subscriptions and suspends {suspend:,} "
        f"in {tenants:,} organization{'s' if tenants != 1 else ''}; "
        "their owners are emailed"
    )


@job(
    "subscriptions.expire",
    schedule="0 * * * *",
    queue="critical",
    timeout=1800,
    impact="expires and suspends customers' subscriptions and emails them",
    preview=_expire_preview,
)
def expire(
    ctx: JobContext,
    *,
    grace_days: Annotated[int, Range(ge=0, le=3650)] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Expire subscriptions whose period ended; suspend those past their grace period.

    Works relative to the run's slot, so a late or repeated run of an hour does
    exactly that hour's work, and a second run of the same slot changes nothing.
    """
    grace = settings.SUBSCRIPTION_GRACE_PERIOD_DAYS if grace_days is None else grace_days
    slot = ctx.slot.astimezone(UTC)
    organization_id = ctx.tenant.pk if ctx.tenant is not None else None
    base = {"slot": slot.isoformat(), "grace_days": grace, "tenant": ctx.tenant_key or None}

    if ctx.dry_run:
        plan = plan_expiry(slot=slot, grace_days=grace, organization_id=organization_id)
        total = plan["would_expire"] + plan["would_suspend"]
        ctx.count(processed=total)
        return {**base, "dry_run": True, **plan}

    try:
        result, guard = expire_subscriptions(
            slot=slot,
            grace_days=grace,
            actor=job_actor(job=ctx.job, run_id=ctx.run.pk),
            job_run_id=ctx.run.pk,
            organization_id=organization_id,
            force=force,
        )
    except ExpiryGuardTripped as exc:
        raise JobAborted(
            str(exc),
            summary={
                **base,
                "expired": 0,
                "suspended": 0,
                "guard": {
                    "limit_percent": exc.limit_percent,
                    "checked": True,
                    "forced": False,
                    "aborted": True,
                    "tenants_over_limit": [
                        {"tenant": t.key, "would_expire": t.would_expire, "running": t.running}
                        for t in exc.tenants[:50]
                    ],
                    "tenants_over_limit_count": len(exc.tenants),
                },
            },
        ) from exc
    changed = result.expired + result.suspended
    ctx.count(processed=changed, succeeded=changed)
    ctx.progress(changed, changed)
    summary = {
        **base,
        "expired": result.expired,
        "suspended": result.suspended,
        "audit_records": result.audit_records,
        "emails_queued": result.emails_queued,
        "guard": guard,
        "seconds": result.seconds,
    }
    if result.tenants:
        summary["per_tenant"] = result.tenants
    return summary


@job(
    "subscriptions.send_renewal_reminders",
    schedule="0 9 * * *",
    queue="default",
    timeout=1800,
    impact="queues reminder emails to customers",
)
def send_renewal_reminders(ctx: JobContext, *, days: int = 7) -> dict[str, Any]:
    """Queue renewal reminders (period ending within `days`) and payment-due reminders.

    Queued through the outbox with a dedupe key per subscription and period, so
    running it twice a day, or every day of the window, mails each one once.
    """
    from subscriptions.services import queue_renewal_reminders

    if days < 1:
        raise JobAborted(f"days must be 1 or more, got {days}; nothing queued")
    slot = ctx.slot.astimezone(UTC)
    result = queue_renewal_reminders(
        slot=slot,
        days=days,
        organization_id=ctx.tenant.pk if ctx.tenant is not None else None,
        dry_run=ctx.dry_run,
    )
    queued = result.renewal + result.payment_due
    if ctx.dry_run:
        ctx.count(processed=queued)
        return {
            "slot": slot.isoformat(),
            "days": days,
            "dry_run": True,
            "would_queue_renewal": result.renewal,
            "would_queue_payment_due": result.payment_due,
        }
    ctx.count(processed=queued, succeeded=queued)
    return {
        "slot": slot.isoformat(),
        "days": days,
        "renewal_reminders_queued": result.renewal,
        "payment_due_reminders_queued": result.payment_due,
    }


@job(
    "subscriptions.sync_renewals",
    schedule="0 0 */6 * * *",
    queue="normal",
    timeout=3600,
    supports_item_rerun=True,
)
def sync_renewals(
    ctx: JobContext,
    *,
    batch_size: Annotated[int, Range(ge=1, le=1_000)] = 100,
    max_subscriptions: Annotated[int, Range(ge=1, le=1_000_000)] = 10_000,
    days_before: Annotated[int, Range(ge=1, le=366)] | None = None,
    push_cancellations: bool = True,
    concurrency: Annotated[int, Range(ge=1, le=64)] | None = None,
) -> dict[str, Any]:
    """Bring Stripe's status, period and renewal of subscriptions renewing soon into their rows.

    Per tenant with Stripe enabled; rows get last_stripe_sync_at and a
    reconciliation status (SYNCED, MISMATCH, ERROR). Where the local side is the
    authority (a local cancellation not yet sent, a period already advanced
    here) the row is kept and reported as MISMATCH; local cancellations are
    sent to Stripe unless push_cancellations is false. A dry run only reads.
    """
    from django.utils import timezone

    from payments.tenant_calls import run_batches
    from subscriptions.services import RenewalSync, subscriptions_to_sync

    days = settings.SUBSCRIPTION_RENEWAL_DAYS_BEFORE if days_before is None else days_before
    slot = ctx.slot.astimezone(UTC)
    todo = subscriptions_to_sync(
        slot=slot,
        days=days,
        organization_id=ctx.tenant.pk if ctx.tenant is not None else None,
        limit=max_subscriptions,
    )
    sync = RenewalSync(
        now=timezone.now(),
        actor=job_actor(job=ctx.job, run_id=ctx.run.pk),
        job_run_id=ctx.run.pk,
        dry_run=ctx.dry_run,
        push_cancellations=push_cancellations,
        concurrency=concurrency or settings.PAYMENTS_RECONCILE_CONCURRENCY,
        on_item_failure=ctx.item_failed,
    )
    run_batches(ctx, sync, todo, batch_size=batch_size)
    r = sync.result
    ctx.count(processed=r.fetched + r.errors, succeeded=r.fetched, skipped=r.skipped)
    summary: dict[str, Any] = {
        "slot": slot.isoformat(),
        "days_before": days,
        "tenant": ctx.tenant_key or None,
        "dry_run": ctx.dry_run,
        "selected": r.selected,
        "fetched": r.fetched,
        "synced": r.outcomes.get("synced", 0),
        "mismatch": r.outcomes.get("mismatch", 0),
        "errors": r.errors,
        "skipped": r.skipped,
        ("would_change" if ctx.dry_run else "changed"): r.changed,
        ("would_send_cancellations" if ctx.dry_run else "cancellations_sent"): (
            r.cancellations_pending if ctx.dry_run else r.cancellations_sent
        ),
        "tenants_failed": sync.by_tenant_key(r.tenant_failures),
    }
    if not ctx.dry_run:
        summary["cancellations_not_sent"] = r.cancellations_pending
        summary["audit_records"] = r.audit_records
    if len(r.per_tenant) <= PER_TENANT_IN_SUMMARY:
        summary["per_tenant"] = sync.by_tenant_key(r.per_tenant)
    return summary

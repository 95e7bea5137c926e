"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated, Any

from django.conf import settings
from django.utils import timezone

from jobs.context import JobContext
from jobs.params import Range
from jobs.registry import job
from payments.selectors import open_payments_due
from payments.services import PER_TENANT_IN_SUMMARY, PaymentReconciler
from payments.subscription_sync import RenewalSync
from payments.tenant_calls import run_batches
from subscriptions.selectors import subscriptions_to_sync


@job(
    "payments.reconcile",
    schedule="*/30 * * * *",
    queue="critical",
    timeout=1800,
    supports_item_rerun=True,
)
def reconcile(
    ctx: JobContext,
    *,
    older_than_minutes: Annotated[int, Range(ge=0, le=10_080)] | None = None,
    concurrency: Annotated[int, Range(ge=1, le=64)] | None = None,
    batch_size: Annotated[int, Range(ge=1, le=10_000)] = 1_000,
    max_payments: Annotated[int, Range(ge=1, le=1_000_000)] = 50_000,
) -> dict[str, Any]:
    """Check payments open for over 30 minutes against Stripe; settle them and their subscriptions.

    Succeeded payments renew their subscription (past_due/expired back to
    active, period advanced); failed ones make it past_due. Every transition is
    audited; a second run transitions nothing. A dry run reads PaymentIntents
    and writes nothing.
    """
    minutes = (
        settings.PAYMENTS_RECONCILE_AFTER_MINUTES
        if older_than_minutes is None
        else older_than_minutes
    )
    slot = ctx.slot.astimezone(UTC)
    older_than = slot - timedelta(minutes=minutes)
    due = open_payments_due(
        older_than=older_than,
        organization_id=ctx.organization_id,
        limit=max_payments,
    )
    reconciler = PaymentReconciler(
        now=timezone.now(),
        actor=ctx.actor,
        job_run_id=ctx.run.pk,
        dry_run=ctx.dry_run,
        concurrency=concurrency or settings.PAYMENTS_RECONCILE_CONCURRENCY,
        on_item_failure=ctx.item_failed,
    )
    due_count = run_batches(ctx, reconciler, due, batch_size=batch_size)
    r = reconciler.result
    ctx.count(processed=r.checked + r.errors, succeeded=r.checked, skipped=r.skipped)
    prefix = "would_" if ctx.dry_run else ""
    summary: dict[str, Any] = {
        "slot": slot.isoformat(),
        "older_than": older_than.isoformat(),
        "tenant": ctx.tenant_key or None,
        "dry_run": ctx.dry_run,
        "due": due_count,
        "checked": r.checked,
        f"{prefix}succeeded": r.outcomes.get("succeeded", 0),
        f"{prefix}failed": r.outcomes.get("failed", 0),
        f"{prefix}canceled": r.outcomes.get("canceled", 0),
        f"{prefix}processing": r.outcomes.get("processing", 0),
        "still_open": r.outcomes.get("open", 0),
        "errors": r.errors,
        "skipped": r.skipped,
        "tenants": r.tenants,
        "tenants_failed": reconciler.by_tenant_key(r.tenant_failures),
        "seconds": {k: round(v, 3) for k, v in r.seconds.items()},
    }
    if not ctx.dry_run:
        summary.update(
            subscriptions_renewed=r.subscriptions_renewed,
            subscriptions_past_due=r.subscriptions_past_due,
            subscriptions_left_alone=r.subscriptions_left_alone,
            audit_records=r.audit_records,
        )
    if len(r.per_tenant) <= PER_TENANT_IN_SUMMARY:
        summary["per_tenant"] = reconciler.by_tenant_key(r.per_tenant)
    return summary


# Declared here, keeping its name: the sync reads Stripe, this app's gateway.
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
    days = settings.SUBSCRIPTION_RENEWAL_DAYS_BEFORE if days_before is None else days_before
    slot = ctx.slot.astimezone(UTC)
    todo = subscriptions_to_sync(
        slot=slot,
        days=days,
        organization_id=ctx.organization_id,
        limit=max_subscriptions,
    )
    sync = RenewalSync(
        now=timezone.now(),
        actor=ctx.actor,
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

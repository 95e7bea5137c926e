"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from django.conf import settings

from jobs.context import JobAborted, JobContext
from jobs.params import Range
from jobs.registry import job
from notifications.services import EmailTemplate
from subscriptions.services.broadcast import queue_to_organizations
from subscriptions.services.expiry import ExpiryGuardTripped, expire_subscriptions, plan_expiry
from subscriptions.services.reminders import queue_renewal_reminders


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
    organization_id = ctx.organization_id
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
            actor=ctx.actor,
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
                "guard": exc.guard_summary(),
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
    if days < 1:
        raise JobAborted(f"days must be 1 or more, got {days}; nothing queued")
    slot = ctx.slot.astimezone(UTC)
    result = queue_renewal_reminders(
        slot=slot,
        days=days,
        organization_id=ctx.organization_id,
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


# Declared here, under its historical name: broadcasts are to this app's tenants.
@job(
    "notifications.send_bulk",
    queue="default",
    timeout=1800,
    impact="queues an email to each chosen organization's billing contact",
)
def send_bulk(
    ctx: JobContext,
    *,
    subject: str,
    template: str = "announcement",
    organizations: str = "",
    message: str = "",
    campaign: str = "",
) -> dict[str, Any]:
    """Queue one email (subject + template) to the billing contact of chosen organizations.

    `organizations` is comma-separated keys; empty means all active ones (or
    the run's tenant). Queued in bulk; `send_pending` sends them at the rate.
    Rerunning the same campaign queues nothing new.
    """
    keys: list[str] | None = [k.strip() for k in organizations.split(",") if k.strip()] or None
    if ctx.tenant is not None:
        keys = [ctx.tenant.key]
    if not subject.strip():
        raise JobAborted("subject is required; nothing queued")
    try:
        EmailTemplate(template)
    except Exception as exc:
        raise JobAborted(f"unknown email template {template!r}: {exc}") from exc
    name = campaign or f"run{ctx.run.rerun_of_id or ctx.run.pk}"
    result = queue_to_organizations(
        template=template,
        kind=f"notifications.bulk.{template}",
        campaign=name,
        organization_keys=keys,
        subject=subject,
        context={"subject": subject, "message": message},
        dry_run=ctx.dry_run,
    )
    for key in result["unknown"]:
        ctx.item_failed(f"organization:{key}", "unknown organization key")
    if ctx.dry_run:
        ctx.count(processed=result["would_queue"])
    else:
        ctx.count(
            processed=result["organizations"],
            succeeded=result["queued"],
            skipped=result["already_queued"],
        )
    return {"campaign": name, "template": template, "dry_run": ctx.dry_run, **result}

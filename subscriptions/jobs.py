"""Jobs of this app: thin entry points that call services."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from django.conf import settings

from jobs.context import JobAborted, JobContext
from jobs.params import Range
from jobs.registry import job
from maintenance.services import job_actor
from subscriptions.services import ExpiryGuardTripped, expire_subscriptions, plan_expiry


@job("subscriptions.expire", schedule="0 * * * *", queue="critical", timeout=1800)
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

"""Billing jobs: invoices."""

from __future__ import annotations

import time
from typing import Annotated, Any

from django.conf import settings

from billing.services.invoices import (
    NothingToBill,
    Period,
    build_drafts,
    organizations_to_invoice,
    queue_run_summary,
    run_period,
)
from billing.services.invoices import (
    regenerate_invoice as regenerate_invoice_service,
)
from jobs.context import JobAborted, JobContext
from jobs.params import Range
from jobs.registry import job
from maintenance.services import job_actor

CHUNK_TARGET = "billing.services.invoices.process_chunk"


@job(
    "billing.generate_monthly_invoices",
    schedule="0 0 0 1 * *",
    queue="default",
    timeout=3600,
    supports_item_rerun=True,
)
def generate_monthly_invoices(
    ctx: JobContext,
    *,
    process_month: str = "",
    chunk_size: Annotated[int, Range(ge=1, le=1000)] | None = None,
) -> dict[str, Any]:
    """Invoice every active organization for the month before the slot (or `process_month`).

    Organizations are fanned out in chunks over the cluster's workers; each
    chunk builds, numbers, renders, stores, sends to Stripe and emails its
    invoices, skipping whatever an earlier attempt finished, so a rerun or a
    redone chunk never bills twice. Dry run: builds in memory, reports totals.
    """
    started = time.perf_counter()
    try:
        period = run_period(ctx)
    except ValueError as exc:
        raise JobAborted(f"{exc}; nothing invoiced") from exc
    if period.end_at > ctx.slot:
        raise JobAborted(
            f"{period.label} is not over at the slot {ctx.slot:%Y-%m-%d %H:%M}; nothing invoiced"
        )
    organizations = organizations_to_invoice(
        organization_id=ctx.tenant.pk if ctx.tenant is not None else None
    )
    ids = [org_id for org_id, key in organizations if ctx.should_process(key)]
    result = ctx.fan_out(
        CHUNK_TARGET, items=ids, chunk_size=chunk_size or settings.INVOICE_CHUNK_SIZE
    )
    summary: dict[str, Any] = {
        "period": period.label,
        "dry_run": ctx.dry_run,
        "organizations": len(ids),
        "chunks": result.chunks,
        **result.summary,
    }
    summary.setdefault("organizations_processed", 0)
    if result.failed_chunks:
        summary["failed_chunks"] = result.failed_chunks
    summary["duration_seconds"] = round(time.perf_counter() - started, 3)
    if not ctx.dry_run and settings.NOTIFY_ON_COMPLETION and settings.NOTIFY_EMAIL:
        status = "partial" if ctx.counts["failed"] else "succeeded"
        summary["summary_emailed"] = queue_run_summary(
            run_id=ctx.run.pk, period=period, status=status, summary=summary
        )
    return summary


@job("billing.regenerate_invoice", queue="default", timeout=600)
def regenerate_invoice(
    ctx: JobContext, *, month: str, organization: str = "", reason: str = ""
) -> dict[str, Any]:
    """Void one organization's invoice for a month and issue a new one (new number, PDF, email).

    `organization` is its key (default: the run's tenant), `month` YYYY-MM.
    Run it with the organization as tenant (the admin does) so regenerations
    of different organizations run side by side. Dry run: builds the new
    invoice in memory and reports it; voids nothing.
    """
    from subscriptions.models import Organization

    organization = organization or ctx.tenant_key
    if not organization:
        raise JobAborted("give the organization (or run for a tenant); nothing regenerated")
    if ctx.tenant_key and organization != ctx.tenant_key:
        raise JobAborted(
            f"organization {organization!r} is not the run's tenant {ctx.tenant_key!r}; "
            "nothing regenerated"
        )
    try:
        period = Period.parse(month)
    except ValueError as exc:
        raise JobAborted(f"{exc}; nothing regenerated") from exc
    org = Organization.objects.filter(key=organization).first()
    if org is None:
        raise JobAborted(f"unknown organization {organization!r}; nothing regenerated")
    base = {"organization": org.key, "period": period.label, "dry_run": ctx.dry_run}
    if ctx.dry_run:
        drafts, reasons = build_drafts(organizations=[org], period=period)
        draft = drafts.get(org.pk)
        ctx.count(processed=1)
        if draft is None:
            return {**base, "would_create": 0, "reason": reasons.get(org.pk, "")}
        return {
            **base,
            "would_create": 1,
            "would_bill_minor": {draft.currency: draft.total_minor},
            "lines": len(draft.lines),
        }
    try:
        new, old, report = regenerate_invoice_service(
            organization=org,
            period=period,
            actor=job_actor(job=ctx.job, run_id=ctx.run.pk),
            job_run_id=ctx.run.pk,
            reason=reason,
        )
    except NothingToBill as exc:
        raise JobAborted(f"{exc}; nothing regenerated") from exc
    ctx.count(processed=1)
    if report.errors:
        problems = report.errors[org.pk]
        ctx.item_failed(org.key, "; ".join(f"{c}: {m}" for c, m in problems))
    else:
        ctx.count(succeeded=1)
    return {
        **base,
        "voided": old.number if old else None,
        "invoice": new.number,
        "invoice_id": new.pk,
        "total_minor": new.total_minor,
        "currency": new.currency,
        "pdf": new.pdf.name or None,
        "stripe_invoice_id": new.stripe_invoice_id or None,
        "old_stripe_invoice": report.stripe_withdrawn or None,
        "email_id": new.email_id,
        "errors": report.errors_by_component(),
    }

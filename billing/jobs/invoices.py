"""Billing jobs: invoices."""

from __future__ import annotations

import time
from typing import Annotated, Any

from django.conf import settings

from billing.services.build import NothingToBill, Period, build_drafts
from billing.services.credit_notes import regenerate_invoice as regenerate_invoice_service
from billing.services.drafts import draft_item_key, finalize_chunk, invoices_to_finalize
from billing.services.invoices import (
    ChunkResult,
    invoice_chunk,
    make_usage_complete,
    organizations_to_invoice,
    queue_run_summary,
    run_period,
)
from billing.services.pdf import format_money
from billing.services.usage import UsageIncomplete
from jobs.context import JobAborted, JobContext
from jobs.dependency_spec import Dependency, start_of_hour
from jobs.params import Range
from jobs.registry import job
from subscriptions.models import Organization

CHUNK_TARGET = "billing.jobs.invoices.process_chunk"
FINALIZE_TARGET = "billing.jobs.invoices.process_finalize_chunk"


def complete_period_usage(ctx: JobContext, period: Period) -> dict[str, Any]:
    """The period's usage made complete before anything is billed from it
    (every hour aggregated, none late), or JobAborted saying why not."""
    try:
        return make_usage_complete(period, as_of=ctx.slot, dry_run=ctx.dry_run)
    except UsageIncomplete as exc:
        raise JobAborted(
            f"the usage of {period.label} is incomplete: {exc}; nothing invoiced"
        ) from exc


@job(
    "billing.generate_monthly_invoices",
    schedule="0 0 0 1 * *",
    queue="default",
    timeout=3600,
    supports_item_rerun=True,
    after=(Dependency("billing.aggregate_usage", slot=start_of_hour),),
    tenant_schedules_exclude=True,
    impact="issues invoices, charges through Stripe and emails customers",
)
def generate_monthly_invoices(
    ctx: JobContext,
    *,
    process_month: str = "",
    chunk_size: Annotated[int, Range(ge=1, le=1000)] | None = None,
) -> dict[str, Any]:
    """Invoice every active organization for the month before the slot (or `process_month`).

    First the month's usage is made complete: hours not yet aggregated (the
    month's last hour, at 00:00 on the 1st) and hours with late events are
    aggregated here, with billing.aggregate_usage's own statement (summary
    `usage`). Then organizations are fanned out in chunks over the cluster's
    workers; each chunk builds, numbers, renders, stores, sends to Stripe and
    emails its invoices, skipping whatever an earlier attempt finished, so a
    rerun or a redone chunk never bills twice. With INVOICE_GRACE_HOURS above
    0 the chunks make drafts, which billing.finalize_invoices finalizes. Dry
    run: builds in memory, reports totals and the hours it would aggregate.
    """
    started = time.perf_counter()
    try:
        period = run_period(process_month=ctx.params.get("process_month") or "", slot=ctx.slot)
    except ValueError as exc:
        raise JobAborted(f"{exc}; nothing invoiced") from exc
    if period.end_at > ctx.slot:
        raise JobAborted(
            f"{period.label} is not over at the slot {ctx.slot:%Y-%m-%d %H:%M}; nothing invoiced"
        )
    usage = complete_period_usage(ctx, period)
    organizations = organizations_to_invoice(organization_id=ctx.organization_id)
    ids = [
        org_id
        for org_id, key in organizations
        if ctx.should_process(key) and key not in ctx.excluded_tenants
    ]
    result = ctx.fan_out(
        CHUNK_TARGET, items=ids, chunk_size=chunk_size or settings.INVOICE_CHUNK_SIZE
    )
    summary: dict[str, Any] = {
        "period": period.label,
        "dry_run": ctx.dry_run,
        "usage": usage,
        "grace_hours": settings.INVOICE_GRACE_HOURS,
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


def _regenerate_preview(summary: dict[str, Any]) -> str:
    """The confirmation page's sentence for a dry run of `regenerate_invoice`."""
    who, period = summary.get("organization", "?"), summary.get("period", "?")
    if not summary.get("would_create"):
        return (
            f"regenerates nothing for {who} {period}: {summary.get('reason') or 'nothing to bill'}"
        )
    billed = ", ".join(
        format_money(amount, currency)
        for currency, amount in sorted((summary.get("would_bill_minor") or {}).items())
    )
    return (
        f"voids {who}'s invoice for {period} with a credit note, issues a new one of "
        f"{billed} ({summary.get('lines', 0)} lines) and emails the customer"
    )


@job(
    "billing.regenerate_invoice",
    queue="default",
    timeout=600,
    impact="voids an invoice, issues a credit note and a new invoice, and emails the customer",
    ask_reason=True,
    preview=_regenerate_preview,
)
def regenerate_invoice(
    ctx: JobContext, *, month: str, organization: str = "", reason: str = ""
) -> dict[str, Any]:
    """Credit and void one organization's invoice for a month and issue a new one.

    The month's usage is completed first; the old invoice gets a full credit
    note (CN number, PDF, email, Stripe withdrawal), the new one a new number,
    PDF, Stripe invoice and email. `organization` is its key (default: the
    run's tenant), `month` YYYY-MM. Run it with the organization as tenant
    (the admin does) so regenerations of different organizations run side by
    side. Dry run: builds the new invoice in memory and reports it; voids nothing.
    """
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
        new, old, report, credit_note = regenerate_invoice_service(
            organization=org,
            period=period,
            actor=ctx.actor,
            job_run_id=ctx.run.pk,
            reason=reason,
        )
    except (NothingToBill, UsageIncomplete, ValueError) as exc:
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
        "credit_note": credit_note.number if credit_note else None,
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


@job(
    "billing.finalize_invoices",
    schedule="0 0 * * * *",
    queue="default",
    timeout=3600,
    supports_item_rerun=True,
    impact="finalizes invoices, sends them to Stripe and emails customers",
)
def finalize_invoices(
    ctx: JobContext,
    *,
    chunk_size: Annotated[int, Range(ge=1, le=1000)] | None = None,
) -> dict[str, Any]:
    """Finalize draft invoices whose grace (INVOICE_GRACE_HOURS after their month) is over.

    For each month with due drafts, its usage is made complete first (events
    that arrived in the grace count); then the drafts are fanned out in
    chunks like the monthly run: rebuilt from fresh usage (manual lines
    kept), numbered, rendered, sent to Stripe and emailed. Invoices it
    finalized within a day that still lack their PDF or email are completed
    again, so a crashed run is finished by the next hour's. Item keys are
    `<organization>:<YYYY-MM>`. Dry run: reports what it would finalize.
    """
    started = time.perf_counter()
    invoices = invoices_to_finalize(
        slot=ctx.slot,
        organization_id=ctx.organization_id,
        only_keys=ctx.only_items,
    )
    usage: dict[str, Any] = {}
    for start in sorted({inv.period_start for inv in invoices if inv.status == "draft"}):
        usage[f"{start:%Y-%m}"] = complete_period_usage(ctx, Period.of_month(start))
    ids = [inv.pk for inv in invoices if ctx.should_process(draft_item_key(inv))]
    result = ctx.fan_out(
        FINALIZE_TARGET, items=ids, chunk_size=chunk_size or settings.INVOICE_CHUNK_SIZE
    )
    summary: dict[str, Any] = {
        "dry_run": ctx.dry_run,
        "invoices": len(ids),
        "periods": sorted({f"{inv.period_start:%Y-%m}" for inv in invoices}),
        "usage": usage,
        "chunks": result.chunks,
        **result.summary,
    }
    if result.failed_chunks:
        summary["failed_chunks"] = result.failed_chunks
    summary["duration_seconds"] = round(time.perf_counter() - started, 3)
    return summary


# --- fan-out targets: the job layer owns the chunk's context ---------------------


def _report_chunk(ctx: JobContext, result: ChunkResult) -> dict[str, Any]:
    for key, message in result.failures.items():
        ctx.item_failed(key, message)
    ctx.count(**result.counts)
    return result.summary


def process_chunk(ctx: JobContext, items: list[int]) -> dict[str, Any]:
    """Fan-out target of billing.generate_monthly_invoices: one chunk of organization ids."""
    period = run_period(process_month=ctx.params.get("process_month") or "", slot=ctx.slot)
    result = invoice_chunk(
        organization_ids=items,
        period=period,
        actor=ctx.actor,
        job_run_id=ctx.run.pk,
        dry_run=ctx.dry_run,
        keep_alive=getattr(ctx, "keep_alive", None),
    )
    return _report_chunk(ctx, result)


def process_finalize_chunk(ctx: JobContext, items: list[int]) -> dict[str, Any]:
    """Fan-out target of billing.finalize_invoices: one chunk of invoice ids."""
    result = finalize_chunk(
        invoice_ids=items, actor=ctx.actor, job_run_id=ctx.run.pk, dry_run=ctx.dry_run
    )
    return _report_chunk(ctx, result)

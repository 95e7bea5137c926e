"""Drafts: what billing.finalize_invoices does, and what staff do to a draft.

With INVOICE_GRACE_HOURS above 0 the monthly run leaves draft invoices (no
number, PDF or email). The hourly finalize job takes the drafts whose grace
is over, completes their month's usage, rebuilds them from fresh usage (the
manual lines staff added are kept), numbers them under the year's lock
(billing.services.invoices.finalize_drafts) and completes them like the
monthly run (PDF, Stripe, email), each step skipping what is done. Staff add
or remove manual lines (a reason each, audited) and finalize a draft early.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from audit.services import record_audit
from billing.models import Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus
from billing.services.build import InvoiceDraft, NoInvoice, Period, build_drafts, tax_for
from billing.services.invoices import (
    OBJECT_TYPE,
    ChunkResult,
    StepReport,
    audit_invoices,
    complete_invoices,
    failure_messages,
    finalize_drafts,
    live_invoices,
)
from billing.services.usage import complete_usage

# Invoices the finalize job still completes (PDF, email) this long after it finalized them.
COMPLETE_WITHIN = timedelta(days=1)


def draft_item_key(invoice: Invoice) -> str:
    """How the finalize job names an invoice in its item failures."""
    return f"{invoice.organization.key}:{invoice.period_start:%Y-%m}"


def invoices_to_finalize(
    *, slot: datetime, organization_id: int | None = None, only_keys: set[str] | None = None
) -> list[Invoice]:
    """What billing.finalize_invoices works on: drafts whose grace is over at
    the slot, and invoices finalized from a draft (they keep their
    `grace_until`) within COMPLETE_WITHIN that still lack their PDF or email (a
    crashed or failed finalize; invoices the monthly run finalized at once are
    its own to complete, so the two never render the same PDFs side by side);
    for a rerun of failed items, the live invoices those keys
    (`<organization>:<YYYY-MM>`) name."""
    rows = Invoice.objects.exclude(status=InvoiceStatus.VOID).select_related("organization")
    if only_keys is not None:
        named = Q(pk__in=[])
        for key in only_keys:
            org_key, _, month = key.rpartition(":")
            try:
                start = Period.parse(month).start
            except ValueError:
                continue
            named |= Q(organization__key=org_key, period_start=start)
        rows = rows.filter(named)
    else:
        incomplete = Q(pdf="")
        if settings.INVOICE_ENABLE_EMAIL:
            incomplete |= Q(email_id__isnull=True) & ~Q(organization__billing_email="")
        rows = rows.filter(
            Q(status=InvoiceStatus.DRAFT, grace_until__lte=slot)
            | (
                Q(
                    status=InvoiceStatus.FINALIZED,
                    grace_until__isnull=False,
                    finalized_at__gte=slot - COMPLETE_WITHIN,
                )
                & incomplete
            )
        )
    if organization_id is not None:
        rows = rows.filter(organization_id=organization_id)
    return list(rows.order_by("period_start", "organization_id"))


def finalize_invoice_drafts(
    invoices: Sequence[Invoice], *, actor: str, job_run_id: int | None, report: StepReport
) -> dict[str, int]:
    """Finalize the draft invoices (fresh usage: the caller completed it) and
    complete every given invoice (PDF, Stripe, email). Per period, one build
    and one numbering transaction. Returns counts."""
    counts = {"finalized": 0, "discarded": 0}
    by_period: dict[date, list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        by_period[invoice.period_start].append(invoice)
    for start, group in sorted(by_period.items()):
        period = Period.of_month(start)
        drafts_here = [inv for inv in group if inv.status == InvoiceStatus.DRAFT]
        if drafts_here:
            orgs = [inv.organization for inv in drafts_here]
            try:
                drafts, reasons = build_drafts(organizations=orgs, period=period)
            except Exception as exc:
                for inv in drafts_here:
                    report.fail(inv.organization_id, "build", exc)
                continue
            _draft_manual_only(drafts_here, drafts, reasons, period)
            for org_id, reason in reasons.items():
                if reason.is_failure:
                    report.fail(org_id, "build", reason.message)
            counts["discarded"] += _discard_empty(
                [inv for inv in drafts_here if inv.organization_id not in drafts],
                actor=actor,
                job_run_id=job_run_id,
            )
            try:
                counts["finalized"] += len(
                    finalize_drafts(
                        invoices=drafts_here, drafts=drafts, actor=actor, job_run_id=job_run_id
                    )
                )
            except Exception as exc:
                for inv in drafts_here:
                    report.fail(inv.organization_id, "finalize", exc)
        live = live_invoices(organization_ids=[inv.organization_id for inv in group], period=period)
        complete_invoices(live, actor=actor, job_run_id=job_run_id, report=report)
    return counts


def _draft_manual_only(
    invoices: Sequence[Invoice],
    drafts: dict[int, InvoiceDraft],
    reasons: dict[int, NoInvoice],
    period: Period,
) -> None:
    """A draft with nothing computed to bill any more but manual lines is
    still finalized: with just those lines."""
    for invoice in invoices:
        reason = reasons.get(invoice.organization_id)
        if invoice.organization_id in drafts or (reason is not None and reason.is_failure):
            continue
        if not invoice.lines.filter(kind=InvoiceLineKind.MANUAL).exists():
            continue
        drafts[invoice.organization_id] = InvoiceDraft(
            organization_id=invoice.organization_id,
            organization_key=invoice.organization.key,
            period=period,
            currency=invoice.currency,
            lines=[],
            tax_rate_bps=invoice.tax_rate_bps,
            tax_name=invoice.tax_name,
            reverse_charge=invoice.reverse_charge,
            price_plan_id=invoice.price_plan_id,
        )
        reasons.pop(invoice.organization_id, None)


def _discard_empty(invoices: Sequence[Invoice], *, actor: str, job_run_id: int | None) -> int:
    """Drafts left with nothing to bill are deleted (audited): no number was used."""
    empty = [inv for inv in invoices if inv.status == InvoiceStatus.DRAFT]
    if not empty:
        return 0
    audit_invoices(
        empty,
        keys={inv.organization_id: inv.organization.key for inv in empty},
        action="invoice.draft_discarded",
        changes=lambda inv: {"status": [InvoiceStatus.DRAFT, None], "reason": "nothing to bill"},
        actor=actor,
        job_run_id=job_run_id,
    )
    Invoice.objects.filter(pk__in=[inv.pk for inv in empty], status=InvoiceStatus.DRAFT).delete()
    return len(empty)


def finalize_chunk(
    *, invoice_ids: list[int], actor: str, job_run_id: int | None, dry_run: bool = False
) -> ChunkResult:
    """One chunk of billing.finalize_invoices: finalize and complete the drafts."""
    invoices = list(
        Invoice.objects.filter(pk__in=invoice_ids)
        .exclude(status=InvoiceStatus.VOID)
        .select_related("organization")
        .order_by("period_start", "organization_id")
    )
    keys = {inv.organization_id: draft_item_key(inv) for inv in invoices}
    report = StepReport()
    if dry_run:
        return ChunkResult(
            summary={
                "invoices": len(invoices),
                "would_finalize": sum(1 for inv in invoices if inv.status == InvoiceStatus.DRAFT),
            },
            failures={},
            counts={"processed": len(invoices)},
        )
    counts = finalize_invoice_drafts(invoices, actor=actor, job_run_id=job_run_id, report=report)
    return ChunkResult(
        summary={
            "invoices": len(invoices),
            "finalized": counts["finalized"],
            "drafts_discarded": counts["discarded"],
            "pdfs_rendered": report.pdfs_rendered,
            "stripe_invoices_created": report.stripe_invoices_created,
            "emails_queued": report.emails_queued,
            "errors": report.errors_by_component(),
        },
        failures=failure_messages(report, keys),
        counts={"processed": len(invoices), "succeeded": len(invoices) - len(report.errors)},
    )


def _draft_for_change(invoice_id: int) -> Invoice:
    invoice = Invoice.objects.select_for_update().select_related("organization").get(pk=invoice_id)
    if invoice.status != InvoiceStatus.DRAFT:
        raise ValueError(f"invoice {invoice} is {invoice.status}, not a draft: it cannot change")
    return invoice


def _retotal(invoice: Invoice) -> None:
    subtotal = sum(invoice.lines.values_list("amount_minor", flat=True))
    invoice.subtotal_minor = subtotal
    invoice.tax_minor = tax_for(subtotal, invoice.tax_rate_bps)
    invoice.total_minor = invoice.subtotal_minor + invoice.tax_minor
    invoice.save(update_fields=["subtotal_minor", "tax_minor", "total_minor"])


def add_manual_line(
    *,
    invoice: Invoice,
    description: str,
    amount_minor: int,
    reason: str,
    actor: str,
    quantity: int = 1,
    unit: str = "",
) -> InvoiceLine:
    """Add a line staff typed to a draft (a discount is a negative amount); the
    reason is required and the change audited. ValueError, nothing written,
    for a missing reason or description, or an invoice that is not a draft."""
    description, reason = description.strip(), reason.strip()
    if not reason:
        raise ValueError("a manual line needs a reason")
    if not description:
        raise ValueError("a manual line needs a description")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise ValueError(f"the amount must be a whole number of minor units, got {amount_minor!r}")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValueError(f"the quantity must be a whole number of at least 1, got {quantity!r}")
    if amount_minor % quantity:
        raise ValueError("the amount must divide by the quantity (the unit price is whole)")
    with transaction.atomic():
        draft = _draft_for_change(invoice.pk)
        line = InvoiceLine.objects.create(
            invoice=draft,
            kind=InvoiceLineKind.MANUAL,
            description=description[:300],
            quantity=quantity,
            unit=unit[:64],
            unit_price_minor=amount_minor // quantity,
            amount_minor=amount_minor,
            reason=reason,
            added_by=actor,
        )
        before = draft.total_minor
        _retotal(draft)
        _audit_one(
            draft,
            action="invoice.manual_line_added",
            changes={
                "line": line.pk,
                "description": line.description,
                "amount_minor": amount_minor,
                "reason": reason,
                "total_minor": [before, draft.total_minor],
            },
            actor=actor,
        )
    return line


def remove_manual_line(*, line: InvoiceLine, reason: str, actor: str) -> None:
    """Remove a manual line from a draft (reason required, audited)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("removing a manual line needs a reason")
    if line.kind != InvoiceLineKind.MANUAL:
        raise ValueError("only manual lines can be removed; computed lines follow the usage")
    with transaction.atomic():
        draft = _draft_for_change(line.invoice_id)
        before = draft.total_minor
        deleted, _ = InvoiceLine.objects.filter(pk=line.pk, invoice=draft).delete()
        if not deleted:
            raise ValueError(f"line {line.pk} is not on invoice {draft.pk} any more")
        _retotal(draft)
        _audit_one(
            draft,
            action="invoice.manual_line_removed",
            changes={
                "line": line.pk,
                "description": line.description,
                "amount_minor": line.amount_minor,
                "reason": reason,
                "total_minor": [before, draft.total_minor],
            },
            actor=actor,
        )


def _audit_one(invoice: Invoice, *, action: str, changes: dict[str, Any], actor: str) -> None:
    record_audit(
        actor=actor,
        action=action,
        object_type=OBJECT_TYPE,
        object_id=invoice.pk,
        changes=changes,
        tenant=invoice.organization.key,
    )


def finalize_now(*, invoice: Invoice, actor: str) -> tuple[Invoice, StepReport]:
    """Finalize one draft before its grace ends (staff): complete the period's
    usage, recompute, number, PDF, Stripe, email. ValueError if it is not a draft."""
    if invoice.status != InvoiceStatus.DRAFT:
        raise ValueError(f"invoice {invoice} is {invoice.status}, not a draft")
    period = Period(invoice.period_start, invoice.period_end)
    complete_usage(start=period.start_at, end=period.end_at)
    report = StepReport()
    finalize_invoice_drafts([invoice], actor=actor, job_run_id=None, report=report)
    return Invoice.objects.get(pk=invoice.pk), report

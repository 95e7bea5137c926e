"""Monthly invoices: build, finalize with a gapless number, PDF, Stripe, email.

The invoice run (billing.generate_monthly_invoices) first makes the period's
usage complete (billing.services.usage.complete_usage: every hour aggregated,
no hour late), then fans organizations out in chunks; `process_chunk` does
one chunk through five steps, each one skipping what an earlier attempt
already did, so a rerun or a chunk redone after its worker died never makes a
second invoice, PDF, Stripe invoice or email:

1. build: plan fees, priced usage and late usage of earlier months, in
   memory (billing.services.build);
2. finalize: one transaction per chunk locks the year's number sequence,
   skips organizations that already have a live invoice for the period
   (the database also refuses a second one), and inserts the invoices with
   consecutive numbers, their lines, their usage-ledger rows and audit
   records. Numbers are consumed only by a committed insert, so they have no
   gaps and are never reused. With INVOICE_GRACE_HOURS above 0 this step
   inserts drafts instead (no number, nothing sent); billing.finalize_invoices
   finalizes them when the grace is over (billing.services.drafts),
   recomputing their usage first;
3. PDF: invoices without a stored PDF are rendered as one document and split
   (billing.services.pdf), stored under a name made of the number
   (`invoices/<year>/<number>.pdf`, overwritten when redone), then recorded;
4. Stripe (INVOICE_ENABLE_STRIPE, tenants with Stripe enabled): invoices
   without a Stripe id are created with the idempotency key
   `org:<id>:invoice:<YYYY-MM>`, so a call repeated after a crash returns the
   same Stripe invoice;
5. email (INVOICE_ENABLE_EMAIL): invoices with a PDF and no email are queued
   in the outbox with dedupe key `invoice:<id>` and the PDF attached; the same
   transaction marks the invoice `sent` (sent_at = queued at: delivery is then
   the outbox's job, with its own status and retries).

A failure is recorded per organization and component; the others go on.
Corrections go through credit notes (billing.services.credit_notes).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import BulkChange, record_bulk_audit
from billing.models import (
    BilledUsage,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
    NumberSequence,
    UsageRevision,
)
from billing.models.invoices import invoice_storage
from billing.services.build import (
    InvoiceDraft,
    LineDraft,
    NothingToBill,
    Period,
    build_drafts,
    tax_for,
)
from billing.services.pdf import PdfInvoice, PdfLine, format_money, format_rate, render_many
from billing.services.usage import UsageIncomplete, complete_usage
from notifications.services import (
    Attachment,
    EmailDraft,
    EmailTemplate,
    queue_bulk_with_attachments,
    queue_email,
)
from payments.gateway import GatewayError, gateway_for
from subscriptions.models import Organization, OrganizationStatus

__all__ = [
    "InvoiceDraft",
    "LineDraft",
    "NothingToBill",
    "Period",
    "UsageIncomplete",
    "build_drafts",
    "tax_for",
]

logger = logging.getLogger(__name__)

OBJECT_TYPE = "billing.invoice"
COMPONENTS = ("build", "finalize", "pdf", "storage", "stripe", "stripe_void", "email")
EMAIL_KIND = "billing.invoice"
INVOICE_SERIES = "INV"


# --- numbering ------------------------------------------------------------------


def document_number(series: str, year: int, sequence: int) -> str:
    return f"{series}-{year}-{sequence:06d}"


def invoice_number(year: int, sequence: int) -> str:
    return document_number(INVOICE_SERIES, year, sequence)


def lock_sequence(series: str, year: int) -> NumberSequence:
    """The series' counter of the year, locked until the transaction ends (made if new)."""
    NumberSequence.objects.bulk_create(
        [NumberSequence(series=series, year=year)], ignore_conflicts=True
    )
    return NumberSequence.objects.select_for_update().get(series=series, year=year)


def issue_year(period: Period) -> int:
    """Invoices are issued on the first day after their period; numbers count per that year."""
    return period.end.year


def pdf_name(number: str) -> str:
    """Deterministic, so a redone PDF overwrites its file rather than adding one."""
    year = number.split("-")[1]
    return f"{settings.INVOICE_PDF_PREFIX.rstrip('/')}/{year}/{number}.pdf"


def stripe_idempotency_key(*, organization_id: int, period: Period, reissue_of: str = "") -> str:
    """`org:<id>:invoice:<YYYY-MM>`; a reissued invoice adds its own number, since
    Stripe would otherwise answer with the voided invoice."""
    key = f"org:{organization_id}:invoice:{period.label}"
    return f"{key}:{reissue_of}" if reissue_of else key


def audit_invoices(
    invoices: Iterable[Invoice],
    *,
    keys: dict[int, str],
    action: str,
    changes: Callable[[Invoice], dict[str, Any]],
    actor: str,
    job_run_id: int | None,
    at: datetime | None = None,
) -> None:
    """One audit record per invoice (changes differ: numbers, statuses), all in
    one INSERT through the audit trail's bulk writer."""
    record_bulk_audit(
        [
            BulkChange(
                tenant=keys.get(invoice.organization_id, ""),
                action=action,
                object_type=OBJECT_TYPE,
                object_ids=[invoice.pk],
                changes=changes(invoice),
            )
            for invoice in invoices
        ],
        actor=actor,
        job_run_id=job_run_id,
        at=at,
    )


# --- 2. finalize ----------------------------------------------------------------


def _line_rows(invoice: Invoice, lines: Iterable[LineDraft]) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            invoice=invoice,
            kind=line.kind,
            description=line.description[:300],
            metric=line.metric,
            quantity=line.quantity,
            unit=line.unit[:64],
            unit_price_minor=line.unit_price_minor,
            amount_minor=line.amount_minor,
            adjusts_period_start=line.adjusts_period_start,
            reason=line.reason,
            added_by=line.added_by,
        )
        for line in lines
    ]


def _ledger_rows(invoice: Invoice, draft: InvoiceDraft) -> list[BilledUsage]:
    return [
        BilledUsage(
            organization_id=draft.organization_id,
            period_start=usage.period_start,
            metric=usage.metric,
            revision=usage.revision,
            quantity=usage.quantity,
            amount_minor=usage.amount_minor,
            invoice=invoice,
        )
        for usage in draft.usage
    ]


def _consume_revisions(drafts: Iterable[InvoiceDraft]) -> None:
    """Remove the usage revisions the finalized drafts read, unless a rebuild
    bumped them since (then the next invoice rechecks the month)."""
    seen = Q()
    any_seen = False
    for draft in drafts:
        for month, version in draft.revisions.items():
            seen |= Q(organization_id=draft.organization_id, period_start=month, version=version)
            any_seen = True
    if any_seen:
        UsageRevision.objects.filter(seen).delete()


def _numbered_fields(draft: InvoiceDraft, *, number: str, now: datetime) -> dict[str, Any]:
    issued = now.date()
    return {
        "number": number,
        "status": InvoiceStatus.FINALIZED,
        "currency": draft.currency,
        "subtotal_minor": draft.subtotal_minor,
        "tax_minor": draft.tax_minor,
        "total_minor": draft.total_minor,
        "tax_rate_bps": draft.tax_rate_bps,
        "tax_name": draft.tax_name,
        "reverse_charge": draft.reverse_charge,
        "price_plan_id": draft.price_plan_id,
        "issued_on": issued,
        "due_on": issued + timedelta(days=settings.INVOICE_PAYMENT_TERMS_DAYS),
        "finalized_at": now,
    }


def finalize(
    *, drafts: Sequence[InvoiceDraft], actor: str, job_run_id: int | None = None
) -> list[Invoice]:
    """Insert the drafts as finalized invoices with gapless numbers; returns
    the invoices created. Organizations that already have a live invoice for
    the period are left out (that is what makes a rerun safe). Must hold the
    year's sequence lock for the check and the insert, so callers that also
    void invoices do that inside the same transaction."""
    if not drafts:
        return []
    created: list[Invoice] = []
    now = timezone.now()
    with transaction.atomic():
        for year in sorted({issue_year(d.period) for d in drafts}):
            sequence = lock_sequence(INVOICE_SERIES, year)
            fresh = _not_yet_invoiced([d for d in drafts if issue_year(d.period) == year])
            if not fresh:
                continue
            invoices = [
                Invoice(
                    organization_id=d.organization_id,
                    period_start=d.period.start,
                    period_end=d.period.end,
                    created_at=now,
                    **_numbered_fields(
                        d, number=invoice_number(year, sequence.last_number + i), now=now
                    ),
                )
                for i, d in enumerate(fresh, start=1)
            ]
            Invoice.objects.bulk_create(invoices)
            sequence.last_number += len(fresh)
            sequence.save(update_fields=["last_number"])
            _write_contents(invoices, fresh)
            audit_invoices(
                invoices,
                keys={d.organization_id: d.organization_key for d in fresh},
                action="invoice.finalized",
                changes=lambda inv: {"status": [None, inv.status], "number": [None, inv.number]},
                actor=actor,
                job_run_id=job_run_id,
                at=now,
            )
            created += invoices
    return created


def _not_yet_invoiced(drafts: Sequence[InvoiceDraft]) -> list[InvoiceDraft]:
    taken = set(
        Invoice.objects.filter(
            organization_id__in=[d.organization_id for d in drafts],
            period_start__in={d.period.start for d in drafts},
        )
        .exclude(status=InvoiceStatus.VOID)
        .values_list("organization_id", "period_start")
    )
    fresh = []
    for d in drafts:
        if (d.organization_id, d.period.start) not in taken:
            taken.add((d.organization_id, d.period.start))  # once, even if repeated
            fresh.append(d)
    return fresh


def _write_contents(invoices: Sequence[Invoice], drafts: Sequence[InvoiceDraft]) -> None:
    """Lines, usage-ledger rows and consumed revisions of freshly numbered invoices."""
    pairs = list(zip(invoices, drafts, strict=True))
    InvoiceLine.objects.bulk_create([row for inv, d in pairs for row in _line_rows(inv, d.lines)])
    BilledUsage.objects.bulk_create([row for inv, d in pairs for row in _ledger_rows(inv, d)])
    _consume_revisions(drafts)


def save_drafts(
    *, drafts: Sequence[InvoiceDraft], actor: str, job_run_id: int | None = None
) -> list[Invoice]:
    """Insert the drafts as draft invoices (no number, nothing sent), to be
    finalized INVOICE_GRACE_HOURS after their period ends. Like `finalize`,
    organizations with a live invoice for the period are left out."""
    if not drafts:
        return []
    now = timezone.now()
    with transaction.atomic():
        fresh = _not_yet_invoiced(drafts)
        invoices = [
            Invoice(
                organization_id=d.organization_id,
                period_start=d.period.start,
                period_end=d.period.end,
                status=InvoiceStatus.DRAFT,
                currency=d.currency,
                subtotal_minor=d.subtotal_minor,
                tax_minor=d.tax_minor,
                total_minor=d.total_minor,
                tax_rate_bps=d.tax_rate_bps,
                tax_name=d.tax_name,
                reverse_charge=d.reverse_charge,
                price_plan_id=d.price_plan_id,
                grace_until=d.period.end_at + timedelta(hours=settings.INVOICE_GRACE_HOURS),
                created_at=now,
            )
            for d in fresh
        ]
        Invoice.objects.bulk_create(invoices)
        InvoiceLine.objects.bulk_create(
            [
                row
                for inv, d in zip(invoices, fresh, strict=True)
                for row in _line_rows(inv, d.lines)
            ]
        )
        audit_invoices(
            invoices,
            keys={d.organization_id: d.organization_key for d in fresh},
            action="invoice.drafted",
            changes=lambda inv: {"status": [None, inv.status], "total_minor": inv.total_minor},
            actor=actor,
            job_run_id=job_run_id,
            at=now,
        )
    return invoices


def finalize_drafts(
    *,
    invoices: Sequence[Invoice],
    drafts: dict[int, InvoiceDraft],
    actor: str,
    job_run_id: int | None = None,
) -> list[Invoice]:
    """Number draft invoices: their computed lines are replaced by the fresh
    build in `drafts` (keyed by organization), their manual lines kept, and
    amounts, tax and the usage ledger written, under the year's number lock.
    Invoices no longer drafts (finalized meanwhile) are left alone; returns
    those finalized here."""
    if not invoices:
        return []
    now = timezone.now()
    done: list[Invoice] = []
    with transaction.atomic():
        for year in sorted({inv.period_end.year for inv in invoices}):
            sequence = lock_sequence(INVOICE_SERIES, year)
            ids = [inv.pk for inv in invoices if inv.period_end.year == year]
            still = list(
                Invoice.objects.select_for_update()
                .filter(pk__in=ids, status=InvoiceStatus.DRAFT)
                .order_by("organization_id", "period_start")
            )
            used = []
            for invoice in still:
                draft = drafts.get(invoice.organization_id)
                if draft is None or draft.period.start != invoice.period_start:
                    continue
                manual = [
                    LineDraft(
                        kind=line.kind,
                        description=line.description,
                        quantity=line.quantity,
                        unit=line.unit,
                        unit_price_minor=line.unit_price_minor,
                        amount_minor=line.amount_minor,
                        reason=line.reason,
                        added_by=line.added_by,
                    )
                    for line in invoice.lines.filter(kind=InvoiceLineKind.MANUAL)
                ]
                invoice.lines.exclude(kind=InvoiceLineKind.MANUAL).delete()
                draft.lines = [line for line in draft.lines if line.kind != InvoiceLineKind.MANUAL]
                InvoiceLine.objects.bulk_create(_line_rows(invoice, draft.lines))
                draft.lines += manual  # for the totals
                draft.retax()
                sequence.last_number += 1
                for name, value in _numbered_fields(
                    draft, number=invoice_number(year, sequence.last_number), now=now
                ).items():
                    setattr(invoice, name, value)
                invoice.save()
                BilledUsage.objects.bulk_create(_ledger_rows(invoice, draft))
                used.append(draft)
                done.append(invoice)
            sequence.save(update_fields=["last_number"])
            _consume_revisions(used)
        audit_invoices(
            done,
            keys={d.organization_id: d.organization_key for d in drafts.values()},
            action="invoice.finalized",
            changes=lambda inv: {
                "status": [InvoiceStatus.DRAFT, inv.status],
                "number": [None, inv.number],
            },
            actor=actor,
            job_run_id=job_run_id,
            at=now,
        )
    return done


# --- 3. PDF and storage ---------------------------------------------------------


def tax_label(invoice: Invoice) -> str:
    name = invoice.tax_name or settings.INVOICE_TAX_NAME
    if invoice.reverse_charge:
        return f"{name} (reverse charge)"
    return f"{name} {format_rate(invoice.tax_rate_bps)}"


def reverse_charge_note(invoice: Invoice) -> str:
    return (
        f"Reverse charge: no {invoice.tax_name or settings.INVOICE_TAX_NAME} is charged; "
        f"the recipient ({invoice.organization.tax_id}) accounts for it."
    )


def pdf_document(invoice: Invoice) -> PdfInvoice:
    """The invoice as the PDF template sees it (needs organization and lines loaded)."""
    period = Period(invoice.period_start, invoice.period_end)
    org = invoice.organization
    issued = invoice.issued_on or invoice.period_end
    notes = []
    if invoice.reverse_charge:
        notes.append(reverse_charge_note(invoice))
    adjusted = sorted(
        {line.adjusts_period_start for line in invoice.lines.all() if line.adjusts_period_start}
    )
    if adjusted:
        months = ", ".join(f"{m:%B %Y}" for m in adjusted)
        notes.append(f"Includes usage of {months} reported after that month was invoiced.")
    return PdfInvoice(
        key=str(invoice.pk),
        number=invoice.number or "DRAFT",
        organization_key=org.key,
        organization_name=org.legal_name or org.name,
        billing_email=org.billing_email,
        buyer_address=org.billing_address,
        buyer_country=org.country,
        buyer_tax_id=org.tax_id,
        issue_date=f"{issued:%Y-%m-%d}",
        due_date=f"{invoice.due_on:%Y-%m-%d}" if invoice.due_on else "",
        payment_terms=payment_terms(invoice),
        period_label=f"{period.start:%d %b %Y} to {period.end - timedelta(days=1):%d %b %Y}",
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        tax_label=tax_label(invoice),
        total_minor=invoice.total_minor,
        notes=notes,
        lines=[
            PdfLine(
                line.description, line.quantity, line.unit, line.unit_price_minor, line.amount_minor
            )
            for line in invoice.lines.all()
        ],
    )


def payment_terms(invoice: Invoice) -> str:
    if not (invoice.issued_on and invoice.due_on):
        return ""
    days = (invoice.due_on - invoice.issued_on).days
    return f"Payment terms: net {days} days; please pay by {invoice.due_on:%d %B %Y}."


def store_pdf(*, number: str, content: bytes) -> str:
    """Store (or overwrite) the document's PDF; returns its storage name."""
    storage = invoice_storage()
    name = pdf_name(number)
    stored = storage.save(name, ContentFile(content))
    if stored != name:  # cannot happen with file_overwrite/allow_overwrite; never keep a copy
        storage.delete(stored)
        raise RuntimeError(f"storage saved {name} as {stored}")
    return name


def read_pdf(document: Any) -> bytes:
    """The stored PDF of an invoice or credit note."""
    with invoice_storage().open(document.pdf.name, "rb") as handle:
        return handle.read()


# --- the steps over a set of invoices -------------------------------------------


@dataclass
class StepReport:
    """What the steps did to a set of invoices, and what failed (per org and component)."""

    pdfs_rendered: int = 0
    stripe_invoices_created: int = 0
    stripe_skipped: int = 0
    emails_queued: int = 0
    stripe_withdrawn: str = ""  # what happened to a regenerated invoice's old Stripe invoice
    errors: dict[int, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, organization_id: int, component: str, error: Any) -> None:
        message = str(error) or type(error).__name__
        self.errors[organization_id].append((component, message))

    def errors_by_component(self) -> dict[str, int]:
        counts = dict.fromkeys(COMPONENTS, 0)
        for problems in self.errors.values():
            for component, _ in problems:
                counts[component] = counts.get(component, 0) + 1
        return counts


def complete_invoices(
    invoices: Sequence[Invoice], *, actor: str, job_run_id: int | None, report: StepReport
) -> None:
    """Steps 3-5 for finalized invoices that still need them (each step skips what is done)."""
    invoices = [inv for inv in invoices if inv.status != InvoiceStatus.DRAFT]
    pdfs = _pdf_step(invoices, report=report)
    if settings.INVOICE_ENABLE_STRIPE:
        _stripe_step(invoices, report=report)
    if settings.INVOICE_ENABLE_EMAIL:
        _email_step(invoices, pdfs=pdfs, actor=actor, job_run_id=job_run_id, report=report)


def _pdf_step(invoices: Sequence[Invoice], *, report: StepReport) -> dict[int, bytes]:
    todo = [inv for inv in invoices if not inv.pdf]
    rendered, errors = render_many([pdf_document(inv) for inv in todo])
    stored: list[Invoice] = []
    pdfs: dict[int, bytes] = {}
    for invoice in todo:
        key = str(invoice.pk)
        if key in errors:
            report.fail(invoice.organization_id, "pdf", errors[key])
            continue
        try:
            invoice.pdf.name = store_pdf(number=invoice.number, content=rendered[key])
        except Exception as exc:
            report.fail(invoice.organization_id, "storage", exc)
            continue
        pdfs[invoice.pk] = rendered[key]
        stored.append(invoice)
    if stored:
        Invoice.objects.bulk_update(stored, ["pdf"])
    report.pdfs_rendered += len(stored)
    return pdfs


def stripe_line_text(line: InvoiceLine, currency: str) -> str:
    """What a Stripe invoice item says: the line, with quantity and unit price."""
    if line.quantity == 1 and not line.unit:
        return line.description
    price = format_money(line.unit_price_minor, currency)
    return f"{line.description} ({line.quantity:,} {line.unit} \u00d7 {price})".replace("  ", " ")


def _stripe_step(invoices: Sequence[Invoice], *, report: StepReport) -> None:
    todo = [inv for inv in invoices if not inv.stripe_invoice_id]
    if not todo:
        return
    reissued = _reissued(todo)
    for invoice in todo:
        org = invoice.organization
        try:
            gateway = gateway_for(org)
        except GatewayError as exc:
            report.fail(invoice.organization_id, "stripe", exc)
            continue
        if gateway is None:
            report.stripe_skipped += 1
            continue
        period = Period(invoice.period_start, invoice.period_end)
        try:
            stripe_id = gateway.create_invoice(
                idempotency_key=stripe_idempotency_key(
                    organization_id=org.pk,
                    period=period,
                    reissue_of=invoice.number if invoice.pk in reissued else "",
                ),
                customer_email=org.billing_email,
                customer_name=org.legal_name or org.name,
                currency=invoice.currency,
                lines=[
                    (stripe_line_text(line, invoice.currency), line.amount_minor)
                    for line in invoice.lines.all()
                ]
                + ([(tax_label(invoice), invoice.tax_minor)] if invoice.tax_minor else []),
                metadata={
                    "invoice_number": invoice.number,
                    "organization": org.key,
                    "period": period.label,
                },
                description=f"Invoice {invoice.number} for {period.label}",
            )
        except Exception as exc:
            report.fail(invoice.organization_id, "stripe", exc)
            continue
        Invoice.objects.filter(pk=invoice.pk).update(stripe_invoice_id=stripe_id)
        invoice.stripe_invoice_id = stripe_id
        report.stripe_invoices_created += 1


def _reissued(invoices: Sequence[Invoice]) -> set[int]:
    """Invoices whose organization and period also have a voided invoice."""
    voided = set(
        Invoice.objects.filter(
            status=InvoiceStatus.VOID,
            organization_id__in={inv.organization_id for inv in invoices},
            period_start__in={inv.period_start for inv in invoices},
        ).values_list("organization_id", "period_start")
    )
    return {inv.pk for inv in invoices if (inv.organization_id, inv.period_start) in voided}


def invoice_email_context(invoice: Invoice) -> dict[str, Any]:
    return {
        "organization_name": invoice.organization.legal_name or invoice.organization.name,
        "number": invoice.number,
        "period_label": f"{invoice.period_start:%B %Y}",
        "total": format_money(invoice.total_minor, invoice.currency),
        "due_date": f"{invoice.due_on:%d %B %Y}" if invoice.due_on else "",
        "issuer_name": settings.INVOICE_SELLER_NAME,
    }


def queue_invoice_emails(
    items: Sequence[tuple[Invoice, bytes]],
    *,
    dedupe_keys: dict[int, str],
    actor: str,
    job_run_id: int | None,
    action: str = "invoice.sent",
) -> dict[int, int]:
    """Queue each invoice's email with its PDF attached (the outbox's
    queue_bulk_with_attachments) and mark the invoices sent, all in one
    transaction, so outbox rows and `sent` agree whatever is interrupted. A
    dedupe key queued before is linked, not queued again. Returns {invoice id:
    OutboundEmail id}."""
    renderer = EmailTemplate("invoice")
    emails = []
    for invoice, content in items:
        rendered = renderer.render(invoice_email_context(invoice))
        draft = EmailDraft(
            to=invoice.organization.billing_email,
            kind=EMAIL_KIND,
            dedupe_key=dedupe_keys[invoice.pk],
            subject=rendered.subject,
            body_text=rendered.body_text,
            body_html=rendered.body_html,
            organization_id=invoice.organization_id,
        )
        emails.append((draft, [Attachment(f"{invoice.number}.pdf", content, "application/pdf")]))
    now = timezone.now()
    with transaction.atomic():
        ids = queue_bulk_with_attachments(emails=emails, now=now)
        linked = {invoice.pk: ids[dedupe_keys[invoice.pk]] for invoice, _ in items}
        before = {invoice.pk: invoice.status for invoice, _ in items}
        invoices = [invoice for invoice, _ in items]
        for invoice in invoices:
            invoice.status, invoice.sent_at = InvoiceStatus.SENT, now
            invoice.email_id = linked[invoice.pk]
        Invoice.objects.bulk_update(invoices, ["status", "sent_at", "email_id"])
        audit_invoices(
            invoices,
            keys={inv.organization_id: inv.organization.key for inv in invoices},
            action=action,
            changes=lambda inv: {"status": [before[inv.pk], inv.status], "email_id": inv.email_id},
            actor=actor,
            job_run_id=job_run_id,
            at=now,
        )
    return linked


def _email_step(
    invoices: Sequence[Invoice],
    *,
    pdfs: dict[int, bytes],
    actor: str,
    job_run_id: int | None,
    report: StepReport,
) -> None:
    """One transaction for the chunk's emails; if it fails, one per invoice,
    so a bad one costs only its own email."""
    todo: list[tuple[Invoice, bytes]] = []
    for invoice in invoices:
        if invoice.email_id or not invoice.pdf:
            continue  # sent already, or its PDF failed (recorded as such)
        if not invoice.organization.billing_email:
            report.fail(invoice.organization_id, "email", "organization has no billing email")
            continue
        try:
            todo.append((invoice, pdfs.get(invoice.pk) or read_pdf(invoice)))
        except Exception as exc:
            report.fail(invoice.organization_id, "email", exc)
    if not todo:
        return
    try:
        _queue_batch(todo, actor=actor, job_run_id=job_run_id)
        report.emails_queued += len(todo)
        return
    except Exception:
        logger.exception("queueing %s invoice emails at once failed; one by one", len(todo))
    for batch in ([item] for item in todo):
        try:
            _queue_batch(batch, actor=actor, job_run_id=job_run_id)
        except Exception as exc:
            report.fail(batch[0][0].organization_id, "email", exc)
            continue
        report.emails_queued += 1


def _queue_batch(items: list[tuple[Invoice, bytes]], *, actor: str, job_run_id: int | None) -> None:
    queue_invoice_emails(
        items,
        dedupe_keys={invoice.pk: f"invoice:{invoice.pk}" for invoice, _ in items},
        actor=actor,
        job_run_id=job_run_id,
    )


# --- a chunk of the run -----------------------------------------------------------


def live_invoices(*, organization_ids: Sequence[int], period: Period) -> list[Invoice]:
    return list(
        Invoice.objects.filter(organization_id__in=organization_ids, period_start=period.start)
        .exclude(status=InvoiceStatus.VOID)
        .select_related("organization")
        .prefetch_related("lines")
        .order_by("organization_id")
    )


def run_period(*, process_month: str, slot: datetime) -> Period:
    """The period a run (or one of its chunks) bills: `process_month`, or the
    month before the slot."""
    return Period.parse(process_month) if process_month else Period.before_slot(slot)


@dataclass
class ChunkResult:
    """What one fanned-out chunk did, for the job layer to report: its summary,
    its item failures ({item key: message}) and its counts."""

    summary: dict[str, Any]
    failures: dict[Any, str]
    counts: dict[str, int]


def failure_messages(report: StepReport, keys: dict[int, Any]) -> dict[Any, str]:
    """{item key: "component: message; ..."} of the organizations that failed."""
    return {
        keys.get(org_id, org_id): "; ".join(f"{c}: {m}" for c, m in problems)
        for org_id, problems in report.errors.items()
    }


def make_usage_complete(
    period: Period, *, as_of: datetime, dry_run: bool = False
) -> dict[str, Any]:
    """complete_usage for the period, as a run's summary (UsageIncomplete if it cannot be)."""
    return complete_usage(
        start=period.start_at, end=period.end_at, dry_run=dry_run, as_of=as_of
    ).summary()


def invoice_chunk(
    *,
    organization_ids: list[int],
    period: Period,
    actor: str,
    job_run_id: int | None,
    dry_run: bool = False,
    keep_alive: Callable[[], None] | None = None,
) -> ChunkResult:
    """One chunk of billing.generate_monthly_invoices: build, finalize (or save as
    drafts during the grace hours) and complete the organizations' invoices."""
    items = organization_ids
    organizations = list(Organization.objects.filter(pk__in=items).order_by("pk"))
    report = StepReport()
    summary: dict[str, Any] = {"organizations_processed": len(organizations)}
    grace = settings.INVOICE_GRACE_HOURS > 0

    existing = {inv.organization_id for inv in live_invoices(organization_ids=items, period=period)}
    to_build = [org for org in organizations if org.pk not in existing]
    try:
        drafts, reasons = build_drafts(organizations=to_build, period=period)
    except Exception as exc:  # the chunk's reads failed: every organization in it
        drafts, reasons = {}, {}
        for org in to_build:
            report.fail(org.pk, "build", exc)
    skipped = 0
    for org_id, reason in reasons.items():
        if reason.is_failure:
            report.fail(org_id, "build", reason.message)
        else:
            skipped += 1

    if dry_run:
        return _dry_run_result(summary, drafts, existing, skipped, report, organizations)

    try:
        save = save_drafts if grace else finalize
        created = save(drafts=list(drafts.values()), actor=actor, job_run_id=job_run_id)
    except Exception as exc:
        created = []
        for org_id in drafts:
            report.fail(org_id, "finalize", exc)
    if keep_alive is not None:
        keep_alive()

    invoices = live_invoices(organization_ids=items, period=period)
    complete_invoices(invoices, actor=actor, job_run_id=job_run_id, report=report)

    ok = len(organizations) - len(report.errors) - skipped
    revenue: dict[str, int] = defaultdict(int)
    for invoice in invoices:
        if invoice.status != InvoiceStatus.DRAFT:
            revenue[invoice.currency] += invoice.total_minor
    totals = {
        **summary,
        "invoices_created": 0 if grace else len(created),
        "drafts_created": len(created) if grace else 0,
        "invoices_existing": len(existing),
        "nothing_to_bill": skipped,
        "late_usage_lines": sum(
            1 for inv in invoices for line in inv.lines.all() if line.adjusts_period_start
        ),
        "pdfs_rendered": report.pdfs_rendered,
        "stripe_invoices_created": report.stripe_invoices_created,
        "stripe_skipped": report.stripe_skipped,
        "emails_queued": report.emails_queued,
        "errors": report.errors_by_component(),
        "revenue_minor": dict(revenue),
    }
    return ChunkResult(
        summary=totals,
        failures=failure_messages(report, {org.pk: org.key for org in organizations}),
        counts={"processed": len(organizations), "succeeded": ok, "skipped": skipped},
    )


def _dry_run_result(
    summary: dict[str, Any],
    drafts: dict[int, InvoiceDraft],
    existing: set[int],
    skipped: int,
    report: StepReport,
    organizations: Sequence[Organization],
) -> ChunkResult:
    revenue: dict[str, int] = defaultdict(int)
    for draft in drafts.values():
        revenue[draft.currency] += draft.total_minor
    totals = {
        **summary,
        "would_create": len(drafts),
        "invoices_existing": len(existing),
        "nothing_to_bill": skipped,
        "errors": report.errors_by_component(),
        "would_bill_minor": dict(revenue),
    }
    return ChunkResult(
        summary=totals,
        failures=failure_messages(report, {org.pk: org.key for org in organizations}),
        counts={"processed": len(organizations), "skipped": skipped + len(existing)},
    )


def organizations_to_invoice(*, organization_id: int | None = None) -> list[tuple[int, str]]:
    """(id, key) of the active organizations a run bills (one, for a tenant's run)."""
    orgs = Organization.objects.filter(status=OrganizationStatus.ACTIVE)
    if organization_id is not None:
        orgs = orgs.filter(pk=organization_id)
    return list(orgs.order_by("pk").values_list("pk", "key"))


def resend_invoice(*, invoice: Invoice, actor: str) -> int:
    """Queue the invoice's email again (a new dedupe key: a deliberate second
    send); returns the new OutboundEmail id."""
    if invoice.status == InvoiceStatus.VOID:
        raise ValueError(f"invoice {invoice.number} is void; regenerate it instead")
    if invoice.status == InvoiceStatus.DRAFT:
        raise ValueError(f"invoice {invoice} is a draft; finalize it first")
    if not invoice.pdf:
        raise ValueError(f"invoice {invoice.number} has no PDF yet")
    stamp = int(time.time() * 1000)
    return queue_invoice_emails(
        [(invoice, read_pdf(invoice))],
        dedupe_keys={invoice.pk: f"invoice:{invoice.pk}:resend:{stamp}"},
        actor=actor,
        job_run_id=None,
        action="invoice.resent",
    )[invoice.pk]


# --- the run's summary email ----------------------------------------------------------


def queue_run_summary(*, run_id: int, period: Period, status: str, summary: dict[str, Any]) -> bool:
    """Email the run's summary to NOTIFY_EMAIL (once per run)."""
    return queue_email(
        to=settings.NOTIFY_EMAIL,
        kind="billing.invoice_run_summary",
        dedupe_key=f"billing.invoice_run:{run_id}",
        template="invoice_run_summary",
        context={
            "run_id": run_id,
            "period": period.label,
            "status": status,
            "organizations_processed": summary.get("organizations_processed", 0),
            "invoices_created": summary.get("invoices_created", 0),
            "errors": sorted((k, v) for k, v in summary.get("errors", {}).items() if v),
            "revenue": [
                (currency, format_money(amount, currency).rsplit(" ", 1)[0])
                for currency, amount in sorted(summary.get("revenue_minor", {}).items())
            ],
            "duration_seconds": summary.get("duration_seconds", 0),
        },
    )

"""Corrections of finalized invoices: credit notes, voids and regenerations.

A finalized invoice is never edited. Money given back is a credit note: its
own gapless series (CN-<year>-<000001>, numbered like invoices under the
series' year lock), a PDF naming the invoice it credits, stored and emailed
like an invoice, and audited. Three kinds:

* full: the whole invoice, when it is voided or regenerated (less what
  earlier partial credit notes gave back). Regenerating voids the invoice,
  credits it in full and issues a new one from today's data, in one
  transaction;
* line: one line of the invoice, in full;
* amount: an amount (before tax) with a reason.

Tax is credited at the invoice's rate, and nothing more than the invoice's
total is ever credited (checked under a lock on the invoice). On the Stripe
side each follows what Stripe allows for the Stripe invoice's state: a full
credit deletes a draft, voids an open invoice and puts a paid one's amount on
the customer's balance with a Stripe credit note; a partial credit is a
negative invoice item on a draft and a Stripe credit note on an open or paid
invoice (payments.gateway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from audit.services import record_audit
from billing.models import (
    BilledUsage,
    CreditNote,
    CreditNoteKind,
    CreditNoteLine,
    CreditNoteStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    UsageRevision,
)
from billing.services.build import NothingToBill, Period, build_drafts, tax_for
from billing.services.invoices import (
    INVOICE_SERIES,
    StepReport,
    complete_invoices,
    document_number,
    finalize,
    issue_year,
    live_invoices,
    lock_sequence,
    read_pdf,
    store_pdf,
    tax_label,
)
from billing.services.pdf import PdfInvoice, PdfLine, format_money, render_many
from billing.services.usage import complete_usage
from notifications.services import (
    Attachment,
    EmailDraft,
    EmailTemplate,
    queue_bulk_with_attachments,
)
from payments.gateway import gateway_for
from subscriptions.models import Organization

CREDIT_SERIES = "CN"
OBJECT_TYPE = "billing.creditnote"
EMAIL_KIND = "billing.credit_note"
CREDITABLE = (InvoiceStatus.FINALIZED, InvoiceStatus.SENT)


@dataclass(frozen=True)
class _Line:
    description: str
    quantity: int
    unit: str
    unit_price_minor: int
    amount_minor: int
    invoice_line_id: int | None = None


def _credited(invoice: Invoice) -> tuple[int, int]:
    """(subtotal, tax) credited on the invoice so far."""
    sums = invoice.credit_notes.aggregate(sub=Sum("subtotal_minor"), tax=Sum("tax_minor"))
    return sums["sub"] or 0, sums["tax"] or 0


def _locked_invoice(invoice_id: int) -> Invoice:
    invoice = Invoice.objects.select_for_update().select_related("organization").get(pk=invoice_id)
    if invoice.status not in CREDITABLE:
        raise ValueError(
            f"invoice {invoice} is {invoice.status}: only finalized or sent invoices are credited"
        )
    return invoice


def _issue(
    invoice: Invoice,
    *,
    kind: str,
    reason: str,
    lines: Sequence[_Line],
    tax_minor: int,
    actor: str,
    job_run_id: int | None,
) -> CreditNote:
    """Number and store one credit note (inside the caller's transaction,
    which holds the invoice's row lock)."""
    now = timezone.now()
    sequence = lock_sequence(CREDIT_SERIES, now.year)
    sequence.last_number += 1
    sequence.save(update_fields=["last_number"])
    subtotal = sum(line.amount_minor for line in lines)
    note = CreditNote.objects.create(
        invoice=invoice,
        organization_id=invoice.organization_id,
        number=document_number(CREDIT_SERIES, now.year, sequence.last_number),
        kind=kind,
        reason=reason,
        currency=invoice.currency,
        subtotal_minor=subtotal,
        tax_minor=tax_minor,
        total_minor=subtotal + tax_minor,
        issued_at=now,
        issued_by=actor,
    )
    CreditNoteLine.objects.bulk_create(
        [
            CreditNoteLine(
                credit_note=note,
                invoice_line_id=line.invoice_line_id,
                description=line.description[:300],
                quantity=line.quantity,
                unit=line.unit,
                unit_price_minor=line.unit_price_minor,
                amount_minor=line.amount_minor,
            )
            for line in lines
        ]
    )
    tenant = invoice.organization.key
    record_audit(
        actor=actor,
        action="credit_note.issued",
        object_type=OBJECT_TYPE,
        object_id=note.pk,
        changes={
            "number": note.number,
            "invoice": invoice.number,
            "kind": kind,
            "total_minor": note.total_minor,
            "reason": reason,
        },
        tenant=tenant,
        job_run_id=job_run_id,
        at=now,
    )
    record_audit(
        actor=actor,
        action="invoice.credited",
        object_type="billing.invoice",
        object_id=invoice.pk,
        changes={"credit_note": note.number, "kind": kind, "total_minor": note.total_minor},
        tenant=tenant,
        job_run_id=job_run_id,
        at=now,
    )
    return note


def _full_credit(
    invoice: Invoice, *, reason: str, actor: str, job_run_id: int | None
) -> CreditNote:
    """The whole invoice, less earlier credit notes (inside the caller's lock)."""
    lines = [
        _Line(
            line.description,
            line.quantity,
            line.unit,
            line.unit_price_minor,
            line.amount_minor,
            line.pk,
        )
        for line in invoice.lines.all()
    ]
    tax = invoice.tax_minor
    for earlier in invoice.credit_notes.order_by("pk"):
        lines.append(
            _Line(
                f"Credited before by {earlier.number}",
                1,
                "",
                -earlier.subtotal_minor,
                -earlier.subtotal_minor,
            )
        )
        tax -= earlier.tax_minor
    return _issue(
        invoice,
        kind=CreditNoteKind.FULL,
        reason=reason,
        lines=lines,
        tax_minor=tax,
        actor=actor,
        job_run_id=job_run_id,
    )


def _void(invoice: Invoice, *, reason: str, actor: str, job_run_id: int | None) -> None:
    before = invoice.status
    now = timezone.now()
    Invoice.objects.filter(pk=invoice.pk).update(
        status=InvoiceStatus.VOID, voided_at=now, void_reason=reason[:2000]
    )
    invoice.refresh_from_db()
    record_audit(
        actor=actor,
        action="invoice.voided",
        object_type="billing.invoice",
        object_id=invoice.pk,
        changes={"status": [before, InvoiceStatus.VOID], "reason": reason},
        tenant=invoice.organization.key,
        job_run_id=job_run_id,
        at=now,
    )


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a credit note needs a reason")
    return reason


def credit_invoice(
    *,
    invoice: Invoice,
    reason: str,
    actor: str,
    line: InvoiceLine | None = None,
    amount_minor: int | None = None,
    job_run_id: int | None = None,
) -> tuple[CreditNote, StepReport]:
    """A partial credit: one line of the invoice in full (`line`) or an amount
    before tax (`amount_minor`), with a reason. ValueError, nothing written,
    when the reason is missing, both or neither are given, the line is not
    the invoice's or already credited, or it would credit more than is left."""
    reason = _reason(reason)
    if (line is None) == (amount_minor is None):
        raise ValueError("credit either one line or an amount, not both or neither")
    with transaction.atomic():
        locked = _locked_invoice(invoice.pk)
        if locked.credit_notes.filter(kind=CreditNoteKind.FULL).exists():
            raise ValueError(f"invoice {locked} is already credited in full")
        done_sub, done_tax = _credited(locked)
        if line is not None:
            if line.invoice_id != locked.pk:
                raise ValueError(f"line {line.pk} is not on invoice {locked}")
            if CreditNoteLine.objects.filter(invoice_line=line).exists():
                raise ValueError(f"line {line.pk} ({line.description}) is already credited")
            lines = [
                _Line(
                    f"Credit of: {line.description}",
                    line.quantity,
                    line.unit,
                    line.unit_price_minor,
                    line.amount_minor,
                    line.pk,
                )
            ]
            net, kind = line.amount_minor, CreditNoteKind.LINE
        else:
            if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
                raise ValueError(
                    f"the amount must be a whole number of minor units, got {amount_minor!r}"
                )
            lines = [_Line(f"Credit: {reason}", 1, "", amount_minor, amount_minor)]
            net, kind = amount_minor, CreditNoteKind.AMOUNT
        if net <= 0:
            raise ValueError("only a positive amount can be credited")
        left = locked.subtotal_minor - done_sub
        if net > left:
            raise ValueError(
                f"{format_money(net, locked.currency)} is more than is left to credit on "
                f"{locked} ({format_money(left, locked.currency)} before tax)"
            )
        tax = min(tax_for(net, locked.tax_rate_bps), locked.tax_minor - done_tax)
        note = _issue(
            locked,
            kind=kind,
            reason=reason,
            lines=lines,
            tax_minor=tax,
            actor=actor,
            job_run_id=job_run_id,
        )
    report = StepReport()
    complete_credit_notes([note], actor=actor, job_run_id=job_run_id, report=report)
    note.refresh_from_db()
    return note, report


def void_invoice(
    *, invoice: Invoice, reason: str, actor: str, job_run_id: int | None = None
) -> tuple[CreditNote, StepReport]:
    """Void a finalized invoice: a full credit note, the invoice `void`, its
    Stripe twin withdrawn; late usage of earlier months it carried is billed
    again by the organization's next invoice."""
    reason = _reason(reason)
    with transaction.atomic():
        locked = _locked_invoice(invoice.pk)
        note = _full_credit(locked, reason=reason, actor=actor, job_run_id=job_run_id)
        _void(locked, reason=reason, actor=actor, job_run_id=job_run_id)
        _recheck_months_adjusted_by(locked)
    report = StepReport()
    complete_credit_notes([note], actor=actor, job_run_id=job_run_id, report=report)
    note.refresh_from_db()
    return note, report


def _recheck_months_adjusted_by(invoice: Invoice) -> None:
    """The months whose late usage the (now void) invoice billed are marked for
    recheck, so the next invoice bills that usage again."""
    months = set(
        BilledUsage.objects.filter(invoice=invoice)
        .exclude(period_start=invoice.period_start)
        .values_list("period_start", flat=True)
    )
    now = timezone.now()
    for month in sorted(months):
        revision, created = UsageRevision.objects.get_or_create(
            organization_id=invoice.organization_id,
            period_start=month,
            defaults={"revised_at": now},
        )
        if not created:
            UsageRevision.objects.filter(pk=revision.pk).update(
                version=F("version") + 1, revised_at=now
            )


def regenerate_invoice(
    *,
    organization: Organization,
    period: Period,
    actor: str,
    job_run_id: int | None = None,
    reason: str = "",
) -> tuple[Invoice, Invoice | None, StepReport, CreditNote | None]:
    """Issue the organization's invoice for the period again from today's plan
    and usage data (the period's usage completed first): the live invoice (if
    any) is credited in full and voided, and the new one numbered, in one
    transaction; then PDFs, Stripe and emails of both. Returns (new invoice,
    voided invoice or None, step report, credit note or None). Raises
    NothingToBill, and changes nothing, when there is nothing to bill; a
    ValueError for a draft (it is recomputed when finalized)."""
    complete_usage(start=period.start_at, end=period.end_at)
    current = live_invoices(organization_ids=[organization.pk], period=period)
    if current and current[0].status == InvoiceStatus.DRAFT:
        raise ValueError(
            f"the {period.label} invoice of {organization.key} is a draft: it is recomputed "
            "when finalized (finalize it now instead)"
        )
    replacing = {organization.pk: current[0].pk} if current else None
    drafts, reasons = build_drafts(organizations=[organization], period=period, replacing=replacing)
    if organization.pk not in drafts:
        raise NothingToBill(
            f"{organization.key} {period.label}: {reasons.get(organization.pk, 'nothing to bill')}"
        )
    reason = (reason or "").strip() or f"regenerated by {actor}"
    note = old = None
    with transaction.atomic():
        lock_sequence(INVOICE_SERIES, issue_year(period))
        old = (
            Invoice.objects.select_for_update()
            .select_related("organization")
            .filter(organization=organization, period_start=period.start)
            .exclude(status=InvoiceStatus.VOID)
            .first()
        )
        if old is not None:
            if replacing is None or old.pk != replacing[organization.pk]:
                raise ValueError("the invoice changed while it was rebuilt; run it again")
            note = _full_credit(old, reason=reason, actor=actor, job_run_id=job_run_id)
            _void(old, reason=reason, actor=actor, job_run_id=job_run_id)
        created = finalize(drafts=[drafts[organization.pk]], actor=actor, job_run_id=job_run_id)
    if not created:  # cannot happen: the live invoice was voided under the lock
        raise RuntimeError("no invoice was created")
    new = live_invoices(organization_ids=[organization.pk], period=period)
    report = StepReport()
    complete_invoices(new, actor=actor, job_run_id=job_run_id, report=report)
    if note is not None:
        complete_credit_notes([note], actor=actor, job_run_id=job_run_id, report=report)
        note.refresh_from_db()
        report.stripe_withdrawn = note.stripe_result
    return new[0], old, report, note


# --- the credit note's PDF, Stripe side and email ------------------------------------


def credit_note_document(note: CreditNote) -> PdfInvoice:
    invoice = note.invoice
    org = note.organization
    issued = invoice.issued_on or invoice.period_end
    return PdfInvoice(
        key=str(note.pk),
        title="Credit note",
        number=note.number,
        organization_key=org.key,
        organization_name=org.legal_name or org.name,
        billing_email=org.billing_email,
        buyer_address=org.billing_address,
        buyer_country=org.country,
        buyer_tax_id=org.tax_id,
        issue_date=f"{note.issued_at:%Y-%m-%d}",
        period_label=f"{invoice.period_start:%d %b %Y} to "
        f"{invoice.period_end - timedelta(days=1):%d %b %Y}",
        currency=note.currency,
        subtotal_minor=note.subtotal_minor,
        tax_minor=note.tax_minor,
        tax_label=tax_label(invoice),
        total_minor=note.total_minor,
        total_label="Total credited",
        notes=[
            f"Credits invoice {invoice.number} issued {issued:%Y-%m-%d} "
            f"({format_money(invoice.total_minor, invoice.currency)}).",
            f"Reason: {note.reason}",
        ],
        lines=[
            PdfLine(
                line.description, line.quantity, line.unit, line.unit_price_minor, line.amount_minor
            )
            for line in note.lines.all()
        ],
    )


def complete_credit_notes(
    notes: Sequence[CreditNote], *, actor: str, job_run_id: int | None, report: StepReport
) -> None:
    """PDF, Stripe and email of credit notes that still need them (each step
    skips what is done, so it can be run again)."""
    notes = list(
        CreditNote.objects.filter(pk__in=[n.pk for n in notes])
        .select_related("invoice", "organization", "invoice__organization")
        .prefetch_related("lines")
    )
    pdfs = _pdf_step(notes, report=report)
    if settings.INVOICE_ENABLE_STRIPE:
        _stripe_step(notes, report=report)
    if settings.INVOICE_ENABLE_EMAIL:
        _email_step(notes, pdfs=pdfs, actor=actor, job_run_id=job_run_id, report=report)


def _pdf_step(notes: Sequence[CreditNote], *, report: StepReport) -> dict[int, bytes]:
    todo = [n for n in notes if not n.pdf]
    rendered, errors = render_many([credit_note_document(n) for n in todo])
    pdfs: dict[int, bytes] = {}
    for note in todo:
        key = str(note.pk)
        if key in errors:
            report.fail(note.organization_id, "pdf", errors[key])
            continue
        try:
            note.pdf.name = store_pdf(number=note.number, content=rendered[key])
        except Exception as exc:
            report.fail(note.organization_id, "storage", exc)
            continue
        CreditNote.objects.filter(pk=note.pk).update(pdf=note.pdf.name)
        pdfs[note.pk] = rendered[key]
        report.pdfs_rendered += 1
    return pdfs


def _stripe_step(notes: Sequence[CreditNote], *, report: StepReport) -> None:
    for note in notes:
        invoice = note.invoice
        if note.stripe_result or not invoice.stripe_invoice_id:
            continue
        try:
            gateway = gateway_for(note.organization)
            if gateway is None:
                raise RuntimeError("Stripe is not enabled for this tenant any more")
            key = f"org:{note.organization_id}:credit_note:{note.number}"
            memo = f"Credit note {note.number}: {note.reason}"[:500]
            metadata = {"credit_note": note.number, "invoice_number": invoice.number or ""}
            if note.kind == CreditNoteKind.FULL:
                result = gateway.void_invoice(
                    invoice.stripe_invoice_id,
                    idempotency_key=key,
                    credit_memo=memo,
                    metadata=metadata,
                )
            else:
                result = gateway.credit_invoice(
                    invoice.stripe_invoice_id,
                    amount_minor=note.total_minor,
                    currency=note.currency,
                    memo=memo,
                    idempotency_key=key,
                    metadata=metadata,
                )
        except Exception as exc:
            report.fail(note.organization_id, "stripe_void", exc)
            continue
        CreditNote.objects.filter(pk=note.pk).update(stripe_result=result[:255])
        note.stripe_result = result


def credit_note_email_context(note: CreditNote) -> dict[str, Any]:
    org = note.organization
    return {
        "organization_name": org.legal_name or org.name,
        "number": note.number,
        "invoice_number": note.invoice.number,
        "period_label": f"{note.invoice.period_start:%B %Y}",
        "total": format_money(note.total_minor, note.currency),
        "reason": note.reason,
        "issuer_name": settings.INVOICE_SELLER_NAME,
    }


def _email_step(
    notes: Sequence[CreditNote],
    *,
    pdfs: dict[int, bytes],
    actor: str,
    job_run_id: int | None,
    report: StepReport,
) -> None:
    renderer = EmailTemplate("credit_note")
    for note in notes:
        if note.email_id or not note.pdf:
            continue
        if not note.organization.billing_email:
            report.fail(note.organization_id, "email", "organization has no billing email")
            continue
        try:
            content = pdfs.get(note.pk) or read_pdf(note)
            rendered = renderer.render(credit_note_email_context(note))
            draft = EmailDraft(
                to=note.organization.billing_email,
                kind=EMAIL_KIND,
                dedupe_key=f"credit_note:{note.pk}",
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                organization_id=note.organization_id,
            )
            now = timezone.now()
            with transaction.atomic():
                ids = queue_bulk_with_attachments(
                    emails=[
                        (draft, [Attachment(f"{note.number}.pdf", content, "application/pdf")])
                    ],
                    now=now,
                )
                email_id = ids[draft.dedupe_key]
                CreditNote.objects.filter(pk=note.pk).update(
                    status=CreditNoteStatus.SENT, sent_at=now, email_id=email_id
                )
                record_audit(
                    actor=actor,
                    action="credit_note.sent",
                    object_type=OBJECT_TYPE,
                    object_id=note.pk,
                    changes={"status": [note.status, CreditNoteStatus.SENT], "email_id": email_id},
                    tenant=note.organization.key,
                    job_run_id=job_run_id,
                    at=now,
                )
        except Exception as exc:
            report.fail(note.organization_id, "email", exc)
            continue
        note.email_id, note.status = email_id, CreditNoteStatus.SENT
        report.emails_queued += 1

"""Monthly invoices: build, finalize with a gapless number, PDF, Stripe, email.

The invoice run (billing.generate_monthly_invoices) fans organizations out in
chunks; `process_chunk` does one chunk through five steps, each one skipping
what an earlier attempt already did, so a rerun or a chunk redone after its
worker died never makes a second invoice, PDF, Stripe invoice or email:

1. build: plan fees and priced usage of the period, in memory;
2. finalize: one transaction per chunk locks the year's number sequence,
   skips organizations that already have a live invoice for the period
   (the database also refuses a second one), and inserts the invoices with
   consecutive numbers, their lines and audit records. Numbers are consumed
   only by a committed insert, so they have no gaps and are never reused;
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
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import (
    BillableMetric,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceNumberSequence,
    InvoiceStatus,
    PlanMetricPrice,
)
from billing.models.invoices import invoice_storage
from billing.services.pdf import PdfInvoice, PdfLine, format_money, line_detail, render_many
from maintenance.models import AuditTrail
from subscriptions.models import (
    Organization,
    OrganizationStatus,
    PlanInterval,
    Subscription,
    SubscriptionStatus,
)

logger = logging.getLogger(__name__)

OBJECT_TYPE = "billing.invoice"
COMPONENTS = ("build", "finalize", "pdf", "storage", "stripe", "stripe_void", "email")
# Subscriptions whose plan fee is billed for a period they overlap. Trials are
# free; expired, suspended and canceled ones were not renewed.
BILLABLE_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
EMAIL_KIND = "billing.invoice"


class NothingToBill(ValueError):
    """The organization has no billable subscription in the period."""


# --- periods --------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: date  # first day of the month
    end: date  # first day of the next month (exclusive)

    @classmethod
    def of_month(cls, month: date) -> Period:
        start = month.replace(day=1)
        end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        return cls(start, end)

    @classmethod
    def parse(cls, text: str) -> Period:
        """ "2026-01" -> January 2026; anything else is a ValueError naming the format."""
        try:
            year, month = (int(part) for part in text.strip().split("-"))
            return cls.of_month(date(year, month, 1))
        except (TypeError, ValueError):
            raise ValueError(f"month must be YYYY-MM, got {text!r}") from None

    @classmethod
    def before_slot(cls, slot: datetime) -> Period:
        """The month before the slot's month (UTC): the 1 Feb run bills January."""
        day = slot.astimezone(UTC).date().replace(day=1)
        previous = date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, 1)
        return cls.of_month(previous)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, 1, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return datetime(self.end.year, self.end.month, 1, tzinfo=UTC)


def invoice_number(year: int, sequence: int) -> str:
    return f"INV-{year}-{sequence:06d}"


def pdf_name(number: str) -> str:
    """Deterministic, so a redone PDF overwrites its file rather than adding one."""
    year = number.split("-")[1]
    return f"{settings.INVOICE_PDF_PREFIX.rstrip('/')}/{year}/{number}.pdf"


def stripe_idempotency_key(*, organization_id: int, period: Period, reissue_of: str = "") -> str:
    """`org:<id>:invoice:<YYYY-MM>`; a reissued invoice adds its own number, since
    Stripe would otherwise answer with the voided invoice."""
    key = f"org:{organization_id}:invoice:{period.label}"
    return f"{key}:{reissue_of}" if reissue_of else key


# --- 1. build ---------------------------------------------------------------------


@dataclass
class LineDraft:
    kind: str
    description: str
    quantity: int
    unit_price_minor: int
    amount_minor: int
    metric: str = ""


@dataclass
class InvoiceDraft:
    organization_id: int
    organization_key: str
    period: Period
    currency: str
    lines: list[LineDraft]
    tax_minor: int = 0

    @property
    def subtotal_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.tax_minor


def tax_for(subtotal_minor: int) -> int:
    """INVOICE_TAX_RATE_BPS of the subtotal, rounded half up, in integers."""
    bps = settings.INVOICE_TAX_RATE_BPS
    if not bps or subtotal_minor <= 0:
        return 0
    return (subtotal_minor * bps + 5_000) // 10_000


def _billable_subscriptions(
    organization_ids: Sequence[int], period: Period
) -> dict[int, list[Subscription]]:
    """Subscriptions billed in the period, per organization: monthly plans whose
    current period overlaps it; yearly plans whose current period starts in it."""
    overlaps = Q(current_period_start__lt=period.end_at, current_period_end__gt=period.start_at)
    yearly_starts = Q(
        plan__interval=PlanInterval.YEAR,
        current_period_start__gte=period.start_at,
        current_period_start__lt=period.end_at,
    )
    rows = (
        Subscription.objects.filter(
            organization_id__in=organization_ids, status__in=BILLABLE_STATUSES
        )
        .filter((overlaps & ~Q(plan__interval=PlanInterval.YEAR)) | yearly_starts)
        .select_related("plan")
        .order_by("organization_id", "-plan__price_minor", "id")
    )
    by_org: dict[int, list[Subscription]] = defaultdict(list)
    for sub in rows:
        by_org[sub.organization_id].append(sub)
    return by_org


def build_drafts(
    *, organizations: Sequence[Organization], period: Period
) -> tuple[dict[int, InvoiceDraft], dict[int, str]]:
    """The invoices the organizations would get, and why others get none.

    Plan fee: one line per billable subscription. Usage: one line per metric
    with usage, priced by the organization's main plan (its dearest billable
    subscription's); metrics without a price on that plan are not billed.
    """
    from billing.selectors import usage_totals

    ids = [org.pk for org in organizations]
    subscriptions = _billable_subscriptions(ids, period)
    usage = usage_totals(organization_ids=ids, start=period.start_at, end=period.end_at)
    plan_ids = {subs[0].plan_id for subs in subscriptions.values()}
    prices: dict[tuple[int, str], int] = {
        (plan_id, code): price
        for plan_id, code, price in PlanMetricPrice.objects.filter(
            plan_id__in=plan_ids
        ).values_list("plan_id", "metric__code", "unit_price_minor")
    }
    metrics = {m.code: m for m in BillableMetric.objects.all()}
    usage_by_org: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (org_id, code), total in sorted(usage.items()):
        usage_by_org[org_id].append((code, total))

    drafts: dict[int, InvoiceDraft] = {}
    reasons: dict[int, str] = {}
    for org in organizations:
        subs = subscriptions.get(org.pk)
        if not subs:
            reasons[org.pk] = "no billable subscription in the period"
            continue
        main = subs[0].plan
        currencies = {sub.plan.currency for sub in subs}
        if len(currencies) > 1:
            raise_for = ", ".join(sorted(currencies))
            reasons[org.pk] = f"error: subscriptions in several currencies ({raise_for})"
            continue
        lines = [
            LineDraft(
                kind=InvoiceLineKind.PLAN,
                description=f"{sub.plan.name} plan ({sub.plan.get_interval_display().lower()}), "
                f"{period.label}",
                quantity=1,
                unit_price_minor=sub.plan.price_minor,
                amount_minor=sub.plan.price_minor,
            )
            for sub in subs
        ]
        for code, total in usage_by_org.get(org.pk, ()):
            price = prices.get((main.pk, code))
            if price is None or total <= 0:
                continue
            metric = metrics.get(code)
            unit = f" ({metric.unit})" if metric and metric.unit else ""
            lines.append(
                LineDraft(
                    kind=InvoiceLineKind.USAGE,
                    description=f"{metric.name if metric else code}{unit}",
                    metric=code,
                    quantity=total,
                    unit_price_minor=price,
                    amount_minor=total * price,
                )
            )
        draft = InvoiceDraft(
            organization_id=org.pk,
            organization_key=org.key,
            period=period,
            currency=main.currency,
            lines=lines,
        )
        draft.tax_minor = tax_for(draft.subtotal_minor)
        drafts[org.pk] = draft
    return drafts, reasons


# --- 2. finalize ----------------------------------------------------------------


def _lock_sequence(year: int) -> InvoiceNumberSequence:
    """The year's counter, locked until the transaction ends (made if new)."""
    InvoiceNumberSequence.objects.bulk_create(
        [InvoiceNumberSequence(year=year)], ignore_conflicts=True
    )
    return InvoiceNumberSequence.objects.select_for_update().get(year=year)


def issue_year(period: Period) -> int:
    """Invoices are issued on the first day after their period; numbers count per that year."""
    return period.end.year


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
            batch = [d for d in drafts if issue_year(d.period) == year]
            sequence = _lock_sequence(year)
            taken = set(
                Invoice.objects.filter(
                    organization_id__in=[d.organization_id for d in batch],
                    period_start__in={d.period.start for d in batch},
                )
                .exclude(status=InvoiceStatus.VOID)
                .values_list("organization_id", "period_start")
            )
            fresh = []
            for d in batch:
                if (d.organization_id, d.period.start) not in taken:
                    taken.add((d.organization_id, d.period.start))  # once, even if repeated
                    fresh.append(d)
            if not fresh:
                continue
            invoices = [
                Invoice(
                    organization_id=d.organization_id,
                    period_start=d.period.start,
                    period_end=d.period.end,
                    number=invoice_number(year, sequence.last_number + i),
                    status=InvoiceStatus.FINALIZED,
                    currency=d.currency,
                    subtotal_minor=d.subtotal_minor,
                    tax_minor=d.tax_minor,
                    total_minor=d.total_minor,
                    created_at=now,
                    finalized_at=now,
                )
                for i, d in enumerate(fresh, start=1)
            ]
            Invoice.objects.bulk_create(invoices)
            sequence.last_number += len(fresh)
            sequence.save(update_fields=["last_number"])
            InvoiceLine.objects.bulk_create(
                [
                    InvoiceLine(
                        invoice=invoice,
                        kind=line.kind,
                        description=line.description[:300],
                        metric=line.metric,
                        quantity=line.quantity,
                        unit_price_minor=line.unit_price_minor,
                        amount_minor=line.amount_minor,
                    )
                    for invoice, d in zip(invoices, fresh, strict=True)
                    for line in d.lines
                ]
            )
            audit_many(
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


def audit_many(
    invoices: Iterable[Invoice],
    *,
    keys: dict[int, str],
    action: str,
    changes: Any,
    actor: str,
    job_run_id: int | None,
    at: datetime | None = None,
) -> None:
    """One audit record per invoice (an invoice is its organization's only
    one in the period, so the bulk pattern's one-per-tenant is one per invoice),
    written in one INSERT."""
    at = at or timezone.now()
    AuditTrail.objects.bulk_create(
        [
            AuditTrail(
                at=at,
                actor=actor,
                tenant=keys.get(invoice.organization_id, ""),
                action=action,
                object_type=OBJECT_TYPE,
                object_id=str(invoice.pk),
                changes=changes(invoice),
                job_run_id=job_run_id,
            )
            for invoice in invoices
        ]
    )


# --- 3. PDF and storage ---------------------------------------------------------


def pdf_document(invoice: Invoice) -> PdfInvoice:
    """The invoice as the PDF template sees it (needs organization and lines loaded)."""
    period = Period(invoice.period_start, invoice.period_end)
    org = invoice.organization
    return PdfInvoice(
        key=str(invoice.pk),
        number=invoice.number or "DRAFT",
        organization_key=org.key,
        organization_name=org.name,
        billing_email=org.billing_email,
        issue_date=f"{invoice.period_end:%Y-%m-%d}",
        period_label=f"{period.start:%d %b %Y} to {period.end - timedelta(days=1):%d %b %Y}",
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
        lines=[
            PdfLine(line.description, line.quantity, line.unit_price_minor, line.amount_minor)
            for line in invoice.lines.all()
        ],
    )


def store_pdf(*, number: str, content: bytes) -> str:
    """Store (or overwrite) the invoice's PDF; returns its storage name."""
    storage = invoice_storage()
    name = pdf_name(number)
    stored = storage.save(name, ContentFile(content))
    if stored != name:  # cannot happen with file_overwrite/allow_overwrite; never keep a copy
        storage.delete(stored)
        raise RuntimeError(f"storage saved {name} as {stored}")
    return name


def read_pdf(invoice: Invoice) -> bytes:
    with invoice_storage().open(invoice.pdf.name, "rb") as handle:
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
                counts[component] += 1
        return counts


def complete_invoices(
    invoices: Sequence[Invoice], *, actor: str, job_run_id: int | None, report: StepReport
) -> None:
    """Steps 3-5 for invoices that still need them (each step skips what is done)."""
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


def _stripe_step(invoices: Sequence[Invoice], *, report: StepReport) -> None:
    todo = [inv for inv in invoices if not inv.stripe_invoice_id]
    if not todo:
        return
    try:
        from payments.gateway import GatewayError, gateway_for
    except ImportError:  # payments' gateway not installed: nothing to create
        report.stripe_skipped += len(todo)
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
                customer_name=org.name,
                currency=invoice.currency,
                lines=[
                    (_stripe_line_text(line, invoice.currency), line.amount_minor)
                    for line in invoice.lines.all()
                ]
                + ([("Tax", invoice.tax_minor)] if invoice.tax_minor else []),
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


def _withdraw_stripe_invoice(invoice: Invoice, *, report: StepReport) -> None:
    """The voided invoice's Stripe twin goes too (a draft is deleted, an open one
    voided); a failure is reported and leaves the local void in place, so a
    second regeneration or staff in Stripe can finish it."""
    from payments.gateway import gateway_for

    try:
        gateway = gateway_for(invoice.organization)
        if gateway is None:
            report.fail(invoice.organization_id, "stripe_void", "Stripe is not enabled any more")
            return
        report.stripe_withdrawn = gateway.void_invoice(
            invoice.stripe_invoice_id,
            idempotency_key=stripe_idempotency_key(
                organization_id=invoice.organization_id,
                period=Period(invoice.period_start, invoice.period_end),
            ),
        )
    except Exception as exc:
        report.fail(invoice.organization_id, "stripe_void", exc)


def _stripe_line_text(line: InvoiceLine, currency: str) -> str:
    detail = line_detail(line.quantity, line.unit_price_minor, currency)
    return f"{line.description} ({detail})" if detail else line.description


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
        "organization_name": invoice.organization.name,
        "number": invoice.number,
        "period_label": f"{invoice.period_start:%B %Y}",
        "total": format_money(invoice.total_minor, invoice.currency),
        "issuer_name": settings.INVOICE_ISSUER_NAME,
    }


def queue_invoice_emails(
    items: Sequence[tuple[Invoice, bytes]],
    *,
    dedupe_keys: dict[int, str],
    actor: str,
    job_run_id: int | None,
    action: str = "invoice.sent",
) -> dict[int, int]:
    """Queue each invoice's email with its PDF attached and mark the invoices
    sent, all in one transaction, so outbox rows and `sent` agree whatever is
    interrupted. A dedupe key queued before is linked, not queued again.
    Returns {invoice id: OutboundEmail id}."""
    from notifications.models import EmailAttachment, OutboundEmail
    from notifications.services import EmailDraft, EmailTemplate, queue_bulk

    renderer = EmailTemplate("invoice")
    drafts = []
    for invoice, _ in items:
        rendered = renderer.render(invoice_email_context(invoice))
        drafts.append(
            EmailDraft(
                to=invoice.organization.billing_email,
                kind=EMAIL_KIND,
                dedupe_key=dedupe_keys[invoice.pk],
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
                organization_id=invoice.organization_id,
            )
        )
    now = timezone.now()
    with transaction.atomic():
        queue_bulk(emails=drafts, now=now)
        email_ids = dict(
            OutboundEmail.objects.filter(dedupe_key__in=list(dedupe_keys.values())).values_list(
                "dedupe_key", "pk"
            )
        )
        linked = {invoice.pk: email_ids[dedupe_keys[invoice.pk]] for invoice, _ in items}
        attached = set(
            EmailAttachment.objects.filter(email_id__in=list(linked.values())).values_list(
                "email_id", flat=True
            )
        )
        attachments = []
        for invoice, content in items:
            if linked[invoice.pk] in attached:
                continue
            attachment = EmailAttachment(
                email_id=linked[invoice.pk],
                filename=f"{invoice.number}.pdf",
                mimetype="application/pdf",
            )
            attachment.file.save(attachment.filename, ContentFile(content), save=False)
            attachments.append(attachment)
        EmailAttachment.objects.bulk_create(attachments)
        before = {invoice.pk: invoice.status for invoice, _ in items}
        invoices = [invoice for invoice, _ in items]
        for invoice in invoices:
            invoice.status, invoice.sent_at = InvoiceStatus.SENT, now
            invoice.email_id = linked[invoice.pk]
        Invoice.objects.bulk_update(invoices, ["status", "sent_at", "email_id"])
        audit_many(
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


def run_period(ctx: Any) -> Period:
    """The period a run (or one of its chunks) bills: `process_month`, or the
    month before the slot."""
    month = ctx.params.get("process_month") or ""
    return Period.parse(month) if month else Period.before_slot(ctx.slot)


def process_chunk(ctx: Any, items: list[int]) -> dict[str, Any]:
    """Fan-out target of billing.generate_monthly_invoices: one chunk of organization ids."""
    from maintenance.services import job_actor

    period = run_period(ctx)
    organizations = list(Organization.objects.filter(pk__in=items).order_by("pk"))
    actor = job_actor(job=ctx.job, run_id=ctx.run.pk)
    report = StepReport()
    summary: dict[str, Any] = {"organizations_processed": len(organizations)}

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
        if reason.startswith("error: "):
            report.fail(org_id, "build", reason.removeprefix("error: "))
        else:
            skipped += 1

    if ctx.dry_run:
        return _dry_run_summary(ctx, summary, drafts, existing, skipped, report, organizations)

    try:
        created = finalize(drafts=list(drafts.values()), actor=actor, job_run_id=ctx.run.pk)
    except Exception as exc:
        created = []
        for org_id in drafts:
            report.fail(org_id, "finalize", exc)
    keep_alive = getattr(ctx, "keep_alive", None)
    if keep_alive is not None:
        keep_alive()

    invoices = live_invoices(organization_ids=items, period=period)
    complete_invoices(invoices, actor=actor, job_run_id=ctx.run.pk, report=report)

    keys = {org.pk: org.key for org in organizations}
    for org_id, problems in report.errors.items():
        ctx.item_failed(keys.get(org_id, org_id), "; ".join(f"{c}: {m}" for c, m in problems))
    ok = len(organizations) - len(report.errors) - skipped
    ctx.count(processed=len(organizations), succeeded=ok, skipped=skipped)
    revenue: dict[str, int] = defaultdict(int)
    for invoice in invoices:
        revenue[invoice.currency] += invoice.total_minor
    return {
        **summary,
        "invoices_created": len(created),
        "invoices_existing": len(existing),
        "nothing_to_bill": skipped,
        "pdfs_rendered": report.pdfs_rendered,
        "stripe_invoices_created": report.stripe_invoices_created,
        "stripe_skipped": report.stripe_skipped,
        "emails_queued": report.emails_queued,
        "errors": report.errors_by_component(),
        "revenue_minor": dict(revenue),
    }


def _dry_run_summary(
    ctx: Any,
    summary: dict[str, Any],
    drafts: dict[int, InvoiceDraft],
    existing: set[int],
    skipped: int,
    report: StepReport,
    organizations: Sequence[Organization],
) -> dict[str, Any]:
    keys = {org.pk: org.key for org in organizations}
    for org_id, problems in report.errors.items():
        ctx.item_failed(keys.get(org_id, org_id), "; ".join(f"{c}: {m}" for c, m in problems))
    revenue: dict[str, int] = defaultdict(int)
    for draft in drafts.values():
        revenue[draft.currency] += draft.total_minor
    ctx.count(processed=len(organizations), skipped=skipped + len(existing))
    return {
        **summary,
        "would_create": len(drafts),
        "invoices_existing": len(existing),
        "nothing_to_bill": skipped,
        "errors": report.errors_by_component(),
        "would_bill_minor": dict(revenue),
    }


def organizations_to_invoice(*, organization_id: int | None = None) -> list[tuple[int, str]]:
    """(id, key) of the active organizations a run bills (one, for a tenant's run)."""
    orgs = Organization.objects.filter(status=OrganizationStatus.ACTIVE)
    if organization_id is not None:
        orgs = orgs.filter(pk=organization_id)
    return list(orgs.order_by("pk").values_list("pk", "key"))


# --- regenerate, resend --------------------------------------------------------------


def regenerate_invoice(
    *,
    organization: Organization,
    period: Period,
    actor: str,
    job_run_id: int | None = None,
    reason: str = "",
) -> tuple[Invoice, Invoice | None, StepReport]:
    """Void the organization's live invoice for the period (if any) and issue a
    new one from today's plan and usage data: new number, PDF, Stripe invoice
    and email. Returns (new invoice, voided invoice or None, step report).
    Raises NothingToBill, and changes nothing, when there is nothing to bill."""
    drafts, reasons = build_drafts(organizations=[organization], period=period)
    if organization.pk not in drafts:
        raise NothingToBill(
            f"{organization.key} {period.label}: {reasons.get(organization.pk, 'nothing to bill')}"
        )
    now = timezone.now()
    with transaction.atomic():
        _lock_sequence(issue_year(period))
        old = (
            Invoice.objects.select_for_update()
            .filter(organization=organization, period_start=period.start)
            .exclude(status=InvoiceStatus.VOID)
            .first()
        )
        if old is not None:
            before = old.status
            Invoice.objects.filter(pk=old.pk).update(
                status=InvoiceStatus.VOID,
                voided_at=now,
                void_reason=(reason or f"regenerated by {actor}")[:2000],
            )
            old.refresh_from_db()
            audit_many(
                [old],
                keys={organization.pk: organization.key},
                action="invoice.voided",
                changes=lambda inv: {"status": [before, InvoiceStatus.VOID]},
                actor=actor,
                job_run_id=job_run_id,
                at=now,
            )
        created = finalize(drafts=[drafts[organization.pk]], actor=actor, job_run_id=job_run_id)
    new = live_invoices(organization_ids=[organization.pk], period=period)
    report = StepReport()
    complete_invoices(new, actor=actor, job_run_id=job_run_id, report=report)
    if old is not None and old.stripe_invoice_id and settings.INVOICE_ENABLE_STRIPE:
        _withdraw_stripe_invoice(old, report=report)
    if not created:  # cannot happen: the live invoice was voided under the lock
        raise RuntimeError("no invoice was created")
    return new[0], old, report


def resend_invoice(*, invoice: Invoice, actor: str) -> int:
    """Queue the invoice's email again (a new dedupe key: a deliberate second
    send); returns the new OutboundEmail id."""
    if invoice.status == InvoiceStatus.VOID:
        raise ValueError(f"invoice {invoice.number} is void; regenerate it instead")
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
    from notifications.services import queue_email

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

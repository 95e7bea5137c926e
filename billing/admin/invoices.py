"""Billing admin: invoices and credit notes.

Invoices are documents: no field is edited here; money and status change
only through audited services, each behind a permission checked on the
server (not only by hiding buttons):

* a draft (INVOICE_GRACE_HOURS): add a manual line, remove one (a reason
  each), finalize it now;
* a finalized invoice: credit one line or an amount, void it with a full
  credit note (a reason each);
* regenerate (credit, void and reissue, run as the billing.regenerate_invoice
  job so it is recorded like every run; needs `jobs.run_job`) and resend
  (queue the email again).

Changing actions need `billing.change_invoice`. Staff find invoices (status,
period, currency, number or organization) and open the PDF in one click.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import Form
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.admin.forms import CreditForm, ManualLineForm, ReasonForm
from billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
)
from billing.models.invoices import invoice_storage
from billing.services.credit_notes import complete_credit_notes, credit_invoice, void_invoice
from billing.services.drafts import add_manual_line, finalize_now, remove_manual_line
from billing.services.invoices import StepReport, resend_invoice
from billing.services.pdf import format_money, format_rate
from billing.services.usage import UsageIncomplete
from jobs.admin import RunJobPermissionMixin, run_link
from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.enqueue import enqueue_run
from jobs.models import Trigger

STATUS_COLOURS = {
    InvoiceStatus.DRAFT: "#666",
    InvoiceStatus.FINALIZED: "#205493",
    InvoiceStatus.SENT: "#2e7d32",
    InvoiceStatus.VOID: "#ba2121",
}
CHANGE_PERMISSION = "billing.change_invoice"


class PeriodFilter(admin.SimpleListFilter):
    """The months that have invoices, newest first."""

    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        months = Invoice.objects.order_by("-period_start").values_list("period_start", flat=True)
        return [(f"{m:%Y-%m}", f"{m:%Y-%m}") for m in dict.fromkeys(months.distinct()[:36])]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
        if not self.value():
            return queryset
        try:
            year, month = (int(p) for p in self.value().split("-"))
        except ValueError:
            return queryset.none()
        return queryset.filter(period_start__year=year, period_start__month=month)


class _PartOfTheDocument:
    """Lines and credit notes are part of the invoice: whoever may view the
    invoice sees them (no separate view permission per line)."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("billing.view_invoice")


class InvoiceLineInline(_PartOfTheDocument, ReadOnlyAdminMixin, admin.TabularInline):
    model = InvoiceLine
    fields = [
        "kind",
        "description",
        "quantity",
        "unit",
        "unit_price",
        "amount",
        "adjusts",
        "manual",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="unit price")
    def unit_price(self, obj: InvoiceLine) -> str:
        return format_money(obj.unit_price_minor, obj.invoice.currency)

    @admin.display(description="amount")
    def amount(self, obj: InvoiceLine) -> str:
        return format_money(obj.amount_minor, obj.invoice.currency)

    @admin.display(description="late usage of")
    def adjusts(self, obj: InvoiceLine) -> str:
        return f"{obj.adjusts_period_start:%B %Y}" if obj.adjusts_period_start else ""

    @admin.display(description="manual line")
    def manual(self, obj: InvoiceLine) -> str:
        if obj.kind != InvoiceLineKind.MANUAL:
            return ""
        text = format_html("{} (by {})", obj.reason, obj.added_by)
        if obj.invoice.status != InvoiceStatus.DRAFT:
            return text
        url = reverse("admin:billing_invoice_remove_line", args=[obj.invoice_id, obj.pk])
        return format_html('{} · <a href="{}">remove</a>', text, url)


class CreditNoteInline(_PartOfTheDocument, ReadOnlyAdminMixin, admin.TabularInline):
    model = CreditNote
    fk_name = "invoice"
    fields = ["link", "kind", "total", "reason", "status", "issued_at", "stripe_result"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "credit notes"

    @admin.display(description="number")
    def link(self, obj: CreditNote) -> str:
        url = reverse("admin:billing_creditnote_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.number)

    @admin.display(description="credited")
    def total(self, obj: CreditNote) -> str:
        return format_money(obj.total_minor, obj.currency)


def _stored_pdf(document: Any, filename: str) -> FileResponse:
    if not document.pdf:
        raise Http404("no PDF yet")
    try:
        handle = invoice_storage().open(document.pdf.name, "rb")
    except FileNotFoundError:
        raise Http404("the PDF is missing from storage") from None
    return FileResponse(handle, content_type="application/pdf", filename=filename)


def _report_problems(request: HttpRequest, what: str, report: StepReport) -> None:
    for problems in report.errors.values():
        for component, message in problems:
            messages.warning(request, f"{what}: {component} failed: {message}")


@admin.register(Invoice)
class InvoiceAdmin(RunJobPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    change_form_template = "admin/billing/invoice/change_form.html"
    list_display = [
        "number_display",
        "organization",
        "period_start",
        "status_badge",
        "total_display",
        "currency",
        "pdf_link",
        "due_on",
        "sent_at",
        "stripe_invoice_id",
        "stripe_payment_status",
    ]
    list_filter = ["status", "stripe_payment_status", PeriodFilter, "currency"]
    list_select_related = ["organization"]
    search_fields = ["=number", "organization__key", "organization__name"]
    date_hierarchy = "period_start"
    list_per_page = 100
    show_full_result_count = False
    inlines = [InvoiceLineInline, CreditNoteInline]
    actions = ["regenerate", "resend"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "number",
                    "organization",
                    "status_badge",
                    "period_start",
                    "period_end",
                    "pdf_link",
                ]
            },
        ),
        (
            "Amounts",
            {"fields": ["currency", "subtotal_display", "tax_display", "total_display"]},
        ),
        ("Dates", {"fields": ["issued_on", "due_on", "grace_until"]}),
        (
            "Delivery",
            {
                "fields": [
                    "stripe_invoice_id",
                    "stripe_payment_status",
                    "stripe_status_at",
                    "email_link",
                    "sent_at",
                ]
            },
        ),
        (
            "History",
            {"fields": ["created_at", "finalized_at", "voided_at", "void_reason"]},
        ),
    ]
    readonly_fields = [
        "number",
        "organization",
        "status_badge",
        "period_start",
        "period_end",
        "pdf_link",
        "currency",
        "subtotal_display",
        "tax_display",
        "total_display",
        "issued_on",
        "due_on",
        "grace_until",
        "stripe_invoice_id",
        "stripe_payment_status",
        "stripe_status_at",
        "email_link",
        "sent_at",
        "created_at",
        "finalized_at",
        "voided_at",
        "void_reason",
    ]

    def get_urls(self) -> list[Any]:
        def view(name: str, route: str, func: Any) -> Any:
            return path(route, self.admin_site.admin_view(func), name=f"billing_invoice_{name}")

        return [
            view("pdf", "<path:object_id>/pdf/", self.pdf_view),
            view("add_line", "<int:object_id>/add-line/", self.add_line_view),
            view(
                "remove_line", "<int:object_id>/remove-line/<int:line_id>/", self.remove_line_view
            ),
            view("finalize", "<int:object_id>/finalize/", self.finalize_view),
            view("credit", "<int:object_id>/credit/", self.credit_view),
            view("void", "<int:object_id>/void/", self.void_view),
            *super().get_urls(),
        ]

    # --- permissions and shared page plumbing --------------------------------------

    def can_change_invoices(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CHANGE_PERMISSION)

    def _invoice_for_change(self, request: HttpRequest, object_id: int) -> Invoice:
        """The invoice, for a user allowed to change invoices (checked here, on
        the server, whatever the page showed)."""
        if not self.can_change_invoices(request):
            raise PermissionDenied(f"you need the {CHANGE_PERMISSION} permission")
        return get_object_or_404(Invoice.objects.select_related("organization"), pk=object_id)

    def _change_url(self, invoice: Invoice) -> str:
        return reverse("admin:billing_invoice_change", args=[invoice.pk])

    def _action_page(
        self,
        request: HttpRequest,
        invoice: Invoice,
        *,
        title: str,
        form: Form,
        button: str,
        intro: str = "",
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "invoice": invoice,
            "form": form,
            "button": button,
            "intro": intro,
            "total": format_money(invoice.total_minor, invoice.currency),
        }
        return TemplateResponse(request, "admin/billing/invoice/action.html", context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        invoice = Invoice.objects.filter(pk=object_id).first()
        can_change = invoice is not None and self.can_change_invoices(request)
        extra = {
            **(extra_context or {}),
            "can_edit_draft": can_change and invoice.status == InvoiceStatus.DRAFT,
            "can_credit": can_change
            and invoice.status in (InvoiceStatus.FINALIZED, InvoiceStatus.SENT),
        }
        return super().change_view(request, object_id, form_url, extra_context=extra)

    # --- views ------------------------------------------------------------------------

    def pdf_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        """The stored PDF, inline, for staff who may view invoices."""
        invoice = get_object_or_404(Invoice, pk=object_id)
        if not self.has_view_permission(request, invoice):
            raise PermissionDenied("you need the billing.view_invoice permission")
        if not invoice.pdf:
            raise Http404("this invoice has no PDF yet")
        return _stored_pdf(invoice, f"{invoice.number or invoice.pk}.pdf")

    def add_line_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        invoice = self._invoice_for_change(request, object_id)
        form = ManualLineForm(request.POST or None, invoice=invoice)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                add_manual_line(
                    invoice=invoice,
                    description=data["description"],
                    amount_minor=data["amount"],
                    quantity=data["quantity"],
                    unit=data["unit"],
                    reason=data["reason"],
                    actor=f"user:{request.user.get_username()}",
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{invoice}: manual line added.")
                return HttpResponseRedirect(self._change_url(invoice))
        return self._action_page(
            request, invoice, title=f"Add a manual line to {invoice}", form=form, button="Add line"
        )

    def remove_line_view(self, request: HttpRequest, object_id: int, line_id: int) -> HttpResponse:
        invoice = self._invoice_for_change(request, object_id)
        line = get_object_or_404(InvoiceLine, pk=line_id, invoice=invoice)
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                remove_manual_line(
                    line=line,
                    reason=form.cleaned_data["reason"],
                    actor=f"user:{request.user.get_username()}",
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{invoice}: line removed.")
                return HttpResponseRedirect(self._change_url(invoice))
        amount = format_money(line.amount_minor, invoice.currency)
        return self._action_page(
            request,
            invoice,
            title=f"Remove a line from {invoice}",
            form=form,
            button="Remove line",
            intro=f"{line.description}: {amount}",
        )

    def finalize_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        invoice = self._invoice_for_change(request, object_id)
        if request.method == "POST":
            try:
                done, report = finalize_now(
                    invoice=invoice, actor=f"user:{request.user.get_username()}"
                )
            except (ValueError, UsageIncomplete) as exc:
                messages.error(request, f"{invoice}: not finalized: {exc}")
            else:
                _report_problems(request, str(done), report)
                if done.status == InvoiceStatus.DRAFT:
                    messages.error(request, f"{invoice}: not finalized (see the problems above).")
                else:
                    messages.success(request, f"{done} finalized ({done.status}).")
            return HttpResponseRedirect(self._change_url(invoice))
        return self._action_page(
            request,
            invoice,
            title=f"Finalize {invoice} now",
            form=Form(),
            button="Finalize now",
            intro="Its usage is completed and recomputed, then it is numbered, rendered, "
            "sent to Stripe and emailed, before its grace period ends.",
        )

    def credit_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        invoice = self._invoice_for_change(request, object_id)
        form = CreditForm(request.POST or None, invoice=invoice)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                note, report = credit_invoice(
                    invoice=invoice,
                    line=data.get("line"),
                    amount_minor=data.get("amount_minor"),
                    reason=data["reason"],
                    actor=f"user:{request.user.get_username()}",
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                _report_problems(request, note.number, report)
                messages.success(
                    request,
                    f"{note.number} issued: {format_money(note.total_minor, note.currency)} "
                    f"credited on {invoice}.",
                )
                return HttpResponseRedirect(self._change_url(invoice))
        return self._action_page(
            request,
            invoice,
            title=f"Credit part of {invoice}",
            form=form,
            button="Issue credit note",
        )

    def void_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        invoice = self._invoice_for_change(request, object_id)
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                note, report = void_invoice(
                    invoice=invoice,
                    reason=form.cleaned_data["reason"],
                    actor=f"user:{request.user.get_username()}",
                )
            except ValueError as exc:
                form.add_error(None, str(exc))
            else:
                _report_problems(request, note.number, report)
                messages.success(request, f"{invoice} voided; credit note {note.number} issued.")
                return HttpResponseRedirect(self._change_url(invoice))
        return self._action_page(
            request,
            invoice,
            title=f"Void {invoice}",
            form=form,
            button="Void with a credit note",
            intro="The whole invoice is credited by a credit note (numbered, PDF, emailed) and "
            "its Stripe invoice withdrawn as far as Stripe allows.",
        )

    # --- columns ----------------------------------------------------------------------

    @admin.display(description="number", ordering="number")
    def number_display(self, obj: Invoice) -> str:
        return obj.number or "(draft)"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Invoice) -> str:
        return format_html(
            '<strong style="color:{}">{}</strong>',
            STATUS_COLOURS.get(obj.status, "#666"),
            obj.status,
        )

    @admin.display(description="subtotal", ordering="subtotal_minor")
    def subtotal_display(self, obj: Invoice) -> str:
        return format_money(obj.subtotal_minor, obj.currency)

    @admin.display(description="tax")
    def tax_display(self, obj: Invoice) -> str:
        name = obj.tax_name or "Tax"
        if obj.reverse_charge:
            return f"{format_money(obj.tax_minor, obj.currency)} ({name}, reverse charge)"
        return (
            f"{format_money(obj.tax_minor, obj.currency)} ({name} {format_rate(obj.tax_rate_bps)})"
        )

    @admin.display(description="total", ordering="total_minor")
    def total_display(self, obj: Invoice) -> str:
        return format_money(obj.total_minor, obj.currency)

    @admin.display(description="PDF")
    def pdf_link(self, obj: Invoice) -> str:
        if not obj.pdf:
            return "-"
        url = reverse("admin:billing_invoice_pdf", args=[obj.pk])
        return format_html('<a href="{}" target="_blank">PDF</a>', url)

    @admin.display(description="email")
    def email_link(self, obj: Invoice) -> str:
        if not obj.email_id:
            return "-"
        url = reverse("admin:notifications_outboundemail_change", args=[obj.email_id])
        return format_html('<a href="{}">#{}</a>', url, obj.email_id)

    # --- list actions ------------------------------------------------------------------

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return self.can_change_invoices(request)

    @admin.action(description="Regenerate (credit, void and reissue)", permissions=["run_job"])
    def regenerate(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        for invoice in queryset.select_related("organization"):
            if invoice.status == InvoiceStatus.VOID:
                messages.warning(request, f"{invoice}: void; regenerate its live successor")
                continue
            if invoice.status == InvoiceStatus.DRAFT:
                messages.warning(request, f"{invoice}: a draft; finalize it instead")
                continue
            try:
                run, _ = enqueue_run(
                    "billing.regenerate_invoice",
                    tenant=invoice.organization.key,
                    params={
                        "organization": invoice.organization.key,
                        "month": f"{invoice.period_start:%Y-%m}",
                    },
                    trigger=Trigger.ADMIN,
                    triggered_by=request.user.get_username(),
                )
            except (ValueError, LookupError) as exc:
                messages.error(request, f"{invoice}: not regenerated: {exc}")
                continue
            messages.success(
                request, format_html("{}: regeneration queued as {}.", invoice, run_link(run.pk))
            )

    @admin.action(description="Resend the invoice email", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        actor = f"user:{request.user.get_username()}"
        for invoice in queryset.select_related("organization"):
            try:
                email_id = resend_invoice(invoice=invoice, actor=actor)
            except (ValueError, OSError) as exc:
                messages.error(request, f"{invoice}: not resent: {exc}")
                continue
            messages.success(request, f"{invoice}: email #{email_id} queued.")


class CreditNoteLineInline(_PartOfTheDocument, ReadOnlyAdminMixin, admin.TabularInline):
    model = CreditNoteLine
    fields = ["description", "quantity", "unit", "unit_price", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="unit price")
    def unit_price(self, obj: CreditNoteLine) -> str:
        return format_money(obj.unit_price_minor, obj.credit_note.currency)

    @admin.display(description="amount")
    def amount(self, obj: CreditNoteLine) -> str:
        return format_money(obj.amount_minor, obj.credit_note.currency)


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Credit notes are issued from their invoice's page; here they are read,
    their PDF opened, and unfinished ones (PDF, Stripe, email) completed."""

    list_display = [
        "number",
        "invoice_link",
        "organization",
        "kind",
        "total_display",
        "status",
        "pdf_link",
        "issued_at",
        "stripe_result",
    ]
    list_filter = ["kind", "status", "currency"]
    list_select_related = ["organization", "invoice"]
    search_fields = ["=number", "=invoice__number", "organization__key"]
    show_full_result_count = False
    inlines = [CreditNoteLineInline]
    actions = ["complete"]
    fields = [
        "number",
        "invoice_link",
        "organization",
        "kind",
        "reason",
        "currency",
        "subtotal_display",
        "tax_display",
        "total_display",
        "status",
        "pdf_link",
        "stripe_result",
        "email_id",
        "issued_at",
        "issued_by",
        "sent_at",
    ]
    readonly_fields = fields

    def get_urls(self) -> list[Any]:
        pdf = path(
            "<path:object_id>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="billing_creditnote_pdf",
        )
        return [pdf, *super().get_urls()]

    def pdf_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        note = get_object_or_404(CreditNote, pk=object_id)
        if not self.has_view_permission(request, note):
            raise PermissionDenied("you need the billing.view_creditnote permission")
        return _stored_pdf(note, f"{note.number}.pdf")

    @admin.display(description="invoice")
    def invoice_link(self, obj: CreditNote) -> str:
        url = reverse("admin:billing_invoice_change", args=[obj.invoice_id])
        return format_html('<a href="{}">{}</a>', url, obj.invoice)

    @admin.display(description="subtotal")
    def subtotal_display(self, obj: CreditNote) -> str:
        return format_money(obj.subtotal_minor, obj.currency)

    @admin.display(description="tax")
    def tax_display(self, obj: CreditNote) -> str:
        return format_money(obj.tax_minor, obj.currency)

    @admin.display(description="credited", ordering="total_minor")
    def total_display(self, obj: CreditNote) -> str:
        return format_money(obj.total_minor, obj.currency)

    @admin.display(description="PDF")
    def pdf_link(self, obj: CreditNote) -> str:
        if not obj.pdf:
            return "-"
        url = reverse("admin:billing_creditnote_pdf", args=[obj.pk])
        return format_html('<a href="{}" target="_blank">PDF</a>', url)

    def has_complete_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CHANGE_PERMISSION)

    @admin.action(description="Complete (PDF, Stripe, email)", permissions=["complete"])
    def complete(self, request: HttpRequest, queryset: QuerySet[CreditNote]) -> None:
        report = StepReport()
        notes = list(queryset)
        complete_credit_notes(
            notes, actor=f"user:{request.user.get_username()}", job_run_id=None, report=report
        )
        _report_problems(request, "credit notes", report)
        messages.success(request, f"{len(notes)} credit note(s) checked.")

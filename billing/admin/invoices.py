"""Billing admin: invoices.

Invoices are documents: nobody edits them here. Staff find them (status,
period, currency, number or organization), open the PDF in one click, and act
through two actions: regenerate (void and reissue, run as the
billing.regenerate_invoice job so it is recorded like every run; needs
`jobs.run_job`) and resend (queue the email again; needs
`billing.change_invoice`).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from billing.models import Invoice, InvoiceLine, InvoiceStatus
from billing.models.invoices import invoice_storage
from billing.services.invoices import resend_invoice
from billing.services.pdf import format_money
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


class InvoiceLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = InvoiceLine
    fields = ["kind", "description", "metric", "quantity", "unit_price_minor", "amount_minor"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Invoice)
class InvoiceAdmin(RunJobPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "number_display",
        "organization",
        "period_start",
        "status_badge",
        "total_display",
        "currency",
        "pdf_link",
        "sent_at",
        "stripe_invoice_id",
    ]
    list_filter = ["status", PeriodFilter, "currency"]
    list_select_related = ["organization"]
    search_fields = ["=number", "organization__key", "organization__name"]
    date_hierarchy = "period_start"
    list_per_page = 100
    show_full_result_count = False
    inlines = [InvoiceLineInline]
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
        ("Amounts", {"fields": ["currency", "subtotal_minor", "tax_minor", "total_display"]}),
        (
            "Delivery",
            {"fields": ["stripe_invoice_id", "email_link", "sent_at"]},
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
        "subtotal_minor",
        "tax_minor",
        "total_display",
        "stripe_invoice_id",
        "email_link",
        "sent_at",
        "created_at",
        "finalized_at",
        "voided_at",
        "void_reason",
    ]

    def get_urls(self) -> list[Any]:
        pdf = path(
            "<path:object_id>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="billing_invoice_pdf",
        )
        return [pdf, *super().get_urls()]

    def pdf_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        """The stored PDF, inline, for staff who may view invoices."""
        invoice = get_object_or_404(Invoice, pk=object_id)
        if not self.has_view_permission(request, invoice):
            raise PermissionDenied("you need the billing.view_invoice permission")
        if not invoice.pdf:
            raise Http404("this invoice has no PDF yet")
        try:
            handle = invoice_storage().open(invoice.pdf.name, "rb")
        except FileNotFoundError:
            raise Http404("the invoice's PDF is missing from storage") from None
        filename = f"{invoice.number or invoice.pk}.pdf"
        return FileResponse(handle, content_type="application/pdf", filename=filename)

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

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_invoice")

    @admin.action(description="Regenerate (void and reissue)", permissions=["run_job"])
    def regenerate(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        for invoice in queryset.select_related("organization"):
            if invoice.status == InvoiceStatus.VOID:
                messages.warning(request, f"{invoice}: void; regenerate its live successor")
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

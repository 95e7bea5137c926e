from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from jobs.admin_readonly import ReadOnlyAdminMixin
from notifications.models import EmailAttachment, OutboundEmail, SuppressedAddress
from notifications.selectors import status_counts
from notifications.services import cancel, retry_now


class EmailAttachmentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = EmailAttachment
    fields = ("filename", "mimetype", "file")
    extra = 0


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The outbox is evidence of what was sent: rows are read-only; staff with
    the change permission may only retry or cancel them."""

    list_display = ("created_at", "kind", "to", "subject", "status", "attempts", "sent_at")
    list_filter = ("status", "kind", "organization")
    search_fields = ("to", "subject", "=dedupe_key", "=provider_message_id")
    list_select_related = ("organization",)
    show_full_result_count = False
    inlines = [EmailAttachmentInline]
    actions = ["retry_now_action", "cancel_action"]

    def has_outbox_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.change_outboundemail")

    @admin.action(description="Retry now (queued or failed)", permissions=["outbox"])
    def retry_now_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        n = retry_now(ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"{n} email(s) queued to send now.", messages.SUCCESS)

    @admin.action(description="Cancel (queued only)", permissions=["outbox"])
    def cancel_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        n = cancel(
            ids=list(queryset.values_list("id", flat=True)),
            actor=f"user:{request.user.get_username()}",
        )
        self.message_user(request, f"{n} email(s) canceled.", messages.SUCCESS)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "outbox_status_counts": status_counts()}
        return super().changelist_view(request, extra_context=extra_context)


@admin.register(SuppressedAddress)
class SuppressedAddressAdmin(admin.ModelAdmin):
    """Staff add addresses by hand; bounces and complaints from SES add themselves."""

    list_display = ("email", "reason", "created_at", "note")
    list_filter = ("reason",)
    search_fields = ("email",)

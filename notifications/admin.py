from django.contrib import admin

from jobs.admin_readonly import ReadOnlyAdminMixin
from notifications.models import OutboundEmail


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only until the sender (issue 5) adds retry and cancel actions."""

    list_display = ("created_at", "kind", "to", "subject", "status", "attempts", "sent_at")
    list_filter = ("status", "kind", "organization")
    search_fields = ("to", "subject", "=dedupe_key", "=provider_message_id")
    list_select_related = ("organization",)
    show_full_result_count = False

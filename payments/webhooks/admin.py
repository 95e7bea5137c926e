"""Admin for received Stripe webhook events: evidence, read-only."""

from __future__ import annotations

from django.contrib import admin

from jobs.admin_readonly import ReadOnlyAdminMixin
from payments.models import StripeWebhookEvent


@admin.register(StripeWebhookEvent)
class StripeWebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "organization", "type", "event_id", "status", "outcome")
    list_filter = ("status", "type")
    list_select_related = ("organization",)
    search_fields = ("=event_id", "=object_id", "organization__key")
    date_hierarchy = "received_at"
    show_full_result_count = False
    readonly_fields = (
        "organization",
        "event_id",
        "type",
        "object_id",
        "created",
        "livemode",
        "received_at",
        "status",
        "attempts",
        "processed_at",
        "outcome",
        "payload",
    )

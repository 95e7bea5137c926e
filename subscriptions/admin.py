from django.contrib import admin

from audit.admin_audit import AuditedAdminMixin
from jobs.paginator import EstimatedCountPaginator
from subscriptions.models import Organization, Plan, Subscription


@admin.register(Organization)
class OrganizationAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("key", "name", "billing_email", "status", "timezone", "created_at")
    list_filter = ("status",)
    search_fields = ("key", "name", "billing_email")


@admin.register(Plan)
class PlanAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("name", "price_minor", "currency", "interval")
    list_filter = ("currency", "interval")
    search_fields = ("name",)


# Money and status edits here are audited (audit.admin_audit), like every change.
@admin.register(Subscription)
class SubscriptionAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "organization",
        "plan",
        "status",
        "current_period_end",
        "auto_renew",
        "expired_at",
        "suspended_at",
        "reconciliation_status",
        "last_stripe_sync_at",
    )
    # No organization filter (10,000 choices) or date hierarchy (DISTINCT over
    # the table): search by organization key instead; counts are estimated.
    list_filter = ("status", "auto_renew", "reconciliation_status", "plan")
    list_select_related = ("organization", "plan")
    search_fields = ("=id", "=stripe_subscription_id", "=organization__key", "organization__name")
    readonly_fields = ("last_stripe_sync_at", "reconciliation_status", "reconciliation_error")
    raw_id_fields = ("organization",)
    ordering = ("-id",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator

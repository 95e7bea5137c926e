from django.contrib import admin
from django.urls import include, path

from audit import views as audit_views
from jobs import health, metrics_access

urlpatterns = [
    path("admin/jobs/", include("jobs.admin_urls")),
    # AuditTrail moved from the maintenance app to audit: old admin links redirect.
    path("admin/maintenance/audittrail/", audit_views.old_admin_url),
    path("admin/maintenance/audittrail/<path:rest>", audit_views.old_admin_url),
    path("admin/", admin.site.urls),
    path("api/usage/", include("billing.api_urls")),
    path("api/", include("jobs.api_urls")),
    path("ses/", include("notifications.urls")),
    path("webhooks/stripe/", include("payments.webhooks.urls")),
    path("health/", health.health_view, name="health"),
    path("health/live", health.live_view, name="health-live"),
    path("health/ready", health.ready_view, name="health-ready"),
    path("metrics", metrics_access.metrics_endpoint, name="metrics"),
]

from django.contrib import admin
from django.urls import include, path

from jobs import health, metrics

urlpatterns = [
    path("admin/jobs/", include("jobs.admin_urls")),
    path("admin/", admin.site.urls),
    path("api/", include("jobs.api_urls")),
    path("ses/", include("notifications.urls")),
    path("health/", health.health_view, name="health"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

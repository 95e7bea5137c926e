"""URLs of the jobs admin pages, mounted at /admin/jobs/ before admin.site.urls.

Paths here must not shadow the model admin URLs (`jobrun/`, `schedulestate/`,
`jobaction/`), which fall through to admin.site.urls.
"""

from collections.abc import Callable

from django.contrib import admin
from django.http import HttpResponse
from django.urls import path

from jobs import admin_console as console
from jobs import admin_views as views


def _admin(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff login, CSRF protection and no caching, as every admin page has."""
    return admin.site.admin_view(view)


urlpatterns = [
    path("overview/", _admin(views.overview), name="jobs_overview"),
    path("job/<str:name>/start/", _admin(console.start), name="jobs_start"),
    path("run/<int:pk>/confirm/", _admin(console.confirm), name="jobs_confirm"),
    path("run/<int:pk>/cancel/", _admin(console.cancel), name="jobs_cancel"),
    path("run/<int:pk>/live/", _admin(console.run_live), name="jobs_run_live"),
    path("charts/", _admin(console.charts_page), name="jobs_charts"),
    path("tenants/", _admin(console.tenant_search), name="jobs_tenant_search"),
    path("job/<str:name>/run/", _admin(views.run_now), name="jobs_run_now"),
    path("job/<str:name>/dry-run/", _admin(views.dry_run), name="jobs_dry_run"),
    path("job/<str:name>/pause/", _admin(views.pause), name="jobs_pause"),
    path("job/<str:name>/resume/", _admin(views.resume), name="jobs_resume"),
    path("run/<int:pk>/rerun/", _admin(views.rerun), name="jobs_rerun"),
    path(
        "run/<int:pk>/rerun-failed/",
        _admin(views.rerun_failed_items),
        name="jobs_rerun_failed_items",
    ),
]

"""Mounted at "api/" so "/api/jobs" needs no trailing slash and no pattern
starts with "/" (Django's urls.W002). Anything else under /api/jobs answers a
JSON 404."""

from django.urls import path, re_path

from jobs import api, openapi

app_name = "jobs-api"

urlpatterns = [
    path("openapi.json", openapi.openapi_view, name="openapi"),
    path("jobs", api.catalogue, name="catalogue"),
    path("jobs/", api.catalogue),
    re_path(r"^jobs/runs/(?P<run_id>[0-9]+)/?$", api.run_status, name="run"),
    re_path(r"^jobs/runs/(?P<run_id>[0-9]+)/cancel/?$", api.cancel, name="cancel"),
    re_path(r"^jobs/(?P<name>[^/]+)/runs/?$", api.start_run, name="start"),
    # [\s\S], not ".": a percent-encoded newline in the path must get JSON too.
    re_path(r"^jobs/(?P<rest>[\s\S]*)$", api.not_found),
]

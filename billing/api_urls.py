"""Mounted at "api/usage/" (config/urls.py)."""

from django.urls import path

from billing import api

app_name = "usage-api"

urlpatterns = [
    path("events", api.post_events, name="events"),
    path("summary", api.summary, name="summary"),
]

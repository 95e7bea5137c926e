"""Usage over the JSON API: push events, read a period's totals.

Built on the jobs platform's API plumbing (jobs.api: method check, the API
key, JSON refusals that name the problem, never a 500) with scopes of their
own: `usage:write` to push, `usage:read` to read; a pattern
(`usage:write:acme-*`) limits a key to the organizations it matches.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from billing.models import BillableMetric
from billing.selectors import usage_totals
from billing.services.usage_ingest import ingest_usage_events, storable_text
from jobs.api import BadRequest, api_view, client_of, read_json_body
from jobs.api_auth import require_scope
from jobs.api_keys import register_scope_resource
from subscriptions.models import Organization

register_scope_resource("usage", actions={"write": (), "read": ()})

MAX_SUMMARY_DAYS = 400  # a year and then some: a customer's usage page
BATCH_FIELDS = ("events",)


@api_view("POST")
def post_events(request: HttpRequest) -> JsonResponse:
    """Store a batch of usage events: 200 with one result per event, in order."""
    client = client_of(request)
    require_scope(client, "usage:write")
    body = read_json_body(request, max_bytes=settings.USAGE_API_MAX_BODY_BYTES)
    events = batch_events(body)
    result = ingest_usage_events(
        events=events, may_write=lambda org: client.may(f"usage:write:{org}")
    )
    return JsonResponse(result.as_json())


@api_view("GET")
def summary(request: HttpRequest) -> JsonResponse:
    """An organization's usage totals per metric over [from, to), as an invoice bills them."""
    client = client_of(request)
    require_scope(client, "usage:read")
    unknown = sorted(set(request.GET) - {"organization", "from", "to"})
    if unknown:
        raise BadRequest(
            f"unknown query parameter {unknown[0][:100]!r}; allowed: organization, from, to",
            field=unknown[0][:100],
        )
    key = request.GET.get("organization", "")
    if not key:
        raise BadRequest("the organization query parameter is required", field="organization")
    start = hour_param(request, "from")
    end = hour_param(request, "to")
    if end <= start:
        raise BadRequest("to must be after from", field="to")
    if end - start > timedelta(days=MAX_SUMMARY_DAYS):
        raise BadRequest(f"a summary covers at most {MAX_SUMMARY_DAYS} days", field="to")
    found = len(key) <= 100 and storable_text(key)
    org = Organization.objects.filter(key=key).only("pk", "key").first() if found else None
    if org is None or not client.may(f"usage:read:{org.key}"):
        raise BadRequest(f"unknown organization {key[:100]!r}", status=404, field="organization")
    totals = usage_totals(organization_ids=[org.pk], start=start, end=end)
    by_metric = {metric: total for (_, metric), total in totals.items()}
    metrics = []
    for metric in BillableMetric.objects.order_by("code"):
        metrics.append(
            {
                "metric": metric.code,
                "name": metric.name,
                "aggregation": metric.aggregation,
                "unit": metric.unit,
                "total": by_metric.pop(metric.code, 0),
            }
        )
    return JsonResponse(
        {
            "organization": org.key,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "metrics": metrics,
        }
    )


def batch_events(body: Any) -> list[Any]:
    """The batch's events, refusing a malformed envelope or too many events."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"events": [...]}')
    unknown = sorted(set(body) - set(BATCH_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0][:100]!r}; allowed: events", field=unknown[0][:100]
        )
    events = body.get("events")
    if not isinstance(events, list):
        raise BadRequest("events must be an array of usage events", field="events")
    if not events:
        raise BadRequest("events is empty: send 1 or more events", field="events")
    limit = settings.USAGE_API_MAX_EVENTS
    if len(events) > limit:
        raise BadRequest(
            f"a batch holds at most {limit} events, this one has {len(events)}",
            status=413,
            field="events",
        )
    return events


def hour_param(request: HttpRequest, name: str) -> datetime:
    """A date (its midnight UTC) or an ISO 8601 timestamp on the hour, with a zone."""
    text = request.GET.get(name, "")
    if not text:
        raise BadRequest(f"the {name} query parameter is required", field=name)
    if len(text) > 64:
        raise BadRequest(f"{name} is not a date or an ISO 8601 timestamp", field=name)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name} {text!r} is not a date (2026-11-01) or an ISO 8601 timestamp", field=name
        ) from None
    if at.tzinfo is None:
        raise BadRequest(f"{name} needs a time zone (e.g. 2026-11-01T00:00:00Z)", field=name)
    try:
        at = at.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{name} is out of range", field=name) from None
    if (at.minute, at.second, at.microsecond) != (0, 0, 0):
        raise BadRequest(f"{name} must be on the hour (usage is aggregated hourly)", field=name)
    return at

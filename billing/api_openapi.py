"""The usage API's part of the OpenAPI document (jobs.openapi)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from billing.api import MAX_SUMMARY_DAYS
from billing.services.usage_ingest import MAX_KEY, MAX_QUANTITY
from jobs.openapi import error_responses, json_body, json_response, register_openapi_paths


@register_openapi_paths
def usage_paths() -> dict[str, Any]:
    limit = settings.USAGE_API_MAX_EVENTS
    event = {
        "type": "object",
        "required": ["organization", "metric", "occurred_at", "idempotency_key"],
        "properties": {
            "organization": {"type": "string", "description": "The organization's key"},
            "metric": {"type": "string", "description": "A billable metric's code"},
            "quantity": {"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY, "default": 1},
            "occurred_at": {
                "type": "string",
                "format": "date-time",
                "description": "With a time zone; not in the future beyond "
                f"{settings.USAGE_EVENT_FUTURE_SKEW_SECONDS} s, nor older than "
                f"{settings.USAGE_EVENT_RETENTION_DAYS} days",
            },
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
            "value_key": {
                "type": "string",
                "maxLength": MAX_KEY,
                "description": "What a unique-count metric counts distinct values of",
            },
        },
        "additionalProperties": False,
    }
    result = {
        "type": "object",
        "required": ["index", "status"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "status": {"type": "string", "enum": ["accepted", "duplicate", "rejected"]},
            "reason": {"type": "string"},
        },
    }
    totals = {
        "type": "object",
        "required": ["metric", "total"],
        "properties": {
            "metric": {"type": "string"},
            "name": {"type": "string"},
            "aggregation": {"type": "string"},
            "unit": {"type": "string"},
            "total": {"type": "integer"},
        },
    }
    stamp = {"type": "string", "description": "A date (midnight UTC) or a timestamp on the hour"}
    return {
        "paths": {
            "/api/usage/events": {
                "post": {
                    "operationId": "post_usage_events",
                    "summary": f"Push a batch of up to {limit} usage events (scope usage:write)",
                    "description": "Each event is answered on its own: accepted, duplicate "
                    "(same organization and idempotency key as a stored event) or rejected "
                    "with the reason; one bad event never drops the batch.",
                    "tags": ["usage"],
                    "requestBody": json_body(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": limit,
                                    "items": event,
                                }
                            },
                            "additionalProperties": False,
                        }
                    ),
                    "responses": {
                        "200": json_response(
                            "One result per event, in the batch's order",
                            {
                                "type": "object",
                                "required": ["accepted", "duplicates", "rejected", "results"],
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "duplicates": {"type": "integer"},
                                    "rejected": {"type": "integer"},
                                    "results": {"type": "array", "items": result},
                                },
                            },
                        ),
                        **error_responses(400, 401, 403, 411, 413, 429),
                    },
                }
            },
            "/api/usage/summary": {
                "get": {
                    "operationId": "get_usage_summary",
                    "summary": "An organization's usage totals per metric over [from, to) "
                    "(scope usage:read)",
                    "tags": ["usage"],
                    "parameters": [
                        {
                            "name": "organization",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {"name": "from", "in": "query", "required": True, "schema": stamp},
                        {
                            "name": "to",
                            "in": "query",
                            "required": True,
                            "schema": stamp,
                            "description": f"At most {MAX_SUMMARY_DAYS} days after from",
                        },
                    ],
                    "responses": {
                        "200": json_response(
                            "The totals an invoice of the period would bill",
                            {
                                "type": "object",
                                "required": ["organization", "from", "to", "metrics"],
                                "properties": {
                                    "organization": {"type": "string"},
                                    "from": {"type": "string", "format": "date-time"},
                                    "to": {"type": "string", "format": "date-time"},
                                    "metrics": {"type": "array", "items": totals},
                                },
                            },
                        ),
                        **error_responses(400, 401, 403, 404, 429),
                    },
                }
            },
        }
    }

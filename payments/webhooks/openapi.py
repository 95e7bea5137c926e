"""The Stripe webhook's part of the OpenAPI document (jobs.openapi)."""

from __future__ import annotations

from typing import Any

from jobs.openapi import json_body, json_response, register_openapi_paths


def _error(description: str) -> dict[str, Any]:
    return json_response(
        description,
        {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    )


@register_openapi_paths
def webhook_paths() -> dict[str, Any]:
    return {
        "paths": {
            "/webhooks/stripe/{tenant_key}": {
                "post": {
                    "operationId": "receive_stripe_webhook",
                    "summary": "Stripe's event deliveries for one tenant",
                    "description": "Verified with the tenant's webhook signing secret "
                    "(Stripe-Signature header), stored by event id, processed once by "
                    "payments.process_stripe_webhooks. Not for API keys: Stripe signs it.",
                    "tags": ["webhooks"],
                    "security": [],
                    "parameters": [
                        {
                            "name": "tenant_key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"},
                        },
                        {
                            "name": "Stripe-Signature",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": json_body({"type": "object"}),
                    "responses": {
                        "200": json_response(
                            "Stored (or a redelivery, acknowledged)",
                            {
                                "type": "object",
                                "required": ["received", "id", "duplicate"],
                                "properties": {
                                    "received": {"type": "boolean"},
                                    "id": {"type": "string"},
                                    "duplicate": {"type": "boolean"},
                                },
                            },
                        ),
                        "400": _error("Bad signature or not a Stripe event; nothing stored"),
                        "404": _error("No such tenant with a webhook secret; nothing stored"),
                        "413": _error("Body too large"),
                    },
                }
            }
        }
    }

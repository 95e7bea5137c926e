"""GET /api/openapi.json: the API's OpenAPI 3.1 contract, generated so it cannot drift.

The jobs part comes from the registry: one `POST /api/jobs/<name>/runs` path
per registered job, its `params` schema built from the job's typed
parameters (jobs.params), bounds included. Business apps add their own paths
with `register_openapi_paths(builder)` (jobs imports no business app); a
builder returns `{"paths": {...}, "schemas": {...}}`.

Every operation names each status the API can answer, with the JSON error
schema for the refusals. The document takes an API key like the rest of the
API (so a caller without one learns nothing, not even which jobs exist), and
lists only the jobs that key may read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, JsonResponse

from jobs.alert_models import NoticeWhen
from jobs.api import BadRequest, api_view, client_of
from jobs.api_auth import ApiClient
from jobs.models import RunStatus
from jobs.params import Param
from jobs.registry import JobSpec, all_jobs

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

Builder = Callable[[], dict[str, Any]]
_BUILDERS: list[Builder] = []


def register_openapi_paths(builder: Builder) -> Builder:
    """Add a business app's paths and component schemas to the document."""
    if builder not in _BUILDERS:
        _BUILDERS.append(builder)
    return builder


ERROR_DESCRIPTIONS = {
    400: "Bad input: the error names the problem (and `field` or `param` when one is at fault)",
    401: "Missing, malformed, unknown, revoked or expired API key",
    403: "The API key lacks the scope named in `missing_scope`",
    404: "No such object",
    405: "Method not allowed (see the Allow header)",
    409: "The idempotency key was used for a different request",
    411: "A body needs a Content-Length header",
    413: "The body (or batch) is larger than allowed",
    429: "Over the key's requests per minute (see Retry-After)",
}


def error_responses(*statuses: int) -> dict[str, Any]:
    """The JSON refusals of an operation, by status."""
    return {
        str(status): {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


# --- the jobs part ------------------------------------------------------------------


def param_schema(param: Param) -> dict[str, Any]:
    """A job parameter as JSON Schema: what jobs.params.coerce_params takes from JSON."""
    kind = param.type
    schema: dict[str, Any]
    if kind is bool:
        schema = {"type": "boolean"}
    elif kind is int:
        schema = {"type": "integer"}
    elif kind is float:
        schema = {"type": "number"}
    elif kind is Decimal:
        schema = {"type": "string", "format": "decimal", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
    elif kind is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif kind is date:
        schema = {"type": "string", "format": "date"}
    else:
        schema = {"type": "string"}
    if param.range is not None and kind in (int, float):
        if param.range.ge is not None:
            schema["minimum"] = param.range.ge
        if param.range.le is not None:
            schema["maximum"] = param.range.le
    if param.optional:
        schema["type"] = [schema["type"], "null"]
    if not param.required:
        default = param.default
        if isinstance(default, (bool, int, float, str)) or default is None:
            schema["default"] = default
    return schema


def job_params_schema(spec: JobSpec) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: param_schema(p) for p in spec.params},
        "additionalProperties": False,
    }
    required = [p.name for p in spec.params if p.required]
    if required:
        schema["required"] = required
    return schema


def start_run_operation(spec: JobSpec) -> dict[str, Any]:
    body = {
        "type": "object",
        "properties": {
            "tenant": {
                "type": ["string", "null"],
                "maxLength": 100,
                "description": "An organization's key; empty or absent: every tenant",
            },
            "params": job_params_schema(spec),
            "dry_run": {"type": "boolean", "default": False},
            "idempotency_key": {"type": ["string", "null"], "maxLength": 200},
            "notify": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Notify"}]},
        },
        "additionalProperties": False,
    }
    if any(p.required for p in spec.params):
        body["required"] = ["params"]
    started = {"$ref": "#/components/schemas/RunStarted"}
    return {
        "operationId": f"start_{spec.name.replace('.', '_')}",
        "summary": f"Start a run of {spec.name}",
        "description": spec.description,
        "tags": ["jobs"],
        "requestBody": json_body(body, required=False),
        "responses": {
            "202": json_response("Run enqueued (Location: its status URL)", started),
            "200": json_response("The first run of this idempotency key", started),
            **error_responses(400, 401, 403, 404, 409, 411, 413, 429),
        },
    }


JOBS_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "field": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "missing_scope": {"type": "string"},
            "run_id": {"type": "integer"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["name", "description", "schedule", "queue", "timeout", "params"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "schedule": {"type": ["string", "null"]},
            "queue": {"type": "string"},
            "timeout": {"type": "integer"},
            "supports_item_rerun": {"type": "boolean"},
            "params": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "type", "required"],
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"type": "string"},
                        "required": {"type": "boolean"},
                    },
                },
            },
        },
    },
    "Notify": {
        "type": "object",
        "description": "A completion notice for this run (email and/or signed webhook)",
        "properties": {
            "emails": {
                "oneOf": [
                    {"type": "string", "format": "email"},
                    {"type": "array", "items": {"type": "string", "format": "email"}},
                ]
            },
            "webhook": {"type": "string", "format": "uri"},
            "when": {"type": "string", "enum": list(NoticeWhen.values)},
        },
        "additionalProperties": False,
    },
    "RunStarted": {
        "type": "object",
        "required": ["run_id", "status", "status_url", "created"],
        "properties": {
            "run_id": {"type": "integer"},
            "status": {"type": "string"},
            "status_url": {"type": "string"},
            "created": {"type": "boolean"},
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "job", "status", "tenant", "dry_run", "params", "counts", "errors"],
        "properties": {
            "id": {"type": "integer"},
            "job": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [s.value for s in RunStatus],
            },
            "tenant": {"type": "string"},
            "dry_run": {"type": "boolean"},
            "params": {"type": "object"},
            "trigger": {"type": "string"},
            "triggered_by": {"type": "string"},
            "counts": {"type": "object"},
            "progress": {"type": "object"},
            "summary": {},
            "errors": {"type": "array", "items": {"type": "object"}},
            "errors_truncated": {"type": "boolean"},
            "attempt": {
                "type": "integer",
                "minimum": 1,
                "description": "Which attempt of its slot",
            },
            "next_attempt_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When a queued retry attempt may start",
            },
            "waiting_for": {
                "type": ["string", "null"],
                "description": "The dependency a queued slot waits for",
            },
            "cancel_requested": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {"by": {"type": "string"}, "reason": {"type": "string"}},
                    },
                ]
            },
            "log": {
                "type": "array",
                "items": {"type": "object"},
                "description": "With ?log=1: the lines the run logged (INFO and up, the latest)",
            },
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
}


RUN_ID = {
    "name": "run_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}


def jobs_paths(client: ApiClient | None) -> dict[str, Any]:
    readable = [s for s in all_jobs() if client is None or client.may(f"jobs:read:{s.name}")]
    paths: dict[str, Any] = {
        "/api/jobs": {
            "get": {
                "operationId": "list_jobs",
                "summary": "The registered jobs this key may read, with their typed parameters",
                "tags": ["jobs"],
                "responses": {
                    "200": json_response(
                        "The catalogue",
                        {
                            "type": "object",
                            "required": ["jobs"],
                            "properties": {
                                "jobs": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Job"},
                                }
                            },
                        },
                    ),
                    **error_responses(401, 403, 429),
                },
            }
        },
        "/api/jobs/runs/{run_id}": {
            "get": {
                "operationId": "get_run",
                "summary": "A run's state, counts, summary and errors",
                "tags": ["jobs"],
                "parameters": [
                    RUN_ID,
                    {
                        "name": "log",
                        "in": "query",
                        "required": False,
                        "description": "1: add the lines the run logged",
                        "schema": {"type": "string", "enum": ["0", "1", "false", "true"]},
                    },
                ],
                "responses": {
                    "200": json_response("The run", {"$ref": "#/components/schemas/Run"}),
                    **error_responses(401, 403, 404, 429),
                },
            }
        },
        "/api/jobs/runs/{run_id}/cancel": {
            "post": {
                "operationId": "cancel_run",
                "summary": "Cancel a queued run, or ask a running one to stop at its next "
                "boundary (needs the scope that starts the job)",
                "tags": ["jobs"],
                "parameters": [RUN_ID],
                "requestBody": json_body(
                    {
                        "type": "object",
                        "required": ["reason"],
                        "properties": {"reason": {"type": "string", "minLength": 1}},
                        "additionalProperties": False,
                    }
                ),
                "responses": {
                    "202": json_response(
                        "Canceled, or cancellation requested",
                        {
                            "type": "object",
                            "required": ["run_id", "outcome", "status"],
                            "properties": {
                                "run_id": {"type": "integer"},
                                "outcome": {"type": "string"},
                                "status": {"type": "string"},
                            },
                        },
                    ),
                    **error_responses(400, 401, 403, 404, 409, 411, 413, 429),
                },
            }
        },
    }
    for spec in readable:
        paths[f"/api/jobs/{spec.name}/runs"] = {"post": start_run_operation(spec)}
    return paths


def openapi_document(*, client: ApiClient | None = None) -> dict[str, Any]:
    """The whole contract; `client` limits the job paths to what that key may read."""
    paths = jobs_paths(client)
    schemas = dict(JOBS_SCHEMAS)
    for builder in _BUILDERS:
        part = builder()
        paths.update(part.get("paths", {}))
        schemas.update(part.get("schemas", {}))
    paths["/api/openapi.json"] = {
        "get": {
            "operationId": "get_openapi",
            "summary": "This document",
            "tags": ["meta"],
            "responses": {
                "200": json_response("The OpenAPI 3.1 document", {"type": "object"}),
                **error_responses(401, 429),
            },
        }
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Back-office jobs service API",
            "version": API_VERSION,
            "description": "Every refusal is a 4xx JSON error naming the problem.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A per-client API key (bo_live_...) or JOBS_API_TOKEN",
                }
            },
            "schemas": schemas,
        },
    }


@api_view("GET")
def openapi_view(request: HttpRequest) -> JsonResponse:
    """The document for the calling key."""
    if request.GET:
        raise BadRequest("this endpoint takes no query parameters")
    return JsonResponse(openapi_document(client=client_of(request)))

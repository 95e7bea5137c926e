"""The JSON API: start runs, read their state, list the catalogue. No DRF.

Every answer is JSON, every refusal is a 4xx naming the problem, and no input
reaches a 500: the body is bounded, parsed strictly and type-checked here, and
the rest (job, params, tenant) is validated by `enqueue_run` before anything
is written. The API key (jobs.api_auth) is checked before anything else is
looked at, so a caller without one learns nothing, not even which jobs exist;
a key sees and starts only the jobs its scopes name.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from jobs import run_log
from jobs.api_auth import ApiAuthError, ApiClient, authenticate, require_scope
from jobs.cancel import NotCancelable, cancel_run
from jobs.enqueue import IdempotencyConflict, enqueue_run
from jobs.models import JobItemFailure, JobRun, Trigger
from jobs.notices import clean_notify
from jobs.params import ParamError
from jobs.registry import UnknownJob, all_jobs, get_job
from jobs.tenants import UnknownTenant

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY = 200  # JobRun.idempotency_key's max_length
MAX_TENANT = 100  # JobRun.tenant's max_length
MAX_RUN_ID = 2**63 - 1  # BigAutoField
BODY_FIELDS = ("tenant", "params", "dry_run", "idempotency_key", "notify")

View = Callable[..., JsonResponse]


class BadRequest(Exception):
    """Refuse the request with `status` and a JSON error naming the problem."""

    def __init__(self, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def error(message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api_view(*methods: str) -> Callable[[View], View]:
    """Method check, then the key (jobs.api_auth), then the view; refusals become JSON.

    The method is checked first because its answer (405 with Allow) is the
    same for every path and so reveals nothing. The view finds the caller in
    `request.api_client` and checks the scope it needs.
    """

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = error(
                    f"method {request.method} not allowed; use {', '.join(methods)}", 405
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                request.api_client = authenticate(request)  # type: ignore[attr-defined]
                return view(request, *args, **kwargs)
            except ApiAuthError as exc:
                return exc.response()
            except BadRequest as exc:
                return error(str(exc), exc.status, **exc.extra)

        return wrapper

    return decorate


def client_of(request: HttpRequest) -> ApiClient:
    return request.api_client  # type: ignore[attr-defined]


# --- views -------------------------------------------------------------------


@api_view("GET")
def catalogue(request: HttpRequest) -> JsonResponse:
    """The registered jobs the key may read, with schedules, queues and typed
    parameters."""
    client = client_of(request)
    require_scope(client, "jobs:read")
    readable = [spec for spec in all_jobs() if client.may(f"jobs:read:{spec.name}")]
    return JsonResponse({"jobs": [spec.describe() for spec in readable]})


@api_view("POST")
def start_run(request: HttpRequest, name: str) -> JsonResponse:
    """Enqueue a run: 202 with its id, or 200 with the first run for a repeated
    idempotency key (the client may safely retry a POST whose answer it lost)."""
    client = client_of(request)
    require_scope(client, f"jobs:run:{name[:100]}")
    try:
        get_job(name)
    except UnknownJob as exc:
        raise BadRequest(str(exc), status=404) from None
    body = read_json_body(request)
    fields = validate_body(body)
    try:
        run, created = enqueue_run(
            name,
            tenant=fields["tenant"],
            params=fields["params"],
            dry_run=fields["dry_run"],
            trigger=Trigger.API,
            triggered_by=client.name,
            idempotency_key=fields["idempotency_key"],
            notify=fields["notify"],
        )
    except IdempotencyConflict as exc:
        raise BadRequest(str(exc), status=409, field="idempotency_key", run_id=exc.run.pk) from None
    except ParamError as exc:
        raise BadRequest(str(exc), param=exc.param) from None
    except UnknownTenant as exc:
        raise BadRequest(str(exc), field="tenant") from None
    except UnknownJob as exc:  # unregistered between the check above and here
        raise BadRequest(str(exc), status=404) from None
    status_url = reverse("jobs-api:run", kwargs={"run_id": str(run.pk)})
    response = JsonResponse(
        {"run_id": run.pk, "status": run.status, "status_url": status_url, "created": created},
        status=202 if created else 200,
    )
    response["Location"] = status_url
    if not created:
        response["Idempotent-Replayed"] = "true"
    return response


def _run_or_404(run_id: str) -> JobRun:
    pk = int(run_id) if len(run_id) <= 19 else 0
    run = JobRun.objects.filter(pk=pk).first() if 0 < pk <= MAX_RUN_ID else None
    if run is None:
        raise BadRequest(f"no run with id {run_id[:40]}", status=404)
    return run


@api_view("GET")
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    """A run's state, counts, summary and errors, for a client polling it;
    `?log=1` adds the lines the run logged (INFO and up, the latest ones)."""
    run = _run_or_404(run_id)
    require_scope(client_of(request), f"jobs:read:{run.job}")
    described = describe_run(run)
    if request.GET.get("log") not in (None, "", "0", "false"):
        described["log"] = run_log.lines_of(run.pk)
    return JsonResponse(described)


MAX_REASON = 2000


@api_view("POST")
def cancel(request: HttpRequest, run_id: str) -> JsonResponse:
    """Cancel a queued run, or ask a running one to stop at its next boundary.
    Needs the scope that starts the job (`jobs:run:<job>`); body `{"reason": ...}`."""
    run = _run_or_404(run_id)
    client = client_of(request)
    require_scope(client, f"jobs:run:{run.job}")
    body = read_json_body(request)
    if not isinstance(body, dict) or set(body) - {"reason"}:
        raise BadRequest('request body must be {"reason": "..."}')
    _check_strings(body)
    reason = body.get("reason") or ""
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason is required: it is recorded with the cancellation", field="reason")
    try:
        outcome = cancel_run(run, actor=client.name, reason=reason[:MAX_REASON])
    except NotCancelable as exc:
        raise BadRequest(str(exc), status=409, status_now=run.status) from None
    return JsonResponse({"run_id": run.pk, "outcome": outcome, "status": run.status}, status=202)


@api_view("GET", "POST", "PUT", "PATCH", "DELETE")
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """JSON 404 for any other path under the API, after the token check."""
    raise BadRequest(
        "no such endpoint; use GET /api/jobs, POST /api/jobs/<name>/runs "
        "or GET /api/jobs/runs/<id>",
        status=404,
    )


# --- helpers -------------------------------------------------------------------

MAX_ERRORS = 100


def describe_run(run: JobRun) -> dict[str, Any]:
    failures = list(
        JobItemFailure.objects.filter(run=run).values("item_key", "error", "attempts")[
            : MAX_ERRORS + 1
        ]
    )
    errors: list[dict[str, Any]] = [
        {"item": f["item_key"], "error": f["error"], "attempts": f["attempts"]}
        for f in failures[:MAX_ERRORS]
    ]
    if run.error:
        errors.append({"item": None, "error": run.error, "attempts": run.attempts})
    return {
        "id": run.pk,
        "job": run.job,
        "status": run.status,
        "tenant": run.tenant,
        "dry_run": run.dry_run,
        "params": run.params,
        "trigger": run.trigger,
        "triggered_by": run.triggered_by,
        "counts": run.counts,
        "progress": {"done": run.progress_done, "total": run.progress_total},
        "summary": run.summary,
        "errors": errors,
        "errors_truncated": len(failures) > MAX_ERRORS,
        "attempt": run.attempt,
        "next_attempt_at": _iso(run.next_attempt_at),
        "waiting_for": run.waiting_for or None,
        "cancel_requested": (
            {"by": run.cancel_requested_by, "reason": run.cancel_reason}
            if run.cancel_requested_at
            else None
        ),
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def read_json_body(request: HttpRequest, *, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The body as JSON, refusing oversized, undecodable or non-JSON input."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        declared_length = int(declared)
    except ValueError:
        raise BadRequest("invalid Content-Length header") from None
    if declared_length > max_bytes:
        raise BadRequest(_too_big(max_bytes), status=413)
    if declared_length == 0 and request.headers.get("Transfer-Encoding"):
        # Django reads no body without a length; refuse rather than run with defaults.
        raise BadRequest("a request body needs a Content-Length header", status=411)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise BadRequest(_too_big(max_bytes), status=413) from None
    if len(raw) > max_bytes:
        raise BadRequest(_too_big(max_bytes), status=413)
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        raise BadRequest(f"request body is not valid JSON: {exc}"[:300]) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_big(max_bytes: int = MAX_BODY_BYTES) -> str:
    return f"request body is larger than {max_bytes} bytes"


def validate_body(body: Any) -> dict[str, Any]:
    """Check the envelope's fields and types; params are the job's to check."""
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {_json_type(body)}")
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0][:100]!r}; allowed: {', '.join(BODY_FIELDS)}",
            field=unknown[0][:100],
        )
    _check_strings(body)
    tenant = body.get("tenant")
    if tenant is None:
        tenant = ""
    if not isinstance(tenant, str):
        raise BadRequest(f"tenant must be a string, not {_json_type(tenant)}", field="tenant")
    if len(tenant) > MAX_TENANT:
        raise BadRequest(f"tenant is longer than {MAX_TENANT} characters", field="tenant")
    params = body.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest(f"params must be an object, not {_json_type(params)}", field="params")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest(
            f"dry_run must be true or false, not {_json_type(dry_run)}", field="dry_run"
        )
    key = body.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise BadRequest(
            f"idempotency_key must be a string, not {_json_type(key)}", field="idempotency_key"
        )
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY} characters",
            field="idempotency_key",
        )
    notify = None
    if body.get("notify") is not None:
        try:
            notify = clean_notify(body["notify"])
        except ValueError as exc:
            raise BadRequest(str(exc), field="notify") from None
    return {
        "tenant": tenant,
        "params": params,
        "dry_run": dry_run,
        "idempotency_key": key or None,
        "notify": notify,
    }


def _check_strings(value: Any, depth: int = 0) -> None:
    """Refuse strings no database stores: NUL characters and lone surrogates
    (PostgreSQL text and jsonb reject both; SQLite mangles them)."""
    if depth > 50:
        raise BadRequest("request body is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest("strings may not contain NUL (\\u0000) characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("strings may not contain unpaired UTF-16 surrogates") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

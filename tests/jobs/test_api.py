"""The JSON API: POST /api/jobs/<name>/runs, GET /api/jobs/runs/<id>, GET /api/jobs."""

from __future__ import annotations

import json
import random
from datetime import date

import pytest
from django.test import override_settings
from django_q.brokers import get_broker

from jobs import tenants
from jobs.api import MAX_BODY_BYTES, start_run
from jobs.models import JobAction, JobItemFailure, JobRun, RunStatus
from tests.factories import JobRunFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

TOKEN = "test-api-token"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
RUNS_URL = "/api/jobs/tests.echo/runs"


@pytest.fixture
def echo(register_job):
    """A throwaway job that counts `n` items and fails the ones in `fail`."""

    @register_job("tests.echo")
    def echo(ctx, *, n: int = 1, fail: str = "", on: date | None = None, loud: bool = False):
        """Echo n items."""
        failing = set(filter(None, fail.split(",")))
        for i in range(n):
            if str(i) in failing:
                ctx.item_failed(i, f"item {i} broke")
            else:
                ctx.count(succeeded=1)
            ctx.count(processed=1)
        return {"n": n, "on": on.isoformat() if on else None}

    return echo


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    """POST as the API sees it in production: on-commit hooks (the enqueue) run."""

    def _post(url=RUNS_URL, body=None, *, raw=None, auth=True, **extra):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        headers = dict(AUTH) if auth else {}
        headers.update(extra)
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, data=data, content_type="application/json", **headers)

    return _post


def queued_tasks() -> int:
    return get_broker().queue_size() or 0


def assert_nothing_enqueued() -> None:
    assert JobRun.objects.count() == 0
    assert JobAction.objects.count() == 0
    assert queued_tasks() == 0


# --- starting a run -----------------------------------------------------------


def test_post_run_returns_202_and_status_url(echo, post):
    response = post(body={"params": {"n": 3}})

    assert response.status_code == 202
    body = response.json()
    run = JobRun.objects.get()
    assert body["run_id"] == run.pk
    assert body["status_url"] == f"/api/jobs/runs/{run.pk}"
    assert response["Location"] == body["status_url"]
    assert run.status == RunStatus.QUEUED
    assert run.params == {"n": 3}
    assert run.trigger == "api"
    assert run.triggered_by == "JOBS_API_TOKEN"  # the bootstrap key's name
    assert queued_tasks() == 1


def test_post_with_empty_body_uses_defaults(echo, post):
    response = post(raw="")

    assert response.status_code == 202
    run = JobRun.objects.get()
    assert (run.tenant, run.params, run.dry_run) == ("", {}, False)


def test_post_records_tenant_dry_run_and_typed_params(echo, post, monkeypatch):
    monkeypatch.setattr(tenants, "_resolver", {"acme": object()}.__getitem__)

    response = post(
        body={"tenant": "acme", "dry_run": True, "params": {"n": "2", "on": "2026-01-31"}}
    )

    assert response.status_code == 202
    run = JobRun.objects.get()
    assert run.tenant == "acme"
    assert run.dry_run is True
    assert run.params == {"n": 2, "on": "2026-01-31"}


def test_idempotency_key_returns_first_run_with_200(echo, post):
    first = post(body={"params": {"n": 1}, "idempotency_key": "deploy-42"})
    again = post(body={"params": {"n": 1}, "idempotency_key": "deploy-42"})

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert JobRun.objects.count() == 1
    assert queued_tasks() == 1


def test_idempotency_key_of_another_job_is_409(echo, post, register_job):
    @register_job("tests.other")
    def other(ctx):
        pass

    first = post(body={"idempotency_key": "k1"})
    clash = post("/api/jobs/tests.other/runs", body={"idempotency_key": "k1"})

    assert clash.status_code == 409
    assert clash.json()["run_id"] == first.json()["run_id"]
    assert "idempotency_key" in clash.json()["error"]
    assert JobRun.objects.count() == 1


def test_without_idempotency_key_each_post_is_a_new_run(echo, post):
    ids = {post(body={}).json()["run_id"] for _ in range(2)}

    assert len(ids) == 2


# --- reading a run ------------------------------------------------------------


def test_run_status_after_worker_executes(echo, post, client, drain_queue):
    run_id = post(body={"params": {"n": 4}}).json()["run_id"]
    queued = client.get(f"/api/jobs/runs/{run_id}", **AUTH).json()
    assert queued["status"] == "queued"
    assert queued["started_at"] is None

    assert drain_queue() == 1
    response = client.get(f"/api/jobs/runs/{run_id}", **AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["job"] == "tests.echo"
    assert body["status"] == "succeeded"
    assert body["counts"] == {"processed": 4, "succeeded": 4, "failed": 0, "skipped": 0}
    assert body["summary"] == {"n": 4, "on": None}
    assert body["errors"] == []
    assert body["started_at"] and body["finished_at"]


def test_run_status_lists_item_failures_of_a_partial_run(echo, post, client, drain_queue):
    run_id = post(body={"params": {"n": 5, "fail": "1,3"}}).json()["run_id"]
    drain_queue()

    body = client.get(f"/api/jobs/runs/{run_id}", **AUTH).json()

    assert body["status"] == "partial"
    assert body["counts"] == {"processed": 5, "succeeded": 3, "failed": 2, "skipped": 0}
    assert body["errors"] == [
        {"item": "1", "error": "item 1 broke", "attempts": 1},
        {"item": "3", "error": "item 3 broke", "attempts": 1},
    ]


def test_run_status_includes_the_run_error_of_a_failed_run(client):
    run = JobRunFactory(status=RunStatus.FAILED, error="RuntimeError: boom", attempts=1)
    JobItemFailure.objects.create(run=run, item_key="org-7", error="card declined")

    errors = client.get(f"/api/jobs/runs/{run.pk}", **AUTH).json()["errors"]

    assert errors == [
        {"item": "org-7", "error": "card declined", "attempts": 1},
        {"item": None, "error": "RuntimeError: boom", "attempts": 1},
    ]


@pytest.mark.parametrize("run_id", ["999999", "0", "99999999999999999999999999"])
def test_unknown_run_is_404_json(client, run_id):
    response = client.get(f"/api/jobs/runs/{run_id}", **AUTH)

    assert response.status_code == 404
    assert "no run with id" in response.json()["error"]


def test_catalogue_lists_registered_jobs(echo, client):
    response = client.get("/api/jobs", **AUTH)

    assert response.status_code == 200
    jobs = {job["name"]: job for job in response.json()["jobs"]}
    assert jobs["tests.echo"]["description"] == "Echo n items."
    assert {p["name"]: p["type"] for p in jobs["tests.echo"]["params"]} == {
        "n": "int",
        "fail": "str",
        "on": "date",
        "loud": "bool",
    }


def test_unknown_api_path_is_404_json(client):
    response = client.get("/api/jobs/runs/abc/extra", **AUTH)

    assert response.status_code == 404
    assert "error" in response.json()


# --- authentication -------------------------------------------------------------


def test_missing_token_is_401(echo, post):
    response = post(body={}, auth=False)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in response.json()["error"]
    assert_nothing_enqueued()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        f"bearer{TOKEN}",
        "Bearer ",
        "Bearer tést-api-tøken",
        TOKEN,
    ],
)
def test_wrong_token_is_401(echo, post, header):
    response = post(body={}, auth=False, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_enqueued()


def test_bearer_scheme_is_case_insensitive(echo, post):
    response = post(body={}, auth=False, HTTP_AUTHORIZATION=f"bearer {TOKEN}")

    assert response.status_code == 202


def test_unknown_job_is_404_only_after_the_token_is_checked(post, client):
    """Token first: without it, a caller cannot tell which jobs exist."""
    unauthenticated = post("/api/jobs/no.such/runs", body={}, auth=False)
    authenticated = post("/api/jobs/no.such/runs", body={})

    assert unauthenticated.status_code == 401
    assert authenticated.status_code == 404
    assert "no.such" in authenticated.json()["error"]
    assert client.get("/api/jobs/runs/1").status_code == 401
    assert client.get("/api/jobs").status_code == 401


@override_settings(JOBS_API_TOKEN="")
def test_without_a_bootstrap_token_an_empty_or_any_token_is_401(echo, post, client):
    """An unset JOBS_API_TOKEN never means "anyone may start jobs": the API
    then takes only per-client keys (tests/jobs/test_api_keys.py)."""
    for response in (
        post(body={}),
        post(body={}, auth=False, HTTP_AUTHORIZATION="Bearer "),
        client.get("/api/jobs", **AUTH),
    ):
        assert response.status_code == 401
    assert_nothing_enqueued()


# --- refusing bad input -------------------------------------------------------------


def test_unknown_param_is_400_naming_it(echo, post):
    response = post(body={"params": {"colour": "red"}})

    assert response.status_code == 400
    assert response.json()["param"] == "colour"
    assert "colour" in response.json()["error"]
    assert_nothing_enqueued()


@pytest.mark.parametrize(
    "params, name",
    [
        ({"n": "three"}, "n"),
        ({"n": 1.5}, "n"),
        ({"n": True}, "n"),
        ({"n": [1]}, "n"),
        ({"n": None}, "n"),
        ({"on": "31/01/2026"}, "on"),
        ({"loud": "maybe"}, "loud"),
        ({"fail": 7}, "fail"),
    ],
)
def test_ill_typed_param_is_400(echo, post, params, name):
    response = post(body={"params": params})

    assert response.status_code == 400
    assert response.json()["param"] == name
    assert repr(name) in response.json()["error"]
    assert_nothing_enqueued()


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("{", "not valid JSON"),
        ("{'tenant': 'x'}", "not valid JSON"),
        ('{"params": {}} trailing', "not valid JSON"),
        ('{"params": NaN}', "not valid JSON"),
        ('{"params": {"n": Infinity}}', "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_bad_json_is_400(echo, post, raw, fragment):
    response = post(raw=raw)

    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert_nothing_enqueued()


@pytest.mark.parametrize(
    "body, field",
    [
        ([], None),
        ("run it", None),
        (42, None),
        (None, None),
        ({"tenant": 5}, "tenant"),
        ({"tenant": ["acme"]}, "tenant"),
        ({"tenant": "x" * 101}, "tenant"),
        ({"dry_run": "false"}, "dry_run"),
        ({"dry_run": 0}, "dry_run"),
        ({"params": []}, "params"),
        ({"params": "n=1"}, "params"),
        ({"idempotency_key": 12}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_wrong_field_types_are_400_naming_the_field(echo, post, body, field):
    response = post(raw=json.dumps(body))

    assert response.status_code == 400
    if field:
        assert response.json()["field"] == field
        assert field in response.json()["error"]
    else:
        assert "JSON object" in response.json()["error"]
    assert_nothing_enqueued()


def test_unknown_tenant_is_400(echo, post):
    response = post(body={"tenant": "nobody"})

    assert response.status_code == 400
    assert "unknown tenant 'nobody'" in response.json()["error"]
    assert_nothing_enqueued()


def test_body_over_64k_is_413(echo, post):
    raw = json.dumps({"params": {"fail": "x" * MAX_BODY_BYTES}})

    response = post(raw=raw)

    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert_nothing_enqueued()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_over_djangos_upload_limit_is_413_not_500(echo, post):
    response = post(raw=json.dumps({"params": {"fail": "x" * 2000}}))

    assert response.status_code == 413
    assert_nothing_enqueued()


def test_invalid_content_length_is_400(echo, rf):
    """The view alone; in the full stack django-prometheus answers first (below)."""
    request = rf.post(RUNS_URL, data="{}", content_type="application/json", **AUTH)
    request.META["CONTENT_LENGTH"] = "lots"

    response = start_run(request, name="tests.echo")

    assert response.status_code == 400
    assert "Content-Length" in json.loads(response.content)["error"]


def test_chunked_body_without_length_is_411_not_run_with_defaults(echo, rf):
    request = rf.post(RUNS_URL, data="", content_type="application/json", **AUTH)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"

    response = start_run(request, name="tests.echo")

    assert response.status_code == 411
    assert JobRun.objects.count() == 0


def test_invalid_content_length_through_the_middleware_is_not_a_500(echo, post):
    response = post(raw="{}", CONTENT_LENGTH="lots")
    assert response.status_code == 400
    assert "Content-Length" in response.json()["error"]
    assert JobRun.objects.count() == 0


def test_body_just_under_64k_is_accepted(echo, post):
    envelope = len(json.dumps({"params": {"fail": ""}}))
    raw = json.dumps({"params": {"fail": "9" * (MAX_BODY_BYTES - envelope)}})
    assert len(raw) == MAX_BODY_BYTES

    assert post(raw=raw).status_code == 202


def test_get_is_405_on_runs_endpoint(echo, client):
    response = client.get(RUNS_URL, **AUTH)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "GET" in response.json()["error"]


@pytest.mark.parametrize(
    "method, url, allow",
    [
        ("put", RUNS_URL, "POST"),
        ("delete", RUNS_URL, "POST"),
        ("post", "/api/jobs/runs/1", "GET"),
        ("delete", "/api/jobs/runs/1", "GET"),
        ("post", "/api/jobs", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(echo, client, method, url, allow):
    response = getattr(client, method)(url, **AUTH)

    assert response.status_code == 405
    assert response["Allow"] == allow
    assert "not allowed" in response.json()["error"]
    assert_nothing_enqueued()


REFUSED = [
    pytest.param({"auth": False}, id="no-token"),
    pytest.param({"HTTP_AUTHORIZATION": "Bearer nope", "auth": False}, id="wrong-token"),
    pytest.param({"url": "/api/jobs/no.such/runs"}, id="unknown-job"),
    pytest.param({"raw": "{nope"}, id="bad-json"),
    pytest.param({"body": {"params": {"zzz": 1}}}, id="unknown-param"),
    pytest.param({"body": {"params": {"n": "x"}}}, id="ill-typed-param"),
    pytest.param({"body": {"tenant": "ghost"}}, id="unknown-tenant"),
    pytest.param({"raw": "[" * 100 + "]" * 100}, id="nested"),
    pytest.param({"raw": " " * (MAX_BODY_BYTES + 1)}, id="too-big"),
]


@pytest.mark.parametrize("request_kwargs", REFUSED)
def test_refused_request_enqueues_nothing(echo, post, request_kwargs):
    response = post(**request_kwargs)

    assert 400 <= response.status_code < 500
    assert response.json()["error"]
    assert_nothing_enqueued()


# --- never a 500 -------------------------------------------------------------------

JUNK_BODIES = [
    '{"tenant": "\\u0000"}',
    '{"params": {"fail": "a\\u0000b"}}',
    '{"params": {"\\u0000": 1}}',
    '{"idempotency_key": "\\ud800"}',
    '{"params": {"fail": "\\udfff"}}',
    '{"params": {"n": 1e999}}',
    '{"params": {"n": -1e999}}',
    '{"params": {"n": ' + "9" * 5000 + "}}",
    '{"params": {"n": 123456789012345678901234567890}}',
    '{"params": {"on": "9999999-01-01"}}',
    '{"params": {"on": {"$date": 1}}}',
    '{"params": {"loud": {"a": [1, {"b": null}]}}}',
    '{"tenant": "ﾃﾅﾝﾄ 🏢", "params": {"fail": "💥"}}',
    '{"tenant": "acme\\r\\nX-Injected: 1"}',
    '{"idempotency_key": ""}',
    '{"idempotency_key": "🔑"}',
    '{"dry_run": null}',
    '{"params": null}',
    '{"params": {"n": "' + "1" * 5000 + '"}}',
    '{"params": ' + "[" * 10000 + "]" * 10000 + "}",
    '{"params": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
    "\ufeff{}",
    "null",
    "true",
    '"\\u0000"',
    "\x00",
]


@pytest.mark.parametrize("raw", JUNK_BODIES)
def test_junk_input_is_never_a_500(echo, post, raw):
    response = post(raw=raw)

    assert response.status_code < 500, response.content
    assert response["Content-Type"] == "application/json"
    if response.status_code >= 400:
        assert response.json()["error"]
        assert JobRun.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "/api/jobs/%00/runs",
        "/api/jobs/%F0%9F%92%A5/runs",
        "/api/jobs/" + "x" * 3000 + "/runs",
        "/api/jobs/tests.echo%2Fx/runs",
        "/api/jobs/runs/" + "9" * 500,
        "/api/jobs//runs",
    ],
)
def test_junk_urls_are_never_a_500(echo, post, client, url):
    assert post(url, body={}).status_code < 500
    assert client.get(url, **AUTH).status_code < 500


def _junk(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**70, -(2**64), 1.5, 1e308, -0.0])
    if kind == 3:
        alphabet = "aZ0 \x00\n\"'\\é中🏢\u202e\ud800"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
    if kind == 4:
        return rng.choice(["1", "true", "2026-01-31", "", "n", "0001-01-01"])
    if kind == 5:
        return rng.choice(["n", "fail", "on", "loud"])
    if kind == 6:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = ["tenant", "params", "dry_run", "idempotency_key", "n", "fail", "on", "loud", "x"]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_random_junk_bodies_are_never_a_500(echo, post):
    rng = random.Random(20261122)
    statuses = set()
    for _ in range(300):
        body = _junk(rng)
        if isinstance(body, dict) and rng.random() < 0.7:
            body = {"params": body}
        response = post(raw=json.dumps(body))
        assert response.status_code < 500, (body, response.content)
        statuses.add(response.status_code)
    assert 400 in statuses


def test_idempotency_key_with_different_params_is_409(echo, post):
    first = post(body={"params": {"n": 1}, "idempotency_key": "deploy-43"})
    clash = post(body={"params": {"n": 2}, "idempotency_key": "deploy-43"})
    assert first.status_code == 202
    assert clash.status_code == 409
    assert "different params" in clash.json()["error"]
    assert clash.json()["run_id"] == first.json()["run_id"]
    assert JobRun.objects.count() == 1


def test_a_broker_that_refuses_the_task_fails_the_run_on_record(echo, post, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr("jobs.enqueue.async_task", refuse)
    response = post(body={})
    run = JobRun.objects.get(pk=response.json()["run_id"])
    assert run.status == "failed"
    assert "broker unreachable" in run.error

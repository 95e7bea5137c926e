"""GET /api/openapi.json: an OpenAPI 3.1 document of every endpoint, from the registry."""

from __future__ import annotations

from typing import Annotated

import pytest
from openapi_spec_validator import validate

from jobs.params import Range
from jobs.registry import all_jobs
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db

URL = "/api/openapi.json"
TOKEN = {"HTTP_AUTHORIZATION": "Bearer test-api-token"}


def document(client, headers=TOKEN):
    response = client.get(URL, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_document_is_valid_openapi_3_1(client):
    doc = document(client)

    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_every_registered_job_has_its_start_path_with_its_typed_parameters(client, register_job):
    @register_job("tests.typed")
    def typed(ctx, *, days: Annotated[int, Range(ge=1, le=30)], dry: bool = False, note: str = ""):
        pass

    doc = document(client)

    validate(doc)
    for spec in all_jobs():
        assert f"/api/jobs/{spec.name}/runs" in doc["paths"]
    op = doc["paths"]["/api/jobs/tests.typed/runs"]["post"]
    params = op["requestBody"]["content"]["application/json"]["schema"]["properties"]["params"]
    assert params["properties"] == {
        "days": {"type": "integer", "minimum": 1, "maximum": 30},
        "dry": {"type": "boolean", "default": False},
        "note": {"type": "string", "default": ""},
    }
    assert params["required"] == ["days"]
    assert params["additionalProperties"] is False
    assert {"202", "200", "400", "401", "403", "404", "409", "411", "413", "429"} <= set(
        op["responses"]
    )


def test_it_covers_the_catalogue_run_status_usage_and_webhooks(client):
    paths = document(client)["paths"]

    for path, method in [
        ("/api/jobs", "get"),
        ("/api/jobs/runs/{run_id}", "get"),
        ("/api/jobs/runs/{run_id}/cancel", "post"),
        ("/api/usage/events", "post"),
        ("/api/usage/summary", "get"),
        ("/webhooks/stripe/{tenant_key}", "post"),
        ("/api/openapi.json", "get"),
    ]:
        assert method in paths[path], path
    events = paths["/api/usage/events"]["post"]
    schema = events["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["events"]["maxItems"] == 1_000
    assert {"400", "401", "403", "413", "429"} <= set(events["responses"])


def test_bearer_security_and_every_error_response_documented(client):
    doc = document(client)

    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["security"] == [{"bearer": []}]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = {int(code) for code in op["responses"]}
            assert any(code >= 400 for code in codes), (path, method)
            if op.get("security") != []:
                assert 401 in codes, (path, method)


def test_the_document_needs_a_key_and_lists_only_the_jobs_it_may_read(client):
    assert client.get(URL).status_code == 401
    key = ApiKeyFactory(scopes=["jobs:read:billing.*"])

    paths = document(client, {"HTTP_AUTHORIZATION": f"Bearer {key.secret}"})["paths"]

    job_paths = [p for p in paths if p.startswith("/api/jobs/") and p.endswith("/runs")]
    assert job_paths and all(p.startswith("/api/jobs/billing.") for p in job_paths)


def test_query_parameters_are_refused(client):
    response = client.get(URL, {"x": "1"}, **TOKEN)

    assert response.status_code == 400


def test_a_start_body_may_ask_for_a_completion_notice(client):
    doc = document(client)

    body = doc["paths"]["/api/jobs/billing.aggregate_usage/runs"]["post"]["requestBody"]
    notify = body["content"]["application/json"]["schema"]["properties"]["notify"]
    assert {"$ref": "#/components/schemas/Notify"} in notify["oneOf"]
    schema = doc["components"]["schemas"]["Notify"]
    assert set(schema["properties"]) == {"emails", "webhook", "when"}
    assert schema["additionalProperties"] is False

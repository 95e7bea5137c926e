"""The usage API: batches answered per event, resent events counted once, totals per period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from billing.models import (
    AggregationType,
    BillableMetric,
    UsageAggregate,
    UsageEvent,
    UsageHour,
    UsageLateHour,
)
from billing.services.usage import aggregate_hour
from tests.factories import ApiKeyFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 3, 12, 30, tzinfo=UTC)
H10 = datetime(2026, 11, 3, 10, tzinfo=UTC)
EVENTS_URL = "/api/usage/events"
SUMMARY_URL = "/api/usage/summary"


@pytest.fixture(autouse=True)
def clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def metrics():
    for code, kind in [
        ("api_calls", AggregationType.SUM),
        ("storage_gb", AggregationType.MAX),
        ("active_users", AggregationType.UNIQUE_COUNT),
    ]:
        BillableMetric.objects.create(code=code, name=code, aggregation=kind)


@pytest.fixture
def acme(metrics):
    return OrganizationFactory(key="acme")


@pytest.fixture
def writer():
    return ApiKeyFactory(scopes=["usage:write"])


def post(client, key, body, *, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body)
    return client.post(
        EVENTS_URL,
        data=data,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key.secret}",
    )


def event(key: str = "e1", **fields):
    return {
        "organization": "acme",
        "metric": "api_calls",
        "quantity": 3,
        "occurred_at": "2026-11-03T10:15:00Z",
        "idempotency_key": key,
        **fields,
    }


def test_a_batch_is_stored_and_answered_per_event(client, acme, writer):
    response = post(client, writer, {"events": [event("a"), event("b", quantity=4)]})

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": 0,
        "results": [{"index": 0, "status": "accepted"}, {"index": 1, "status": "accepted"}],
    }
    stored = UsageEvent.objects.filter(organization=acme).order_by("idempotency_key")
    assert [(e.idempotency_key, e.metric, e.quantity, e.occurred_at) for e in stored] == [
        ("a", "api_calls", 3, datetime(2026, 11, 3, 10, 15, tzinfo=UTC)),
        ("b", "api_calls", 4, datetime(2026, 11, 3, 10, 15, tzinfo=UTC)),
    ]


def test_a_resent_event_is_a_duplicate_and_never_counted_twice(client, acme, writer):
    post(client, writer, {"events": [event("a")]})

    response = post(client, writer, {"events": [event("a", quantity=99), event("c"), event("c")]})

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [
        "duplicate",
        "accepted",
        "duplicate",
    ]
    assert response.json()["duplicates"] == 2
    assert sorted(UsageEvent.objects.values_list("idempotency_key", "quantity")) == [
        ("a", 3),
        ("c", 3),
    ]


def test_the_same_idempotency_key_in_two_organizations_is_two_events(client, acme, writer):
    OrganizationFactory(key="globex")

    response = post(client, writer, {"events": [event("a"), event("a", organization="globex")]})

    assert response.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"organization": "nobody"}, "unknown organization 'nobody'"),
        ({"metric": "teleports"}, "unknown metric 'teleports'"),
        ({"quantity": -1}, "quantity must not be negative"),
        ({"quantity": "3"}, "quantity must be an integer"),
        ({"quantity": 1.5}, "quantity must be an integer"),
        ({"quantity": True}, "quantity must be an integer"),
        ({"quantity": 2**63}, "quantity must be at most"),
        ({"occurred_at": "2026-11-03T12:36:00Z"}, "is in the future"),
        ({"occurred_at": "2026-08-04T12:00:00Z"}, "older than the event retention"),
        ({"occurred_at": "2026-11-03T10:15:00"}, "needs a time zone"),
        ({"occurred_at": "yesterday"}, "is not an ISO 8601 timestamp"),
        ({"occurred_at": 1790000000}, "must be an ISO 8601 timestamp"),
        ({"idempotency_key": ""}, "idempotency_key is required"),
        ({"idempotency_key": "k" * 129}, "longer than 128 characters"),
        ({"idempotency_key": "a\x00b"}, "NUL"),
        ({"idempotency_key": "\ud800"}, "surrogates"),
        ({"metric": "active_users"}, "needs a value_key"),
        ({"colour": "blue"}, "unknown field 'colour'"),
    ],
)
def test_a_bad_event_is_rejected_with_its_reason_and_the_rest_is_stored(
    client, acme, writer, fields, reason
):
    response = post(client, writer, {"events": [event("good"), event("bad", **fields)]})

    assert response.status_code == 200
    body = response.json()
    assert body["results"][0] == {"index": 0, "status": "accepted"}
    assert body["results"][1]["index"] == 1
    assert body["results"][1]["status"] == "rejected"
    assert reason in body["results"][1]["reason"]
    assert list(UsageEvent.objects.values_list("idempotency_key", flat=True)) == ["good"]


def test_an_event_within_the_clock_skew_is_accepted(client, acme, writer):
    response = post(client, writer, {"events": [event(occurred_at="2026-11-03T12:34:00+00:00")]})

    assert response.json()["accepted"] == 1


def test_a_non_object_event_is_rejected(client, acme, writer):
    response = post(client, writer, {"events": [event(), "x", None]})

    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected", "rejected"]


def test_an_event_for_an_already_aggregated_hour_marks_it_late(client, acme, writer):
    aggregate_hour(hour=H10)
    assert UsageHour.objects.filter(hour=H10).exists()

    post(client, writer, {"events": [event("late")]})

    assert list(UsageLateHour.objects.values_list("hour", flat=True)) == [H10]
    aggregate_hour(hour=H10)  # the next hourly run rebuilds it
    assert UsageAggregate.objects.get(organization=acme, hour=H10).total == 3


def test_a_resent_event_for_an_aggregated_hour_marks_nothing_late(client, acme, writer):
    post(client, writer, {"events": [event("a")]})
    aggregate_hour(hour=H10)

    post(client, writer, {"events": [event("a")]})

    assert not UsageLateHour.objects.exists()


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "must be a JSON object"),
        (b'{"events": {}}', 400, "events must be an array"),
        (b'{"events": []}', 400, "events is empty"),
        (b'{"events": [], "extra": 1}', 400, "unknown field 'extra'"),
        (b"\xff\xfe", 400, "not valid UTF-8"),
    ],
)
def test_a_malformed_batch_is_a_4xx_naming_the_problem(client, acme, writer, raw, status, message):
    response = post(client, writer, None, raw=raw)

    assert response.status_code == status
    assert message in response.json()["error"]
    assert not UsageEvent.objects.exists()


def test_a_batch_over_the_limit_is_refused_whole(client, acme, writer):
    events = [event(f"k{i}") for i in range(1_001)]

    response = post(client, writer, {"events": events})

    assert response.status_code == 413
    assert "at most 1000 events, this one has 1001" in response.json()["error"]
    assert not UsageEvent.objects.exists()


@override_settings(USAGE_API_MAX_BODY_BYTES=1_000)
def test_a_body_over_the_byte_limit_is_refused(client, acme, writer):
    response = post(client, writer, {"events": [event(f"k{i}") for i in range(20)]})

    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["error"]


def test_a_full_batch_of_1000_is_one_insert(client, acme, writer, django_assert_max_num_queries):
    events = [event(f"k{i}") for i in range(1_000)]

    with django_assert_max_num_queries(12):
        response = post(client, writer, {"events": events})

    assert response.json()["accepted"] == 1_000
    assert UsageEvent.objects.count() == 1_000


def test_pushing_needs_the_usage_write_scope(client, acme):
    reader = ApiKeyFactory(scopes=["usage:read", "jobs:run"])

    response = post(client, reader, {"events": [event()]})

    assert response.status_code == 403
    assert response.json()["missing_scope"] == "usage:write"
    assert not UsageEvent.objects.exists()


def test_without_a_key_nothing_is_stored(client, acme):
    response = client.post(EVENTS_URL, data=json.dumps({"events": [event()]}), content_type="x")

    assert response.status_code == 401
    assert not UsageEvent.objects.exists()


def test_a_key_limited_to_some_organizations_cannot_write_for_others(client, acme):
    OrganizationFactory(key="globex")
    key = ApiKeyFactory(scopes=["usage:write:glob*"])

    response = post(client, key, {"events": [event("a"), event("b", organization="globex")]})

    results = response.json()["results"]
    assert results[0] == {"index": 0, "status": "rejected", "reason": "unknown organization 'acme'"}
    assert results[1] == {"index": 1, "status": "accepted"}


def test_get_on_the_events_endpoint_is_a_405(client, writer):
    response = client.get(EVENTS_URL, HTTP_AUTHORIZATION=f"Bearer {writer.secret}")

    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- summary ------------------------------------------------------------------------


def summary(client, key, **query):
    return client.get(SUMMARY_URL, query, HTTP_AUTHORIZATION=f"Bearer {key.secret}")


def test_the_summary_gives_the_period_totals_an_invoice_would_bill(client, acme, writer):
    post(
        client,
        writer,
        {
            "events": [
                event("a", quantity=5),
                event("b", quantity=7, occurred_at="2026-11-03T11:05:00Z"),
                event("c", metric="storage_gb", quantity=40),
                event("d", metric="storage_gb", quantity=30, occurred_at="2026-11-03T11:10:00Z"),
                event("e", metric="active_users", quantity=1, value_key="u1"),
                event("f", metric="active_users", value_key="u1", occurred_at="2026-11-03T11:01Z"),
                event("g", metric="active_users", value_key="u2", occurred_at="2026-11-03T11:02Z"),
            ]
        },
    )
    aggregate_hour(hour=H10)
    aggregate_hour(hour=H10 + timedelta(hours=1))
    reader = ApiKeyFactory(scopes=["usage:read"])

    response = summary(
        client, reader, organization="acme", **{"from": "2026-11-01", "to": "2026-12-01"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["organization"] == "acme"
    assert body["from"] == "2026-11-01T00:00:00+00:00"
    assert body["to"] == "2026-12-01T00:00:00+00:00"
    assert {m["metric"]: m["total"] for m in body["metrics"]} == {
        "active_users": 2,
        "api_calls": 12,
        "storage_gb": 40,
    }


def test_the_summary_lists_metrics_without_usage_as_zero(client, acme):
    reader = ApiKeyFactory(scopes=["usage:read"])

    response = summary(
        client, reader, organization="acme", **{"from": "2026-11-03T00:00:00Z", "to": "2026-11-04"}
    )

    assert [m["total"] for m in response.json()["metrics"]] == [0, 0, 0]


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"from": "2026-11-01", "to": "2026-12-01"}, 400, "organization query parameter"),
        ({"organization": "acme", "to": "2026-12-01"}, 400, "from query parameter is required"),
        ({"organization": "acme", "from": "2026-11-01", "to": "soon"}, 400, "is not a date"),
        (
            {"organization": "acme", "from": "2026-11-01T10:30:00Z", "to": "2026-12-01"},
            400,
            "on the hour",
        ),
        (
            {"organization": "acme", "from": "2026-11-01T10:00:00", "to": "2026-12-01"},
            400,
            "needs a time zone",
        ),
        ({"organization": "acme", "from": "2026-12-01", "to": "2026-11-01"}, 400, "after from"),
        ({"organization": "acme", "from": "2020-01-01", "to": "2026-11-01"}, 400, "at most 400"),
        ({"organization": "nobody", "from": "2026-11-01", "to": "2026-12-01"}, 404, "unknown"),
        ({"organization": "acme", "from": "2026-11-01", "to": "2026-12-01", "x": "1"}, 400, "'x'"),
        (
            {"organization": "acme", "from": "0001-01-01T00:00:00+01:00", "to": "2026-12-01"},
            400,
            "out of range",
        ),
    ],
)
def test_a_bad_summary_query_is_a_4xx_naming_the_problem(client, acme, query, status, message):
    reader = ApiKeyFactory(scopes=["usage:read"])

    response = summary(client, reader, **query)

    assert response.status_code == status
    assert message in response.json()["error"]


def test_the_summary_needs_usage_read_for_that_organization(client, acme, writer):
    limited = ApiKeyFactory(scopes=["usage:read:globex"])
    query = {"organization": "acme", "from": "2026-11-01", "to": "2026-12-01"}

    assert summary(client, writer, **query).status_code == 403
    assert summary(client, limited, **query).status_code == 404


# --- found by schemathesis (reliability/test_openapi_fuzz.py) ---------------------------


@pytest.mark.parametrize("org", ["a\x00b", "\ud800", "x" * 101, ["acme"], {"k": 1}, 7])
def test_an_organization_key_no_database_compares_is_rejected_not_a_500(client, acme, writer, org):
    response = post(client, writer, {"events": [event("good"), event("bad", organization=org)]})

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected"]


def test_a_summary_for_an_organization_key_with_a_nul_is_a_404(client, acme):
    reader = ApiKeyFactory(scopes=["usage:read"])

    response = summary(
        client, reader, organization="a\x00b", **{"from": "2026-11-01", "to": "2026-12-01"}
    )

    assert response.status_code == 404

"""schemathesis against the live server, from the service's own /api/openapi.json.

A tool nobody here wrote reads the published contract and generates requests
for every operation, valid ones (positive) and wrong ones (negative), with a
fixed seed and a bounded count (FUZZ_EXAMPLES per operation and mode, a few
thousand requests in all). Its checks: no server error, every status
documented for its operation, every response body conforming to its
documented schema. Zero failures; what it found earlier has a regression
test in tests/jobs/test_openapi.py and tests/billing/test_usage_api.py.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter

import pytest
import schemathesis
from django.conf import settings
from django_q.brokers import get_broker
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from billing.models import AggregationType, BillableMetric
from reliability.conftest import report
from tests.factories import OrganizationFactory, PaymentProviderConfigFactory

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 50))
FUZZ_SEED = int(os.environ.get("FUZZ_SEED", 20261202))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def contract(live_server):
    OrganizationFactory(key="acme")
    PaymentProviderConfigFactory(
        organization=OrganizationFactory(key="globex"), webhook_secret="whsec_fuzz"
    )
    for code, kind in [("api_calls", AggregationType.SUM), ("seats", AggregationType.UNIQUE_COUNT)]:
        BillableMetric.objects.create(code=code, name=code, aggregation=kind)
    headers = {"Authorization": f"Bearer {settings.JOBS_API_TOKEN}"}
    request = urllib.request.Request(f"{live_server.url}/api/openapi.json", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        document = json.loads(response.read())
    get_broker().purge_queue()
    yield schemathesis.openapi.from_dict(document), live_server.url, headers
    get_broker().purge_queue()


def test_schemathesis_finds_nothing_in_the_published_contract(contract):
    schema, base_url, headers = contract
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(FUZZ_SEED)
            @hsettings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                derandomize=False,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case) -> None:
                response = case.call_and_validate(
                    base_url=base_url, headers=headers, checks=CHECKS, timeout=30
                )
                statuses[response.status_code] += 1

            fuzz()

    total = sum(statuses.values())
    report(
        f"schemathesis: {total} requests over {len(operations)} operations, 0 failures; "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert total >= len(operations) * 2

"""Logs a log platform can index (LOG_FORMAT=json), with no secret in them.

The records go through the handler settings.LOGGING builds (its filters and
formatter), with the root logger at DEBUG so the Stripe SDK's and Django's own
debug lines are in what is searched too.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import uuid
from copy import deepcopy

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, RequestFactory

from audit.middleware import RequestIdMiddleware
from jobs.models import RunStatus
from jobs.runner import run_job
from tests.factories import OrganizationFactory, PaymentFactory, PaymentProviderConfigFactory
from tests.payments.intents import intent

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_log():
    """Root's handlers replaced by the configured console handler in JSON
    form, writing to a buffer; everything back afterwards."""
    config = deepcopy(settings.LOGGING)
    config["handlers"]["console"]["formatter"] = "json"
    config["root"]["level"] = "DEBUG"
    config["disable_existing_loggers"] = False
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    logging.config.dictConfig(config)
    handler = root.handlers[0]
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.config.dictConfig(settings.LOGGING)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_job_run_tenant_and_the_traceback_inside(json_log, register_job):
    @register_job("tests.logs_and_fails")
    def fails(ctx):
        ctx.log.info("working on %s", "it")
        raise RuntimeError("boom")

    run = run_job("tests.logs_and_fails", trigger="cli")
    records = lines(json_log)
    working = next(r for r in records if r["message"] == "working on it")
    assert working["level"] == "INFO"
    assert working["logger"] == "jobs.run.tests.logs_and_fails"
    assert working["job"] == "tests.logs_and_fails"
    assert working["run_id"] == str(run.pk)
    assert working["tenant"] is None and working["request_id"] is None
    assert working["timestamp"].endswith("+00:00")
    failed = next(r for r in records if r["message"] == "failed")
    assert failed["level"] == "ERROR"
    assert "RuntimeError: boom" in failed["traceback"]
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert all(set(r) >= {"timestamp", "level", "logger", "message"} for r in records)


def test_a_request_id_is_on_the_lines_logged_while_serving_it(json_log):
    def view(request):
        logging.getLogger("tests.view").info("serving")
        return HttpResponse("ok")

    RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="req-logs-1"))
    logging.getLogger("tests.view").info("between requests")
    by_message = {r["message"]: r for r in lines(json_log)}
    assert by_message["serving"]["request_id"] == "req-logs-1"
    assert by_message["between requests"]["request_id"] is None


def test_the_default_format_stays_key_value():
    assert settings.LOG_FORMAT == "text"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "structured"
    assert "job=%(job)s" in settings.LOGGING["formatters"]["structured"]["format"]


def test_a_runs_logs_never_hold_the_stripe_key_or_the_api_token(json_log, stripe_settings):
    secret = f"sk_test_{uuid.uuid4().hex}"
    stripe_org = OrganizationFactory()
    PaymentProviderConfigFactory(organization=stripe_org, secret_key=secret)
    PaymentFactory(organization=stripe_org, provider_reference=intent(stripe_org, "succeeded"))
    PaymentFactory(organization=stripe_org, provider_reference="pi_does_not_exist")
    token = settings.JOBS_API_TOKEN
    client = Client()
    client.post(
        "/api/jobs/payments.reconcile/runs",
        data=json.dumps({"params": {"older_than_minutes": 0}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    client.post("/api/jobs/payments.reconcile/runs", HTTP_AUTHORIZATION=f"Bearer {token}x")

    run = run_job("payments.reconcile", params={"older_than_minutes": 0}, trigger="cli")
    assert run.status == RunStatus.PARTIAL  # the unknown intent is an item failure
    text = json_log.getvalue()
    assert "payments.reconcile" in text and "stripe" in text.lower()  # Stripe calls were logged
    assert secret not in text
    assert secret[-12:] not in text
    assert token not in text

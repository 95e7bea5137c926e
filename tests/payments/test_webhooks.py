"""Stripe webhooks on the live test server: events signed as Stripe signs them
(the SDK's own `WebhookSignature.generate_signature_header` with a test
secret), stored once, processed once by payments.process_stripe_webhooks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import stripe
from django.utils import timezone

from audit.models import AuditTrail
from billing.models import StripeInvoiceStatus
from jobs.models import JobRun, RunStatus
from jobs.runner import run_job
from payments.models import PaymentStatus, StripeWebhookEvent, WebhookEventStatus
from payments.webhooks import processing
from subscriptions.models import SubscriptionStatus
from tests.factories import (
    InvoiceFactory,
    OrganizationFactory,
    PaymentFactory,
    PaymentProviderConfigFactory,
    SubscriptionFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_broker")]

SECRET = "whsec_test_frontdoor_0123456789"
_ids = count(1)


@pytest.fixture
def acme():
    org = OrganizationFactory(key="acme")
    PaymentProviderConfigFactory(organization=org, webhook_secret=SECRET)
    return org


def stripe_event(kind: str, obj: dict, *, created: int | None = None, event_id: str = "") -> dict:
    return {
        "id": event_id or f"evt_test_{next(_ids):06d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }


def deliver(live_server, tenant: str, event: dict | bytes, *, secret: str = SECRET, **kw):
    """POST as Stripe does: the raw body and its Stripe-Signature header."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    signature = kw.get("signature")
    if signature is None:
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=kw.get("timestamp")
        )
    if signature:
        headers["Stripe-Signature"] = signature
    request = urllib.request.Request(
        f"{live_server.url}/webhooks/stripe/{tenant}", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def process():
    return run_job("payments.process_stripe_webhooks")


def intent(pi: str, status: str, **extra) -> dict:
    return {"id": pi, "object": "payment_intent", "status": status, **extra}


# --- receiving -----------------------------------------------------------------------


def test_a_signed_event_is_stored_and_a_run_enqueued_for_its_tenant(live_server, acme):
    event = stripe_event("payment_intent.succeeded", intent("pi_1", "succeeded"))

    status, body = deliver(live_server, "acme", event)

    assert (status, body) == (200, {"received": True, "id": event["id"], "duplicate": False})
    stored = StripeWebhookEvent.objects.get()
    assert (stored.organization, stored.event_id, stored.type, stored.object_id) == (
        acme,
        event["id"],
        "payment_intent.succeeded",
        "pi_1",
    )
    assert stored.status == WebhookEventStatus.RECEIVED
    assert stored.created == datetime.fromtimestamp(event["created"], UTC)
    run = JobRun.objects.get(job="payments.process_stripe_webhooks")
    assert (run.tenant, run.status, run.triggered_by) == (
        "acme",
        RunStatus.QUEUED,
        "stripe-webhook",
    )


def test_a_redelivered_event_is_acknowledged_and_ignored(live_server, acme):
    event = stripe_event("payment_intent.succeeded", intent("pi_1", "succeeded"))
    deliver(live_server, "acme", event)

    status, body = deliver(live_server, "acme", event)

    assert status == 200 and body["duplicate"] is True
    assert StripeWebhookEvent.objects.count() == 1
    assert JobRun.objects.filter(job="payments.process_stripe_webhooks").count() == 1


@pytest.mark.parametrize(
    "signature",
    [
        "",  # no header
        "t=1,v1=deadbeef",
        "garbage",
        "signed-with-another-secret",
        "too-old",
    ],
)
def test_a_bad_signature_is_a_400_and_nothing_is_stored(live_server, acme, signature):
    event = stripe_event("payment_intent.succeeded", intent("pi_1", "succeeded"))
    body = json.dumps(event)
    if signature == "signed-with-another-secret":
        signature = stripe.WebhookSignature.generate_signature_header(body, "whsec_other")
    elif signature == "too-old":
        signature = stripe.WebhookSignature.generate_signature_header(
            body, SECRET, timestamp=int(time.time()) - 301
        )

    status, answer = deliver(live_server, "acme", event, signature=signature)

    assert status == 400
    assert "Stripe-Signature" in answer["error"] or "signature" in answer["error"]
    assert SECRET not in answer["error"]
    assert not StripeWebhookEvent.objects.exists()
    assert not JobRun.objects.exists()


def test_an_unknown_tenant_or_one_without_a_webhook_secret_is_a_404(live_server, acme):
    bare = OrganizationFactory(key="bare")
    PaymentProviderConfigFactory(organization=bare, webhook_secret="")
    event = stripe_event("payment_intent.succeeded", intent("pi_1", "succeeded"))

    assert deliver(live_server, "nobody", event)[0] == 404
    assert deliver(live_server, "bare", event)[0] == 404
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'{"id": "evt_1"}',
        b'{"id": "evt_1", "type": "x", "created": "soon"}',
        b"not json",
        b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": {"id": "a\\u0000"}}}',
        b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": {"id": "\\ud800"}}}',
    ],
)
def test_a_signed_body_that_is_not_a_stripe_event_is_a_400(live_server, acme, body):
    status, answer = deliver(live_server, "acme", body)

    assert status == 400, answer
    assert not StripeWebhookEvent.objects.exists()


def test_get_is_a_405(live_server, acme):
    try:
        urllib.request.urlopen(f"{live_server.url}/webhooks/stripe/acme", timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 405


# --- processing ----------------------------------------------------------------------


def test_payment_intent_events_settle_payments_through_the_reconciliation(live_server, acme):
    sub = SubscriptionFactory(organization=acme, status=SubscriptionStatus.PAST_DUE)
    paid = PaymentFactory(organization=acme, subscription=sub, provider_reference="pi_ok")
    declined = PaymentFactory(organization=acme, provider_reference="pi_no")
    dropped = PaymentFactory(organization=acme, provider_reference="pi_gone")
    error = {"code": "card_declined", "message": "Your card was declined."}
    for event in [
        stripe_event("payment_intent.succeeded", intent("pi_ok", "succeeded")),
        stripe_event(
            "payment_intent.payment_failed",
            intent("pi_no", "requires_payment_method", last_payment_error=error),
        ),
        stripe_event(
            "payment_intent.canceled",
            intent("pi_gone", "canceled", cancellation_reason="abandoned"),
        ),
    ]:
        assert deliver(live_server, "acme", event)[0] == 200

    run = process()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.summary["processed"] == 3
    for payment in (paid, declined, dropped, sub):
        payment.refresh_from_db()
    assert paid.status == PaymentStatus.SUCCEEDED and paid.succeeded_at is not None
    assert (declined.status, declined.failure_reason) == ("failed", "Your card was declined.")
    assert (dropped.status, dropped.failure_reason) == ("canceled", "abandoned")
    assert sub.status == SubscriptionStatus.ACTIVE  # renewed, as the reconciliation does
    audit = AuditTrail.objects.filter(action="payment.succeeded").get()
    assert audit.tenant == "acme"
    assert set(StripeWebhookEvent.objects.values_list("status", flat=True)) == {"processed"}


def test_an_event_is_processed_once_even_if_the_job_runs_again(live_server, acme):
    payment = PaymentFactory(organization=acme, provider_reference="pi_ok")
    deliver(
        live_server, "acme", stripe_event("payment_intent.succeeded", intent("pi_ok", "succeeded"))
    )
    process()
    audits = AuditTrail.objects.count()

    run = process()

    assert run.summary["pending"] == 0
    assert AuditTrail.objects.count() == audits
    payment.refresh_from_db()
    assert payment.attempts == 1


def test_an_older_event_delivered_late_changes_nothing(live_server, acme):
    end = timezone.now() + timedelta(days=20)
    sub = SubscriptionFactory(
        organization=acme,
        stripe_subscription_id="sub_1",
        current_period_end=end,
        current_period_start=end - timedelta(days=30),
    )
    newer_end = end + timedelta(days=30)
    now = int(time.time())

    def stripe_sub(period_end: datetime, *, cancel: bool) -> dict:
        return {
            "id": "sub_1",
            "object": "subscription",
            "status": "active",
            "cancel_at_period_end": cancel,
            "current_period_start": int((period_end - timedelta(days=30)).timestamp()),
            "current_period_end": int(period_end.timestamp()),
        }

    newer = stripe_event(
        "customer.subscription.updated", stripe_sub(newer_end, cancel=True), created=now
    )
    older = stripe_event(
        "customer.subscription.updated", stripe_sub(end, cancel=False), created=now - 60
    )
    deliver(live_server, "acme", newer)
    process()
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is True and sub.auto_renew is False
    assert sub.current_period_end == newer_end.replace(microsecond=0)

    deliver(live_server, "acme", older)
    run = process()

    assert run.summary["ignored"] == 1
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is True and sub.auto_renew is False
    late = StripeWebhookEvent.objects.get(event_id=older["id"])
    assert late.status == WebhookEventStatus.IGNORED
    assert "out of order" in late.outcome


def test_events_pending_together_are_applied_in_stripes_order(live_server, acme):
    end = int(time.time()) + 20 * 86_400  # whole seconds, as Stripe's timestamps
    sub = SubscriptionFactory(
        organization=acme,
        stripe_subscription_id="sub_2",
        current_period_end=datetime.fromtimestamp(end, UTC),
    )
    base = {"id": "sub_2", "object": "subscription", "current_period_end": end}
    now = int(time.time())
    deleted = stripe_event(
        "customer.subscription.deleted", {**base, "status": "canceled"}, created=now
    )
    updated = stripe_event(
        "customer.subscription.updated", {**base, "status": "past_due"}, created=now - 10
    )
    deliver(live_server, "acme", deleted)  # the newer one arrives first
    deliver(live_server, "acme", updated)

    process()

    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.CANCELED
    assert sub.canceled_at is not None
    # The older one was applied first (not dropped as out of order), then the newer.
    assert list(
        StripeWebhookEvent.objects.order_by("processed_at", "id").values_list("event_id", "status")
    ) == [(updated["id"], "processed"), (deleted["id"], "processed")]


def test_invoice_events_set_the_stripe_status_of_the_services_own_invoices(live_server, acme):
    invoice = InvoiceFactory(organization=acme, stripe_invoice_id="in_1")
    now = int(time.time())
    failed = stripe_event("invoice.payment_failed", {"id": "in_1"}, created=now - 100)
    paid = stripe_event("invoice.paid", {"id": "in_1"}, created=now)
    foreign = stripe_event("invoice.voided", {"id": "in_not_ours"}, created=now)
    for event in (failed, paid, foreign):
        deliver(live_server, "acme", event)

    process()

    invoice.refresh_from_db()
    assert invoice.stripe_payment_status == StripeInvoiceStatus.PAID
    assert invoice.stripe_status_at == datetime.fromtimestamp(now, UTC)
    assert (
        "no invoice of this service"
        in StripeWebhookEvent.objects.get(event_id=foreign["id"]).outcome
    )


def test_an_unknown_event_type_is_stored_and_acknowledged(live_server, acme):
    event = stripe_event("charge.dispute.created", {"id": "dp_1"})

    assert deliver(live_server, "acme", event)[0] == 200
    process()

    stored = StripeWebhookEvent.objects.get()
    assert stored.status == WebhookEventStatus.IGNORED
    assert "not handled" in stored.outcome


def test_the_admin_shows_each_tenants_last_webhook(live_server, acme, client):
    deliver(live_server, "acme", stripe_event("charge.dispute.created", {"id": "dp_1"}))
    received = StripeWebhookEvent.objects.get().received_at
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    page = client.get("/admin/payments/paymentproviderconfig/")

    assert page.status_code == 200
    assert "Last webhook received" in page.content.decode()
    assert str(received.year) in page.content.decode()
    events = client.get("/admin/payments/stripewebhookevent/")
    assert events.status_code == 200 and "charge.dispute.created" in events.content.decode()


@pytest.fixture
def boom_handler():
    @processing.register_webhook_handler("test.boom")
    def boom(event, obj, ctx):
        raise RuntimeError("handler broke")

    yield
    processing._HANDLERS.pop("test.boom")


def test_a_failing_handler_is_recorded_and_retried_then_left_failed(
    live_server, acme, boom_handler
):
    deliver(live_server, "acme", stripe_event("test.boom", {"id": "x_1"}))

    first = process()
    assert first.summary["retrying"] == 1
    assert first.failures.get().error == "RuntimeError: handler broke"
    process()
    last = process()

    assert last.summary["failed"] == 1
    stored = StripeWebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == (WebhookEventStatus.FAILED, 3)
    assert process().summary["pending"] == 0


@pytest.mark.parametrize("tenant", ["ac%00me", "%ED%A0%80", "a" * 101])
def test_a_tenant_key_that_is_no_slug_is_a_404_not_a_500(live_server, acme, tenant):
    """Found by schemathesis: a NUL in the path made PostgreSQL refuse the lookup."""
    event = stripe_event("payment_intent.succeeded", intent("pi_1", "succeeded"))

    assert deliver(live_server, tenant, event)[0] == 404
    assert not StripeWebhookEvent.objects.exists()

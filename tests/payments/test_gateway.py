"""The Stripe gateway, over HTTP against localstripe."""

from __future__ import annotations

import pytest

from payments.gateway import (
    CardDeclined,
    CircuitOpen,
    GatewayAuthError,
    GatewayError,
    GatewayNotConfigured,
    GatewayRequestError,
    gateway_for,
    require_gateway,
)
from tests.factories import OrganizationFactory, PaymentProviderConfigFactory

pytestmark = pytest.mark.django_db


def invoice_args(**overrides):
    args = {
        "idempotency_key": "org:1:invoice:2026-10",
        "customer_email": "billing@acme.example",
        "customer_name": "Acme",
        "currency": "EUR",
        "lines": [("Pro plan, October", 2900), ("Extra seats", 1000)],
        "metadata": {"invoice_number": "INV-2026-10-0001"},
        "description": "October 2026",
    }
    return {**args, **overrides}


def test_gateway_for_is_none_without_an_enabled_config(stripe_settings):
    org = OrganizationFactory()
    assert gateway_for(org) is None
    PaymentProviderConfigFactory(organization=org, enabled=False)
    assert gateway_for(org) is None
    with pytest.raises(GatewayNotConfigured):
        require_gateway(org)


def test_create_invoice_creates_a_stripe_invoice_with_its_lines(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    invoice_id = gateway.create_invoice(**invoice_args())

    assert invoice_id.startswith("in_")
    invoice = gateway.client.v1.invoices.retrieve(invoice_id)
    assert invoice.metadata.to_dict() == {"invoice_number": "INV-2026-10-0001"}
    assert invoice.customer_email == "billing@acme.example"
    items = [r for r in localstripe.writes() if r["path"] == "/v1/invoiceitems"]
    assert len(items) == 2


def test_create_invoice_sends_deterministic_idempotency_keys(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    gateway.create_invoice(**invoice_args())

    keys = [r["idempotency_key"] for r in localstripe.requests() if r["method"] == "POST"]
    assert keys[1:] == [
        "org:1:invoice:2026-10:invoice",
        "org:1:invoice:2026-10:line:0",
        "org:1:invoice:2026-10:line:1",
    ]
    assert keys[0].startswith(f"org:{stripe_org.pk}:customer:")


def test_create_invoice_again_with_the_same_key_creates_nothing(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    first = gateway.create_invoice(**invoice_args())
    writes = len(localstripe.writes())

    again = gateway.create_invoice(**invoice_args())

    assert again == first
    assert len(localstripe.writes()) == writes  # every POST was an idempotent replay


def test_a_new_key_creates_a_new_invoice_for_the_same_customer(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    first = gateway.create_invoice(**invoice_args())
    second = gateway.create_invoice(**invoice_args(idempotency_key="org:1:invoice:2026-11"))

    assert second != first
    customers = [r for r in localstripe.writes() if r["path"] == "/v1/customers"]
    assert len(customers) == 1


def test_a_500_then_200_is_retried_by_the_sdk(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    localstripe.add_fault(status=500, times=1, path="^/v1/invoices$", method="POST")

    invoice_id = gateway.create_invoice(**invoice_args())

    attempts = [r for r in localstripe.requests() if r["path"] == "/v1/invoices"]
    assert [a["status"] for a in attempts] == [500, 200]
    assert {a["idempotency_key"] for a in attempts} == {"org:1:invoice:2026-10:invoice"}
    assert invoice_id.startswith("in_")


def test_429_is_retried_with_backoff(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    localstripe.add_fault(status=429, times=2, path="^/v1/customers", method="GET")

    assert gateway.find_or_create_customer(email="a@acme.example", name="A").startswith("cus_")
    statuses = [r["status"] for r in localstripe.requests() if r["method"] == "GET"]
    assert statuses == [429, 429, 200]


def test_sdk_errors_leave_as_gateway_errors_without_the_key(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    with pytest.raises(GatewayRequestError) as missing:
        gateway.retrieve_payment_intent("pi_doesnotexist")
    assert "retrieve PaymentIntent pi_doesnotexist" in str(missing.value)
    assert missing.value.http_status == 404

    localstripe.add_fault(status=401, times=1)
    with pytest.raises(GatewayAuthError) as refused:
        gateway.retrieve_payment_intent("pi_doesnotexist")
    assert "sk_test" not in str(refused.value)


def test_a_declined_card_is_a_card_declined_error(stripe_org):
    gateway = gateway_for(stripe_org)
    c = gateway.client.v1
    customer = c.customers.create(params={"email": "x@acme.example"})
    method = c.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000000000000341", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    intent = c.payment_intents.create(
        params={
            "amount": 500,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": method.id,
        }
    )
    with pytest.raises(CardDeclined):
        gateway.call("confirm", lambda cl: cl.v1.payment_intents.confirm(intent.id))
    assert gateway.breaker.fail_counter == 0  # a decline says nothing about the account


def test_a_429_storm_opens_the_breaker_for_that_tenant_only(stripe_settings, localstripe):
    storm = PaymentProviderConfigFactory(secret_key="sk_test_stormy_000000abcd").organization
    calm = PaymentProviderConfigFactory(secret_key="sk_test_calm_0000000abcd").organization
    localstripe.add_fault(status=429, times=1000, api_key="sk_test_stormy_000000abcd")
    stormy = gateway_for(storm)

    errors = []
    for _ in range(5):
        with pytest.raises(GatewayError) as caught:
            stormy.retrieve_payment_intent("pi_x")
        errors.append(type(caught.value).__name__)
    sent = len([r for r in localstripe.requests() if r["api_key"].startswith("sk_test_stormy")])

    # fail_max=3 in tests: two rate-limited failures, the third opens it,
    # then calls fail fast without reaching Stripe.
    assert errors == ["GatewayRateLimited", "GatewayRateLimited", *["CircuitOpen"] * 3]
    assert sent == 3 * 3  # three calls, each tried three times (two SDK retries)
    with pytest.raises(CircuitOpen):
        gateway_for(storm).retrieve_payment_intent("pi_x")

    with pytest.raises(GatewayRequestError):  # the calm tenant still reaches Stripe
        gateway_for(calm).retrieve_payment_intent("pi_x")


def test_void_invoice_deletes_a_draft_and_a_second_call_is_harmless(stripe_org, localstripe):
    gateway = gateway_for(stripe_org)
    invoice_id = gateway.create_invoice(**invoice_args())

    assert gateway.void_invoice(invoice_id, idempotency_key="org:1:invoice:2026-10") == "deleted"
    assert gateway.void_invoice(invoice_id, idempotency_key="org:1:invoice:2026-10") == (
        "already deleted"
    )
    deletes = [r for r in localstripe.writes() if r["method"] == "DELETE"]
    assert [d["path"] for d in deletes] == [f"/v1/invoices/{invoice_id}"]


def test_create_invoice_for_an_unknown_customer_is_a_request_error(stripe_org):
    gateway = gateway_for(stripe_org)
    with pytest.raises(GatewayRequestError):
        gateway.call(
            "create Invoice",
            lambda c: c.v1.invoices.create(params={"customer": "cus_missing"}),
        )

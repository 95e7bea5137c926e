"""Make PaymentIntents in each state on localstripe, through a tenant's own client."""

from __future__ import annotations

import contextlib

import stripe

from payments.gateway import gateway_for

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, then every charge is declined


def _client(org) -> stripe.StripeClient:
    return gateway_for(org).client


def intent(org, state: str, *, amount: int = 2900) -> str:
    """A PaymentIntent id in `state`: succeeded, failed, canceled or open."""
    c = _client(org).v1
    customer = c.customers.create(params={"email": f"payer@{org.key}.example"})
    card = DECLINED_CARD if state == "failed" else GOOD_CARD
    method = c.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    created = c.payment_intents.create(
        params={
            "amount": amount,
            "currency": "eur",
            "customer": customer.id,
            "payment_method": method.id,
        }
    )
    if state == "succeeded":
        c.payment_intents.confirm(created.id)
    elif state == "failed":
        with contextlib.suppress(stripe.CardError):
            c.payment_intents.confirm(created.id)
    elif state == "canceled":
        c.payment_intents.cancel(created.id)
    return created.id

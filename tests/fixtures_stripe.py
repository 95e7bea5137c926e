"""localstripe on a free loopback port, and tenants whose gateway points at it.

`localstripe`: the server (session; tests.fakes.fake_stripe: localstripe plus
Stripe's idempotent replays, a request log and injectable faults).
`stripe_settings`: this test's gateway talks to it, with fast retries.
`stripe_org`: an organization with an enabled Stripe config on it.
"""

from __future__ import annotations

import uuid

import pytest

__all__ = ["localstripe", "stripe_org", "stripe_settings"]


@pytest.fixture(scope="session")
def localstripe():
    from tests.fakes import fake_stripe

    server = fake_stripe.start()
    yield server
    server.stop()


@pytest.fixture
def stripe_settings(settings, localstripe):
    from payments.gateway import reset_gateways

    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    settings.STRIPE_RETRY_INITIAL_DELAY_SECONDS = 0.01
    settings.STRIPE_RETRY_MAX_DELAY_SECONDS = 0.05
    settings.STRIPE_BREAKER_FAIL_MAX = 3
    settings.STRIPE_BREAKER_RESET_SECONDS = 60
    settings.STRIPE_RATE_LIMIT_PER_SECOND = 1000
    localstripe.flush()  # each test starts with an empty Stripe
    reset_gateways()
    yield settings
    localstripe.clear_faults()
    reset_gateways()


@pytest.fixture
def stripe_org(db, stripe_settings):
    """An organization whose Stripe gateway talks to localstripe (a unique key
    per test, so tests never see each other's Stripe objects)."""
    from tests.factories import OrganizationFactory, PaymentProviderConfigFactory

    org = OrganizationFactory()
    PaymentProviderConfigFactory(
        organization=org, secret_key=f"sk_test_{uuid.uuid4().hex[:16]}abcd"
    )
    return org

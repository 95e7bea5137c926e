"""Provider configs and payments."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from payments.crypto import encrypt
from payments.models import Payment, PaymentProviderConfig, PaymentStatus
from tests.factories.subscriptions import OrganizationFactory


class PaymentProviderConfigFactory(factory.django.DjangoModelFactory):
    """An enabled Stripe config; `secret_key` is stored encrypted. Point the
    gateway at localstripe with the `stripe_settings` fixture (or use `stripe_org`)."""

    class Meta:
        model = PaymentProviderConfig
        django_get_or_create = ("organization",)

    class Params:
        secret_key = factory.LazyAttribute(lambda c: f"sk_test_{c.organization.key}_0000abcd")
        webhook_secret = "whsec_test"

    organization = factory.SubFactory(OrganizationFactory)
    provider = "stripe"
    enabled = True
    publishable_key = factory.LazyAttribute(lambda c: f"pk_test_{c.organization.key}")
    secret_key_encrypted = factory.LazyAttribute(lambda c: encrypt(c.secret_key))
    secret_key_prefix = factory.LazyAttribute(lambda c: c.secret_key[:8])
    secret_key_last4 = factory.LazyAttribute(lambda c: c.secret_key[-4:])
    webhook_secret_encrypted = factory.LazyAttribute(lambda c: encrypt(c.webhook_secret))


class PaymentFactory(factory.django.DjangoModelFactory):
    """A payment opened an hour ago, still pending."""

    class Meta:
        model = Payment

    organization = factory.SubFactory(OrganizationFactory)
    subscription = None
    amount_minor = 2900
    currency = "EUR"
    status = PaymentStatus.PENDING
    provider_reference = factory.Sequence(lambda n: f"pi_test_{n:06d}")
    created_at = factory.LazyFunction(lambda: timezone.now() - timedelta(hours=1))
    updated_at = factory.LazyAttribute(lambda p: p.created_at)

"""factory-boy factories for every app's models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.api_keys import create_api_key
from jobs.models import ApiKey, JobRun, RunStatus, Trigger


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("password")


class JobRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobRun

    job = "tests.sample"
    trigger = Trigger.CLI
    status = RunStatus.SUCCEEDED
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyFunction(timezone.now)


# --- subscriptions, maintenance, notifications -------------------------------------

from datetime import timedelta  # noqa: E402

from audit.models import AuditTrail  # noqa: E402
from notifications.models import OutboundEmail  # noqa: E402
from subscriptions.models import (  # noqa: E402
    Organization,
    Plan,
    Subscription,
    SubscriptionStatus,
)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("key",)

    key = factory.Sequence(lambda n: f"org_{n:03d}")
    name = factory.LazyAttribute(lambda o: f"Organization {o.key}")
    billing_email = factory.LazyAttribute(lambda o: f"billing@{o.key}.example")


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    name = factory.Sequence(lambda n: f"Plan {n}")
    price_minor = 2900
    currency = "EUR"
    interval = "month"


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """An active subscription in the middle of its period; traits for the rest."""

    class Meta:
        model = Subscription

    organization = factory.SubFactory(OrganizationFactory)
    plan = factory.SubFactory(PlanFactory)
    status = SubscriptionStatus.ACTIVE
    current_period_end = factory.LazyFunction(lambda: timezone.now() + timedelta(days=15))
    current_period_start = factory.LazyAttribute(
        lambda s: s.current_period_end - timedelta(days=30)
    )
    auto_renew = True

    class Params:
        expired = factory.Trait(
            status=SubscriptionStatus.EXPIRED,
            auto_renew=False,
            expired_at=factory.LazyAttribute(lambda s: s.current_period_end),
        )
        suspended = factory.Trait(
            status=SubscriptionStatus.SUSPENDED,
            auto_renew=False,
            expired_at=factory.LazyAttribute(lambda s: s.current_period_end),
            suspended_at=factory.LazyAttribute(lambda s: s.current_period_end + timedelta(days=7)),
        )
        canceled = factory.Trait(
            status=SubscriptionStatus.CANCELED,
            auto_renew=False,
            canceled_at=factory.LazyFunction(timezone.now),
        )


class AuditTrailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditTrail

    actor = "user:tester"
    action = "subscription.updated"
    object_type = "subscriptions.subscription"
    object_id = factory.Sequence(str)


class OutboundEmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutboundEmail

    to = factory.Sequence(lambda n: f"person{n}@example.com")
    subject = "Hello"
    body_text = "Hello."
    kind = "tests.hello"
    dedupe_key = factory.Sequence(lambda n: f"tests.hello:{n}")


# --- notifications: suppression list ----------------------------------------------

from notifications.models import SuppressedAddress  # noqa: E402


class SuppressedAddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SuppressedAddress
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"bounced{n}@example.com")
    reason = "bounce"


# --- payments: provider configs and payments ---------------------------------------

from payments.crypto import encrypt  # noqa: E402
from payments.models import Payment, PaymentProviderConfig, PaymentStatus  # noqa: E402


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


# --- billing: metrics, prices, usage aggregates, invoices ---------------------------

from datetime import date  # noqa: E402

from billing.models import (  # noqa: E402
    BillableMetric,
    Invoice,
    InvoiceStatus,
    PlanMetricPrice,
    UsageAggregate,
)


class BillableMetricFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillableMetric
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"metric_{n}")
    name = factory.LazyAttribute(lambda m: m.code.replace("_", " ").capitalize())
    aggregation = "sum"
    unit = ""


class PlanMetricPriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanMetricPrice

    plan = factory.SubFactory(PlanFactory)
    metric = factory.SubFactory(BillableMetricFactory)
    unit_price_minor = 2


class UsageAggregateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageAggregate

    organization = factory.SubFactory(OrganizationFactory)
    metric = "api_calls"
    hour = factory.LazyFunction(lambda: timezone.now().replace(minute=0, second=0, microsecond=0))
    total = 1
    event_count = factory.LazyAttribute(lambda a: a.total)


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A finalized invoice for January 2026 (no PDF, not sent)."""

    class Meta:
        model = Invoice

    organization = factory.SubFactory(OrganizationFactory)
    period_start = date(2026, 1, 1)
    period_end = date(2026, 2, 1)
    number = factory.Sequence(lambda n: f"INV-2099-{n + 1:06d}")
    status = InvoiceStatus.FINALIZED
    currency = "EUR"
    subtotal_minor = 2900
    tax_minor = 0
    total_minor = 2900
    finalized_at = factory.LazyFunction(timezone.now)


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """Made through the service, like the admin does; `.secret` is the key."""

    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"client-{n}")
    owner = "platform team"
    scopes = factory.LazyFunction(lambda: ["jobs:run"])
    actor = "tests"

    @classmethod
    def _create(cls, model_class, **kwargs):
        new = create_api_key(**kwargs)
        new.api_key.secret = new.secret
        return new.api_key

"""factory-boy factories for every app's models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import JobRun, RunStatus, Trigger


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

from maintenance.models import AuditTrail  # noqa: E402
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

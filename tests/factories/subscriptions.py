"""Organizations, plans and subscriptions."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from subscriptions.models import Organization, Plan, Subscription, SubscriptionStatus


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

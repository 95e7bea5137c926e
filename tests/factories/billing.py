"""Metrics, prices, usage aggregates, invoices."""

from __future__ import annotations

from datetime import date

import factory
from django.utils import timezone

from billing.models import (
    BillableMetric,
    Invoice,
    InvoiceStatus,
    PlanMetricPrice,
    UsageAggregate,
)
from tests.factories.subscriptions import OrganizationFactory, PlanFactory


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

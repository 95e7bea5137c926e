"""factory-boy factories, a module per app; every factory is importable from here."""

from tests.factories.audit import AuditTrailFactory
from tests.factories.billing import (
    BillableMetricFactory,
    InvoiceFactory,
    PlanMetricPriceFactory,
    UsageAggregateFactory,
)
from tests.factories.jobs import ApiKeyFactory, JobRunFactory, UserFactory
from tests.factories.notifications import OutboundEmailFactory, SuppressedAddressFactory
from tests.factories.payments import PaymentFactory, PaymentProviderConfigFactory
from tests.factories.subscriptions import OrganizationFactory, PlanFactory, SubscriptionFactory

__all__ = [
    "ApiKeyFactory",
    "AuditTrailFactory",
    "BillableMetricFactory",
    "InvoiceFactory",
    "JobRunFactory",
    "OrganizationFactory",
    "OutboundEmailFactory",
    "PaymentFactory",
    "PaymentProviderConfigFactory",
    "PlanFactory",
    "PlanMetricPriceFactory",
    "SubscriptionFactory",
    "SuppressedAddressFactory",
    "UsageAggregateFactory",
    "UserFactory",
]

"""Audit records."""

from __future__ import annotations

import factory

from audit.models import AuditTrail


class AuditTrailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditTrail

    actor = "user:tester"
    action = "subscription.updated"
    object_type = "subscriptions.subscription"
    object_id = factory.Sequence(str)

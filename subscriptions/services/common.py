"""What the subscription services share: the status values they write and
the audit record's object type."""

from __future__ import annotations

from typing import Any

from subscriptions.models import SubscriptionStatus

EXPIRED = SubscriptionStatus.EXPIRED.value
SUSPENDED = SubscriptionStatus.SUSPENDED.value
ACTIVE = SubscriptionStatus.ACTIVE.value
PAST_DUE = SubscriptionStatus.PAST_DUE.value
CANCELED = SubscriptionStatus.CANCELED.value
OBJECT_TYPE = "subscriptions.subscription"
PER_TENANT_IN_SUMMARY = 50


def changes_for(*, before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Audit `changes` as {field: [before, after]}, compact because a job may
    write hundreds of thousands of them."""
    return {name: [before.get(name), value] for name, value in after.items()}

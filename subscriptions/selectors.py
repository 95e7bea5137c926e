"""Reads that need more than a one-line queryset."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet

from subscriptions.models import RUNNING_STATUSES, Organization, Subscription, SubscriptionStatus


def organization_by_key(key: str) -> Organization:
    """The platform's tenant resolver (jobs.tenants): an organization by its key."""
    try:
        return Organization.objects.get(key=key)
    except Organization.DoesNotExist:
        raise LookupError(f"no organization with key {key!r}") from None


def search_organizations(term: str, limit: int) -> list[tuple[str, str]]:
    """The admin's tenant picker (jobs.tenants): key prefix (indexed) or name prefix, bounded."""
    found = Organization.objects.order_by("key")
    if term:
        found = found.filter(Q(key__startswith=term.lower()) | Q(name__istartswith=term))
    return [(key, f"{name} ({key})") for key, name in found.values_list("key", "name")[:limit]]


def tenant_keys(organization_ids: Iterable[int]) -> dict[int, str]:
    """{organization id: tenant key}: what audit records and run summaries name
    a tenant by."""
    return dict(Organization.objects.filter(id__in=set(organization_ids)).values_list("id", "key"))


def due_for_expiry(*, slot: datetime, organization_id: int | None = None) -> Q:
    """Running subscriptions whose period ended at or before the slot."""
    q = Q(status__in=RUNNING_STATUSES, current_period_end__lte=slot)
    return q & Q(organization_id=organization_id) if organization_id else q


def due_for_suspension(*, grace_cutoff: datetime, organization_id: int | None = None) -> Q:
    """Expired subscriptions whose grace period is over."""
    q = Q(status=SubscriptionStatus.EXPIRED, expired_at__lte=grace_cutoff)
    return q & Q(organization_id=organization_id) if organization_id else q


@dataclass(frozen=True)
class TenantExpiryCounts:
    organization_id: int
    key: str
    would_expire: int
    would_suspend: int
    running: int  # trialing + active + past_due now

    @property
    def expire_percent(self) -> float:
        return 100.0 * self.would_expire / self.running if self.running else 0.0


def expiry_counts(
    *, slot: datetime, grace_cutoff: datetime, organization_id: int | None = None
) -> list[TenantExpiryCounts]:
    """Per tenant: what an expiry run at `slot` would change, beside its running
    subscriptions (the guard's denominator). Tenants with nothing due are left out."""
    rows: QuerySet = Subscription.objects.filter(
        status__in=[*RUNNING_STATUSES, SubscriptionStatus.EXPIRED]
    )
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    expire = due_for_expiry(slot=slot)
    suspend = due_for_suspension(grace_cutoff=grace_cutoff)
    grouped = (
        rows.values("organization_id", "organization__key")
        .annotate(
            would_expire=Count("id", filter=expire),
            would_suspend=Count("id", filter=suspend),
            running=Count("id", filter=Q(status__in=RUNNING_STATUSES)),
        )
        .filter(Q(would_expire__gt=0) | Q(would_suspend__gt=0))
        .order_by("organization_id")
    )
    return [
        TenantExpiryCounts(
            organization_id=row["organization_id"],
            key=row["organization__key"],
            would_expire=row["would_expire"],
            would_suspend=row["would_suspend"],
            running=row["running"],
        )
        for row in grouped
    ]


# --- the renewal sync with Stripe (payments.subscription_sync) ---------------------


@dataclass(frozen=True)
class LocalSubscription:
    id: int
    organization_id: int
    stripe_subscription_id: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    auto_renew: bool
    cancel_at_period_end: bool


RUNNING_VALUES = tuple(s.value for s in RUNNING_STATUSES)
SYNCABLE_STATUSES = (*RUNNING_STATUSES, SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELED)
_SYNC_FIELDS = (
    "id",
    "organization_id",
    "stripe_subscription_id",
    "status",
    "current_period_start",
    "current_period_end",
    "auto_renew",
    "cancel_at_period_end",
)


def subscriptions_to_sync(
    *, slot: datetime, days: int, organization_id: int | None = None, limit: int
) -> list[LocalSubscription]:
    """Linked subscriptions whose period ends within `days` of `slot`, either
    way (renewing soon, or just ended and not yet renewed here), of tenants
    whose Stripe gateway is enabled."""
    rows = Subscription.objects.filter(
        status__in=SYNCABLE_STATUSES,
        current_period_end__gt=slot - timedelta(days=days),
        current_period_end__lte=slot + timedelta(days=days),
        organization__payment_provider__enabled=True,
    ).exclude(stripe_subscription_id="")
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    return [
        LocalSubscription(*row)
        for row in rows.order_by("current_period_end", "id").values_list(*_SYNC_FIELDS)[:limit]
    ]


def subscription_to_sync(
    *, organization_id: int, stripe_subscription_id: str
) -> LocalSubscription | None:
    """The one subscription a Stripe webhook names, if it is one the sync would read."""
    row = (
        Subscription.objects.filter(
            organization_id=organization_id,
            stripe_subscription_id=stripe_subscription_id,
            status__in=SYNCABLE_STATUSES,
        )
        .values_list(*_SYNC_FIELDS)
        .first()
    )
    return LocalSubscription(*row) if row else None

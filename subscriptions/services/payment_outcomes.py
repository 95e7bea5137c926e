"""What a reconciled payment does to its subscriptions (called by `payments.reconcile`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import transaction

from audit.services import BulkChange, record_bulk_audit
from core.sql import update_from_values
from subscriptions.models import Subscription, SubscriptionStatus
from subscriptions.selectors import tenant_keys
from subscriptions.services.common import ACTIVE, OBJECT_TYPE, PAST_DUE

# A paid subscription in these states is the local side's decision: left as is.
NOT_RENEWED_ON_PAYMENT = (SubscriptionStatus.SUSPENDED.value, SubscriptionStatus.CANCELED.value)


@dataclass
class PaymentOutcomeResult:
    changed: int = 0
    skipped: int = 0
    audit_records: int = 0


def _next_period_end(end: datetime, interval: str) -> datetime:

    return end + (relativedelta(years=1) if interval == "year" else relativedelta(months=1))


def _audit_groups(
    groups: dict[tuple[int, str], list[int]],
    *,
    action: str,
    new_status: str,
    extra: dict[str, Any],
    actor: str,
    job_run_id: int | None,
    now: datetime,
) -> int:
    """One audit row per organization and old status, listing the subscriptions."""
    if not groups:
        return 0
    keys = tenant_keys(org for org, _ in groups)
    return record_bulk_audit(
        (
            BulkChange(
                tenant=keys.get(org, ""),
                action=action,
                object_type=OBJECT_TYPE,
                object_ids=ids,
                changes={"status": [old, new_status], **extra},
            )
            for (org, old), ids in sorted(groups.items())
        ),
        actor=actor,
        job_run_id=job_run_id,
        at=now,
    )


def renew_paid_subscriptions(
    *,
    subscription_ids: list[int],
    now: datetime,
    actor: str,
    job_run_id: int | None = None,
    renewal_days: int | None = None,
) -> PaymentOutcomeResult:
    """A payment for these subscriptions succeeded: make them active again
    (past_due, expired, trialing -> active) and, when their period ends within
    `renewal_days` (or has ended), advance it by one plan interval.

    Suspended and canceled ones are left alone (counted as skipped). Two
    statements: one read, one UPDATE ... FROM of every row's new period, guarded
    by the status read, so a concurrent change is never overwritten.
    """
    days = settings.SUBSCRIPTION_RENEWAL_DAYS_BEFORE if renewal_days is None else renewal_days
    horizon = now + timedelta(days=days)
    result = PaymentOutcomeResult()
    rows = []
    groups: dict[tuple[int, str], list[int]] = {}
    for sub in Subscription.objects.filter(id__in=set(subscription_ids)).values(
        "id",
        "organization_id",
        "status",
        "current_period_start",
        "current_period_end",
        "plan__interval",
    ):
        if sub["status"] in NOT_RENEWED_ON_PAYMENT:
            result.skipped += 1
            continue
        start, end = sub["current_period_start"], sub["current_period_end"]
        if end <= horizon:
            start, end = end, _next_period_end(end, sub["plan__interval"])
        rows.append((sub["id"], sub["status"], start, end))
        groups.setdefault((sub["organization_id"], sub["status"]), []).append(sub["id"])
    changed = update_from_values(
        table=Subscription._meta.db_table,
        columns=[
            ("id", "bigint"),
            ("old_status", "text"),
            ("start", "timestamptz"),
            ("finish", "timestamptz"),
        ],
        rows=rows,
        set_sql=(
            "status = %(active)s, expired_at = NULL, current_period_start = v.start, "
            "current_period_end = v.finish, updated_at = %(now)s"
        ),
        where_sql="t.status = v.old_status",
        params={"active": ACTIVE, "now": now},
        returning="id",
    )
    done = {row[0] for row in changed}
    result.changed = len(done)
    result.skipped += len(rows) - len(done)
    groups = {k: [i for i in ids if i in done] for k, ids in groups.items()}
    result.audit_records = _audit_groups(
        {k: ids for k, ids in groups.items() if ids},
        action="subscription.renewed",
        new_status=ACTIVE,
        extra={"reason": "payment succeeded"},
        actor=actor,
        job_run_id=job_run_id,
        now=now,
    )
    return result


def mark_subscriptions_past_due(
    *,
    subscription_ids: list[int],
    now: datetime,
    actor: str,
    job_run_id: int | None = None,
) -> PaymentOutcomeResult:
    """A payment for these subscriptions failed: active or trialing ones become
    past_due (others are further along already and are left alone)."""
    result = PaymentOutcomeResult()
    ids = set(subscription_ids)
    candidates = Subscription.objects.filter(
        id__in=ids, status__in=[SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING]
    )
    groups: dict[tuple[int, str], list[int]] = {}
    with transaction.atomic():
        for sub in candidates.select_for_update().values("id", "organization_id", "status"):
            groups.setdefault((sub["organization_id"], sub["status"]), []).append(sub["id"])
        moved = [i for group in groups.values() for i in group]
        result.changed = Subscription.objects.filter(id__in=moved).update(
            status=PAST_DUE, updated_at=now
        )
        result.skipped = len(ids) - result.changed
        result.audit_records = _audit_groups(
            groups,
            action="subscription.past_due",
            new_status=PAST_DUE,
            extra={"reason": "payment failed"},
            actor=actor,
            job_run_id=job_run_id,
            now=now,
        )
    return result

"""Writes of the renewal sync with Stripe (`payments.subscription_sync` decides).

The rows are this app's, so the guarded write-back and its audit records
live here; payments reads Stripe and hands over each subscription's new
state as a `SyncDecision`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from audit.services import BulkChange, record_bulk_audit
from core.sql import update_from_values
from subscriptions.models import (
    ReconciliationStatus,
    Subscription,
    SubscriptionStatus,
)
from subscriptions.selectors import LocalSubscription, tenant_keys
from subscriptions.services.common import EXPIRED, OBJECT_TYPE


class SyncIssue(enum.Enum):
    """Why a decision keeps the local row where Stripe says otherwise (the
    `error` text says it to people)."""

    CANCELLATION_NOT_SENT = "cancellation_not_sent"


@dataclass
class SyncDecision:
    """What one subscription's row becomes. `push_cancellation`: the local
    cancellation must be sent to Stripe first."""

    local: LocalSubscription
    status: str
    current_period_start: datetime
    current_period_end: datetime
    auto_renew: bool
    cancel_at_period_end: bool
    reconciliation_status: str
    error: str = ""
    push_cancellation: bool = False
    issue: SyncIssue | None = None

    @property
    def changed_fields(self) -> list[str]:
        old = self.local
        return [
            name
            for name in (
                "status",
                "current_period_start",
                "current_period_end",
                "auto_renew",
                "cancel_at_period_end",
            )
            if getattr(old, name) != getattr(self, name)
        ]


@dataclass
class SyncWriteResult:
    written: int = 0
    changed: int = 0
    audit_records: int = 0


def write_sync(
    *, decisions: list[SyncDecision], now: datetime, actor: str, job_run_id: int | None = None
) -> SyncWriteResult:
    """One UPDATE ... FROM for the batch, guarded by the values read (a row
    changed meanwhile is left for the next run), and bulk audit rows for the
    rows whose status, period or renewal changed."""
    rows = [
        (
            d.local.id,
            d.local.status,
            d.local.current_period_end,
            d.local.auto_renew,
            d.status,
            d.current_period_start,
            d.current_period_end,
            d.auto_renew,
            d.cancel_at_period_end,
            str(d.reconciliation_status),
            d.error[:2000],
            bool(d.changed_fields),
        )
        for d in decisions
    ]
    result = SyncWriteResult()
    with transaction.atomic():
        written = update_from_values(
            table=Subscription._meta.db_table,
            columns=[
                ("id", "bigint"),
                ("old_status", "text"),
                ("old_end", "timestamptz"),
                ("old_renew", "boolean"),
                ("status", "text"),
                ("start", "timestamptz"),
                ("finish", "timestamptz"),
                ("renew", "boolean"),
                ("cancel_at_end", "boolean"),
                ("recon", "text"),
                ("error", "text"),
                ("changed", "boolean"),
            ],
            rows=rows,
            set_sql=(
                "status = v.status, current_period_start = v.start, "
                "current_period_end = v.finish, auto_renew = v.renew, "
                "cancel_at_period_end = v.cancel_at_end, "
                "expired_at = CASE WHEN v.status = %(expired)s THEN t.expired_at ELSE NULL END, "
                "canceled_at = CASE WHEN v.status = %(canceled)s "
                "THEN COALESCE(t.canceled_at, %(now)s) ELSE t.canceled_at END, "
                "reconciliation_status = v.recon, reconciliation_error = v.error, "
                "last_stripe_sync_at = %(now)s, "
                "updated_at = CASE WHEN v.changed THEN %(now)s ELSE t.updated_at END"
            ),
            where_sql=(
                "t.status = v.old_status AND t.current_period_end = v.old_end "
                "AND t.auto_renew = v.old_renew"
            ),
            params={
                "expired": EXPIRED,
                "canceled": SubscriptionStatus.CANCELED.value,
                "now": now,
            },
            returning="id",
        )
        done = {row[0] for row in written}
        result.written = len(done)
        groups: dict[tuple[int, str, str, tuple[str, ...]], list[int]] = {}
        for d in decisions:
            fields = tuple(d.changed_fields)
            if d.local.id in done and fields:
                key = (d.local.organization_id, d.local.status, d.status, fields)
                groups.setdefault(key, []).append(d.local.id)
        result.changed = sum(len(ids) for ids in groups.values())
        if groups:
            keys = tenant_keys(g[0] for g in groups)
            result.audit_records = record_bulk_audit(
                (
                    BulkChange(
                        tenant=keys.get(org, ""),
                        action="subscription.stripe_synced",
                        object_type=OBJECT_TYPE,
                        object_ids=ids,
                        changes={"status": [old, new], "fields": list(fields)},
                    )
                    for (org, old, new, fields), ids in sorted(groups.items())
                ),
                actor=actor,
                job_run_id=job_run_id,
                at=now,
            )
    return result


def mark_sync_errors(*, errors: dict[int, str], now: datetime) -> int:
    """Record on each row why it could not be synced."""
    return len(
        update_from_values(
            table=Subscription._meta.db_table,
            columns=[("id", "bigint"), ("error", "text")],
            rows=[(sub_id, message[:2000]) for sub_id, message in errors.items()],
            set_sql=(
                "reconciliation_status = %(error_status)s, reconciliation_error = v.error, "
                "last_stripe_sync_at = %(now)s"
            ),
            params={"error_status": ReconciliationStatus.ERROR.value, "now": now},
            returning="id",
        )
    )

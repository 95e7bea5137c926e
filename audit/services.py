"""Writes to the audit trail.

Single changes call `record_audit`. Jobs that change many rows write bulk
records, one per tenant and identical before/after, listing every object
changed: `record_bulk_audit` from Python, or in the same SQL statement as the
change (see `subscriptions.services`) with `audit_table()` and the column
list here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from audit.models import AuditTrail

# Columns a bulk INSERT ... SELECT fills, in this order.
BULK_COLUMNS = (
    "at",
    "actor",
    "tenant",
    "action",
    "object_type",
    "object_id",
    "object_ids",
    "changes",
    "job_run_id",
    "request_id",
)


def audit_table() -> str:
    return connection.ops.quote_name(AuditTrail._meta.db_table)


def job_actor(*, job: str, run_id: int | None) -> str:
    """How a job run signs its audit rows: "job:subscriptions.expire#42"."""
    return f"job:{job}#{run_id}" if run_id else f"job:{job}"


def record_audit(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: Any,
    changes: Mapping[str, Any] | None = None,
    tenant: str = "",
    job_run_id: int | None = None,
    request_id: str = "",
    at: datetime | None = None,
) -> AuditTrail:
    return AuditTrail.objects.create(
        at=at or timezone.now(),
        actor=actor,
        tenant=tenant,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=dict(changes or {}),
        job_run_id=job_run_id,
        request_id=request_id,
    )


@dataclass(frozen=True)
class BulkChange:
    """The same change (`changes`, e.g. {"status": [old, new]}) to many objects of one tenant."""

    tenant: str
    action: str
    object_type: str
    object_ids: Sequence[Any]
    changes: Mapping[str, Any]


def record_bulk_audit(
    changes: Iterable[BulkChange],
    *,
    actor: str,
    job_run_id: int | None = None,
    at: datetime | None = None,
) -> int:
    """One bulk record per change, all in one INSERT; returns how many.
    `audit.selectors.audit_of_object` finds an object in them."""
    at = at or timezone.now()
    records = [
        AuditTrail(
            at=at,
            actor=actor,
            tenant=change.tenant,
            action=change.action,
            object_type=change.object_type,
            object_ids=sorted(change.object_ids),
            changes=dict(change.changes),
            job_run_id=job_run_id,
        )
        for change in changes
    ]
    AuditTrail.objects.bulk_create(records)
    return len(records)

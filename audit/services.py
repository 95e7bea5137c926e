"""The one writer of the audit trail: every app records through these.

Single changes call `record_audit`. Jobs that change many rows write bulk
records, one per tenant and identical before/after, listing every object
changed: `record_bulk_audit` from Python, or set-based in the same SQL
statement as the change, feeding a SELECT of `BULK_COLUMNS` to
`bulk_insert_sql` (inside a data-modifying CTE on PostgreSQL) or to
`record_bulk_audit_from_select` (see `subscriptions.services.expiry`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from audit.models import AuditTrail
from jobs.context import run_actor

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


# How a job run signs its audit rows ("job:subscriptions.expire#42"); a job
# reads it as `ctx.actor`.
job_actor = run_actor


def bulk_insert_sql(select_sql: str) -> str:
    """`INSERT INTO <the trail> (<BULK_COLUMNS>) <select_sql>`: a set-based write
    of audit records whose SELECT yields one row per record, columns in
    BULK_COLUMNS' order. The trail's table and columns stay this app's."""
    return f"INSERT INTO {audit_table()} ({', '.join(BULK_COLUMNS)}) {select_sql}"


def record_bulk_audit_from_select(select_sql: str, params: Mapping[str, Any]) -> int:
    """Run `bulk_insert_sql(select_sql)` with `params`; returns the records written."""
    with connection.cursor() as cursor:
        cursor.execute(bulk_insert_sql(select_sql), params)
        return cursor.rowcount


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

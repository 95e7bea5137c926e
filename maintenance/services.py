"""Writes to the audit trail.

Single changes call `record_audit`; jobs that change many rows write their
audit rows in the same SQL statement as the change (see
`subscriptions.services`), using `audit_table()` and the column list here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from maintenance.models import AuditTrail

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

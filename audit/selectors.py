"""Reads of the audit trail, shaped to use its indexes."""

from __future__ import annotations

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from audit.models import AuditTrail


def audit_of_object(
    *, object_type: str, object_id: int | str, tenant: str | None = None
) -> QuerySet[AuditTrail]:
    """Everything that happened to one object, newest first: its single-change
    records (object_id index) and the bulk records that list it. Give the
    object's tenant so bulk records are found through the tenant index and
    only that tenant's records are searched for the id."""
    bulk = Q(object_id="", object_type=object_type)
    if tenant is not None:
        bulk &= Q(tenant=tenant)
    if connection.vendor == "postgresql":
        bulk &= Q(object_ids__contains=[object_id])
    else:  # SQLite's JSON has no containment lookup in Django
        table = AuditTrail._meta.db_table
        bulk &= Q(
            pk__in=RawSQL(
                f"SELECT a.id FROM {table} a, json_each(a.object_ids) j WHERE j.value = %s",
                [object_id],
            )
        )
    single = Q(object_id=str(object_id), object_type=object_type)
    return AuditTrail.objects.filter(single | bulk)


def recorded_actions() -> list[str]:
    """Every action the trail holds, sorted: a walk of the action index that
    jumps from one action to the next (a probe per action), not a DISTINCT
    over millions of records."""
    table = connection.ops.quote_name(AuditTrail._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH RECURSIVE seen(action) AS (
                    SELECT min(action) FROM {table}
                    UNION ALL
                    SELECT (SELECT min(action) FROM {table} WHERE action > seen.action)
                    FROM seen WHERE seen.action IS NOT NULL)
                SELECT action FROM seen WHERE action IS NOT NULL"""
        )
        return [action for (action,) in cursor.fetchall()]

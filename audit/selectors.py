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

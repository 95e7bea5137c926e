"""A paginator for the admin's big tables: no `COUNT(*)` of a whole table.

Unfiltered, the count is PostgreSQL's own estimate (`pg_class.reltuples`,
kept by autovacuum and ANALYZE), which is free; filtered, the count is
capped (`SELECT COUNT(*) FROM (... LIMIT n)`), so a broad filter over
millions of rows costs a bounded scan. Elsewhere (SQLite) it counts.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

COUNT_CAP = 10_000  # a filtered count stops here ("10,000+" pages away is far enough)
ESTIMATE_FROM = 10_000  # below this an estimate is not worth its inexactness


def estimated_rows(table: str, using: str = "default") -> int | None:
    """PostgreSQL's estimate of the rows in `table`, or None where there is none."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:  # -1: never analyzed
        return None
    return int(row[0])


class EstimatedCountPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is None:
            return super().count
        using = queryset.db
        if connections[using].vendor != "postgresql":
            return super().count
        if not query.where:
            estimate = estimated_rows(queryset.model._meta.db_table, using)
            if estimate is not None and estimate >= ESTIMATE_FROM:
                return estimate
        return queryset.order_by()[:COUNT_CAP].count()

"""Index types the apps share."""

from __future__ import annotations

from typing import Any

from django.db import models


class BrinOnPostgresIndex(models.Index):
    """A BRIN index on PostgreSQL, a plain B-tree elsewhere.

    For an append-only table whose column grows with the row order (the
    audit trail's `at`, usage events' `occurred_at`): BRIN stores a min/max
    per block range, so it costs almost nothing to maintain on every insert
    (the bulk-audited expiry job stays near raw SQL) yet lets a purge and its
    dry-run count find old rows without scanning the table. SQLite has no
    BRIN; a B-tree serves.
    """

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if schema_editor.connection.vendor == "postgresql":
            using = " USING brin"
        return super().create_sql(model, schema_editor, using=using, **kwargs)

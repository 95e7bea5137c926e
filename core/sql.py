"""Set-based write-back: UPDATE many rows, each with its own values, in one statement.

PostgreSQL joins the target to `unnest()` of typed arrays (one parameter per
column, however many rows); SQLite to a `VALUES` list (3.33+ has UPDATE ...
FROM), in chunks that stay under its bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Func, TextField

SQLITE_ROWS_PER_STATEMENT = 2_000
_PG_TYPES = {
    "bigint": "bigint[]",
    "text": "text[]",
    "timestamptz": "timestamptz[]",
    "boolean": "boolean[]",
}


def update_from_values(
    *,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    set_sql: str,
    where_sql: str = "",
    params: dict[str, Any] | None = None,
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """UPDATE `table` AS t SET `set_sql` FROM <rows> AS v(columns) WHERE t.id = v.id
    [AND `where_sql`] [RETURNING `returning`, bare column names of the target].

    `columns`: (name, type) with type bigint, text, timestamptz or boolean; the first is
    the id. `set_sql`/`where_sql` refer to `t.` and `v.` and may hold named
    `%(name)s` parameters from `params`. Returns the RETURNING rows.
    """
    if not rows:
        return []
    params = dict(params or {})
    names = ", ".join(name for name, _ in columns)
    where = f"t.id = v.{columns[0][0]}" + (f" AND ({where_sql})" if where_sql else "")
    # SQLite's RETURNING takes the target's bare column names; PostgreSQL's
    # would find `id` ambiguous beside v.id.
    if returning and connection.vendor == "postgresql":
        returning = ", ".join(f"t.{name.strip()}" for name in returning.split(","))
    tail = f" RETURNING {returning}" if returning else ""
    table_sql = connection.ops.quote_name(table)
    out: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(
                f"%(_col{i})s::{_PG_TYPES[kind]}" for i, (_, kind) in enumerate(columns)
            )
            for i in range(len(columns)):
                params[f"_col{i}"] = [row[i] for row in rows]
            cursor.execute(
                f"UPDATE {table_sql} AS t SET {set_sql} "
                f"FROM unnest({arrays}) AS v({names}) WHERE {where}{tail}",
                params,
            )
            return list(cursor.fetchall()) if returning else []
        adapt = connection.ops.adapt_datetimefield_value
        for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
            chunk_params = dict(params)
            tuples = []
            for r, row in enumerate(chunk):
                holes = []
                for c, value in enumerate(row):
                    key = f"_v{r}_{c}"
                    chunk_params[key] = adapt(value) if isinstance(value, datetime) else value
                    holes.append(f"%({key})s")
                tuples.append(f"({', '.join(holes)})")
            # SQLite names VALUES columns column1, column2...: rename in a subquery.
            aliases = ", ".join(f"column{i + 1} AS {name}" for i, (name, _) in enumerate(columns))
            cursor.execute(
                f"UPDATE {table_sql} AS t SET {set_sql} "
                f"FROM (SELECT {aliases} FROM (VALUES {', '.join(tuples)})) AS v "
                f"WHERE {where}{tail}",
                _adapt_named(chunk_params),
            )
            if returning:
                out.extend(cursor.fetchall())
    return out


def _adapt_named(params: dict[str, Any]) -> dict[str, Any]:
    adapt = connection.ops.adapt_datetimefield_value
    return {k: adapt(v) if isinstance(v, datetime) else v for k, v in params.items()}


class UtcText(Func):
    """A timestamp column as UTC text, computed by the database: "YYYY-MM-DD HH:MM"
    (`seconds=False`) or "YYYY-MM-DDTHH:MM:SS" (`seconds=True`, for keys).
    PostgreSQL formats it; SQLite stores UTC ISO text, so a prefix is it."""

    output_field = TextField()

    def __init__(self, expression: Any, *, seconds: bool = False) -> None:
        super().__init__(expression)
        self.seconds = seconds

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        sql, params = compiler.compile(self.source_expressions[0])
        fmt = 'YYYY-MM-DD"T"HH24:MI:SS' if self.seconds else "YYYY-MM-DD HH24:MI"
        return f"to_char({sql} AT TIME ZONE 'UTC', '{fmt}')", list(params)

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        sql, params = compiler.compile(self.source_expressions[0])
        if self.seconds:
            return f"replace(substr({sql}, 1, 19), ' ', 'T')", list(params)
        return f"substr({sql}, 1, 16)", list(params)

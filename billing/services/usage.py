"""Usage writes: recording raw events, and rolling them up into hourly aggregates.

An hour is aggregated by one `INSERT ... SELECT ... GROUP BY ... ON CONFLICT
DO UPDATE` over all active organizations, so rerunning an hour rebuilds the
same rows (a row whose figures did not change is not rewritten). How each
aggregation type becomes an hour's `total`:

* sum: the sum of the quantities;   * count: the number of events;
* max: the largest quantity;        * unique_count: distinct `value_key`s in the hour.

`event_count` is always the number of events. Hourly unique counts do not add
up over a period: billing.selectors.usage_totals counts those from the events.
Events whose metric has no BillableMetric add up as a sum.

Late events: recording and aggregating an hour are serialized (advisory locks
on PostgreSQL), so an event either is in its hour's aggregate or, recorded
after the hour was aggregated, marks the hour late (UsageLateHour); the next
hourly run rebuilds it. Events are stamped `received_at` after the lock and
aggregates `updated_at` after theirs, so "received before the aggregate was
updated" means "counted in it" (what maintenance.cleanup relies on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from billing.models import AggregationType, UsageAggregate, UsageEvent, UsageLateHour
from billing.selectors import metric_aggregations
from subscriptions.models import Organization, OrganizationStatus

INSERT_BATCH = 1_000  # events per INSERT statement (7 parameters each)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class UsageEventIn:
    """One event as the product reports it."""

    organization_id: int
    metric: str
    occurred_at: datetime
    idempotency_key: str
    quantity: int = 1
    value_key: str = ""


def _as_event(raw: UsageEventIn | Mapping[str, Any]) -> UsageEventIn:
    event = raw if isinstance(raw, UsageEventIn) else UsageEventIn(**raw)
    if not event.idempotency_key:
        raise ValueError(f"usage event of {event.metric!r} has no idempotency_key")
    if len(event.idempotency_key) > 128 or len(event.value_key) > 128:
        raise ValueError(f"idempotency_key and value_key are at most 128 characters: {event!r}")
    if event.occurred_at.tzinfo is None:
        raise ValueError(f"occurred_at must be timezone-aware: {event!r}")
    if isinstance(event.quantity, bool) or not isinstance(event.quantity, int):
        raise ValueError(f"quantity must be an integer: {event!r}")
    return event


def record_usage_events(*, events: Iterable[UsageEventIn | Mapping[str, Any]]) -> int:
    """Store events; returns how many were new.

    A resent event (same organization and idempotency key) is dropped by the
    database (`ON CONFLICT DO NOTHING`), so retries never count twice. Events
    name a known BillableMetric; anything malformed is refused before anything
    is written (ValueError naming it).
    """
    batch = [_as_event(e) for e in events]
    if not batch:
        return 0
    known = metric_aggregations()
    unknown = sorted({e.metric for e in batch} - set(known))
    if unknown:
        raise ValueError(f"unknown metric(s): {', '.join(unknown)}")
    for e in batch:
        if known[e.metric] == AggregationType.UNIQUE_COUNT and not e.value_key:
            raise ValueError(
                f"{e.metric} counts distinct values: event {e.idempotency_key!r} needs a value_key"
            )
    table = UsageEvent._meta.db_table
    columns = "organization_id, metric, quantity, value_key, occurred_at, idempotency_key, "
    columns += "received_at"
    ops = connection.ops
    created = 0
    new_hours: set[datetime] = set()
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_hours(cursor, {floor_hour(e.occurred_at) for e in batch}, shared=True)
        now = ops.adapt_datetimefield_value(timezone.now())  # after the locks: see aggregate_hour
        for i in range(0, len(batch), INSERT_BATCH):
            chunk = batch[i : i + INSERT_BATCH]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list[Any] = []
            for e in chunk:
                params += [
                    e.organization_id,
                    e.metric,
                    e.quantity,
                    e.value_key,
                    ops.adapt_datetimefield_value(e.occurred_at),
                    e.idempotency_key,
                    now,
                ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values} "
                "ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING occurred_at",
                params,
            )
            inserted = cursor.fetchall()
            created += len(inserted)
            new_hours |= {floor_hour(_as_datetime(at)) for (at,) in inserted}
        _mark_late_hours(cursor, new_hours)
    return created


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


# Hours are serialized against their aggregation with advisory locks on
# PostgreSQL (SQLite has one writer at a time, so it needs none): recording
# takes an hour's lock shared, aggregating takes it exclusive. So an event is
# either committed before its hour's aggregation reads (and counted), or
# recorded after it committed (and its hour marked late, to be rebuilt).
LOCK_NAMESPACE = 0x55534147  # "USAG"


def _lock_hours(cursor: Any, hours: set[datetime], *, shared: bool) -> None:
    if connection.vendor != "postgresql" or not hours:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    for hour in sorted(hours):
        cursor.execute(
            f"SELECT {function}(%s, %s)", [LOCK_NAMESPACE, int(hour.timestamp()) // 3600]
        )


def _mark_late_hours(cursor: Any, hours: set[datetime]) -> None:
    """Hours that got new events after they were aggregated are marked late."""
    if not hours:
        return
    aggregated = set(
        UsageAggregate.objects.filter(hour__in=sorted(hours))
        .values_list("hour", flat=True)
        .distinct()
    )
    if aggregated:
        UsageLateHour.objects.bulk_create(
            [UsageLateHour(hour=hour) for hour in sorted(aggregated)], ignore_conflicts=True
        )


# --- hourly aggregation -----------------------------------------------------------


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(first: datetime, last: datetime) -> list[datetime]:
    """Hour starts from `first` to `last`, both included."""
    hours, at = [], floor_hour(first)
    while at <= last:
        hours.append(at)
        at += HOUR
    return hours


def _in_list(codes: list[str], params: dict[str, Any], prefix: str) -> str:
    names = []
    for i, code in enumerate(codes):
        params[f"{prefix}{i}"] = code
        names.append(f"%({prefix}{i})s")
    return ", ".join(names)


def _grouped_sql(*, organization_id: int | None, params: dict[str, Any]) -> str:
    """The SELECT of one hour's aggregates: organization_id, metric, total, event_count.

    Two branches, both hash-aggregatable: every type but unique_count in one
    GROUP BY (the type picked per group after aggregating, so no join per
    event), and unique_count as distinct values first (read from
    usageevent_values_idx alone), counted after. Only active organizations,
    joined after aggregating (groups, not events).
    """
    types = metric_aggregations()
    by_type: dict[str, list[str]] = {t.value: [] for t in AggregationType}
    for code, kind in sorted(types.items()):
        by_type[kind].append(code)
    events = UsageEvent._meta.db_table
    where = "e.occurred_at >= %(start)s AND e.occurred_at < %(end)s"
    if organization_id is not None:
        where += " AND e.organization_id = %(org)s"
        params["org"] = organization_id
    unique = by_type[AggregationType.UNIQUE_COUNT]
    whens = ""
    if by_type[AggregationType.MAX]:
        whens += f" WHEN e.metric IN ({_in_list(by_type['max'], params, 'max')})"
        whens += " THEN max(e.quantity)"
    if by_type[AggregationType.COUNT]:
        whens += f" WHEN e.metric IN ({_in_list(by_type['count'], params, 'cnt')})"
        whens += " THEN count(*)"
    total = f"CASE{whens} ELSE sum(e.quantity) END" if whens else "sum(e.quantity)"
    unique_in = _in_list(unique, params, "uq") if unique else ""
    plain_where = f"{where} AND e.metric NOT IN ({unique_in})" if unique else where
    sql = f"""
        SELECT e.organization_id, e.metric, {total} AS total, count(*) AS event_count
        FROM {events} e WHERE {plain_where}
        GROUP BY e.organization_id, e.metric"""
    if unique:
        sql += f"""
        UNION ALL
        SELECT v.organization_id, v.metric, count(*), sum(v.n)
        FROM (SELECT e.organization_id, e.metric, e.value_key, count(*) AS n
              FROM {events} e WHERE {where} AND e.metric IN ({unique_in}) AND e.value_key <> ''
              GROUP BY e.organization_id, e.metric, e.value_key) v
        GROUP BY v.organization_id, v.metric"""
    organizations = Organization._meta.db_table
    params["active"] = OrganizationStatus.ACTIVE.value
    return f"""
        SELECT g.organization_id, g.metric, g.total, g.event_count
        FROM ({sql}) g
        JOIN {organizations} o ON o.id = g.organization_id
        WHERE o.status = %(active)s"""


@dataclass(frozen=True)
class HourResult:
    hour: datetime
    written: int  # aggregate rows inserted or changed (0 in a dry run)
    groups: int | None = None  # dry run: (organization, metric) pairs it would write
    events: int | None = None  # dry run: events they hold


def aggregate_hour(
    *, hour: datetime, organization_id: int | None = None, dry_run: bool = False
) -> HourResult:
    """Rebuild the aggregates of the hour starting at `hour` from its events.

    One statement; a rerun rewrites only rows whose figures changed (late
    events). Dry run: counts the groups and events it would write, writes nothing.
    """
    hour = floor_hour(hour)
    ops = connection.ops
    params: dict[str, Any] = {
        "start": ops.adapt_datetimefield_value(hour),
        "end": ops.adapt_datetimefield_value(hour + HOUR),
        "hour": ops.adapt_datetimefield_value(hour),
    }
    grouped = _grouped_sql(organization_id=organization_id, params=params)
    with transaction.atomic(), connection.cursor() as cursor:
        if not dry_run:
            _lock_hours(cursor, {hour}, shared=False)
        # After the lock: every event received before this stamp is in the hour's
        # aggregate, which is what the cleanup of old events relies on.
        params["now"] = ops.adapt_datetimefield_value(timezone.now())
        if connection.vendor == "postgresql":
            # Room for the hour's groups in memory (no spill to disk); no JIT,
            # whose compile time is a large share of a few-second statement.
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute("SET LOCAL jit = off")
        if dry_run:
            cursor.execute(
                f"SELECT count(*), coalesce(sum(event_count), 0) FROM ({grouped}) x", params
            )
            groups, events = cursor.fetchone()
            return HourResult(hour, 0, int(groups), int(events))
        table = UsageAggregate._meta.db_table
        cursor.execute(
            f"""
            INSERT INTO {table} AS a (organization_id, metric, hour, total, event_count,
                                      updated_at)
            SELECT organization_id, metric, %(hour)s, total, event_count, %(now)s
            FROM ({grouped}) grouped WHERE true
            ON CONFLICT (organization_id, metric, hour) DO UPDATE
                SET total = excluded.total, event_count = excluded.event_count,
                    updated_at = excluded.updated_at
                WHERE a.total <> excluded.total OR a.event_count <> excluded.event_count
            """,
            params,
        )
        written = cursor.rowcount
        if organization_id is None:
            UsageLateHour.objects.filter(hour=hour).delete()
    return HourResult(hour, written)

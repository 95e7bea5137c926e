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

Every full aggregation of an hour is recorded in the UsageHour ledger, so a
period is known complete (every hour aggregated, none late) from one read
(`complete_usage`, which the invoice runs call before they bill). A rebuild of
an hour that was aggregated before bumps a UsageRevision of each organization
whose figures changed, in the same transaction: the invoices use it to find
late usage of months they already billed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.models import (
    AggregationType,
    UsageAggregate,
    UsageEvent,
    UsageHour,
    UsageLateHour,
    UsageRevision,
)
from billing.selectors import metric_aggregations
from subscriptions.models import Organization, OrganizationStatus

INSERT_BATCH = 1_000  # events per INSERT statement
ON_CONFLICT_RETURNING = (
    "ON CONFLICT (organization_id, idempotency_key) DO NOTHING "
    "RETURNING organization_id, idempotency_key, occurred_at"
)
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
    return len(store_usage_events(events=batch))


def store_usage_events(*, events: list[UsageEventIn]) -> set[tuple[int, str]]:
    """Insert validated events (as `record_usage_events` checks them), serialized
    against their hours' aggregation, marking already aggregated hours late;
    returns the (organization id, idempotency key) of the events that were new.

    The one writer of UsageEvent rows: the API's ingestion (billing.services.
    usage_ingest) checks each event itself, so it can answer per event.
    """
    if not events:
        return set()
    table = UsageEvent._meta.db_table
    columns = "organization_id, metric, quantity, value_key, occurred_at, idempotency_key, "
    columns += "received_at"
    ops = connection.ops
    stored: set[tuple[int, str]] = set()
    new_hours: set[datetime] = set()
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_hours(cursor, {floor_hour(e.occurred_at) for e in events}, shared=True)
        now = ops.adapt_datetimefield_value(timezone.now())  # after the locks: see aggregate_hour
        for i in range(0, len(events), INSERT_BATCH):
            chunk = events[i : i + INSERT_BATCH]
            if connection.vendor == "postgresql":
                # One array per column: 7 parameters whatever the batch size,
                # half the cost of a VALUES list of 7,000 (bench ingest_usage).
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) SELECT o, m, q, v, a, k, %s "
                    "FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], "
                    "%s::timestamptz[], %s::text[]) AS u(o, m, q, v, a, k) "
                    f"{ON_CONFLICT_RETURNING}",
                    [
                        now,
                        [e.organization_id for e in chunk],
                        [e.metric for e in chunk],
                        [e.quantity for e in chunk],
                        [e.value_key for e in chunk],
                        [e.occurred_at for e in chunk],
                        [e.idempotency_key for e in chunk],
                    ],
                )
            else:
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
                    f"INSERT INTO {table} ({columns}) VALUES {values} {ON_CONFLICT_RETURNING}",
                    params,
                )
            for org_id, key, at in cursor.fetchall():
                stored.add((org_id, key))
                new_hours.add(floor_hour(_as_datetime(at)))
        _mark_late_hours(cursor, new_hours)
    return stored


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
    """The hours' advisory locks, in hour order (one statement: the function
    scan of the sorted array takes them in its order)."""
    if connection.vendor != "postgresql" or not hours:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    keys = [int(hour.timestamp()) // 3600 for hour in sorted(hours)]
    cursor.execute(
        f"SELECT count({function}(%s, k)) FROM unnest(%s::int[]) AS u(k)",
        [LOCK_NAMESPACE, keys],
    )


def _mark_late_hours(cursor: Any, hours: set[datetime]) -> None:
    """Hours that got new events after they were aggregated are marked late
    (aggregated: in the ledger, or with aggregates of a one-tenant run)."""
    if not hours:
        return
    aggregated = set(
        UsageHour.objects.filter(hour__in=sorted(hours)).values_list("hour", flat=True)
    ) | set(
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


def _grouped_sql(
    *, organization_id: int | None, params: dict[str, Any], types: dict[str, str] | None = None
) -> str:
    """The SELECT of one hour's aggregates: organization_id, metric, total, event_count.

    Two branches, both hash-aggregatable: every type but unique_count in one
    GROUP BY (the type picked per group after aggregating, so no join per
    event), and unique_count as distinct values first (read from
    usageevent_values_idx alone), counted after. Only active organizations,
    joined after aggregating (groups, not events).
    """
    types = metric_aggregations() if types is None else types
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
    revised: int = 0  # organizations whose usage of an already aggregated hour changed


def aggregate_hour(
    *, hour: datetime, organization_id: int | None = None, dry_run: bool = False
) -> HourResult:
    """Rebuild the aggregates of the hour starting at `hour` from its events.

    One statement; a rerun rewrites only rows whose figures changed (late
    events). Dry run: counts the groups and events it would write, writes nothing.
    """
    hour = floor_hour(hour)
    with transaction.atomic(), connection.cursor() as cursor:
        if not dry_run:
            _lock_hours(cursor, {hour}, shared=False)
        rebuilt = not dry_run and UsageHour.objects.filter(hour=hour).exists()
        # After the lock: every event received before this stamp is in the hour's
        # aggregate, which is what the cleanup of old events relies on.
        now = timezone.now()
        result = _aggregate_hour(
            cursor, hour, organization_id, dry_run, metric_aggregations(), rebuilt, now
        )
        if organization_id is None and not dry_run:
            _record_hours([hour], now)
    return result


def aggregate_hours(*, hours: Iterable[datetime]) -> list[HourResult]:
    """Rebuild many hours (all organizations) in one transaction: what
    `complete_usage` does for a period's missing and late hours. The same
    statement per hour as billing.aggregate_usage; locks, the ledger and the
    late marks are written once for all of them."""
    todo = sorted({floor_hour(h) for h in hours})
    if not todo:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_hours(cursor, set(todo), shared=False)
        rebuilt = set(UsageHour.objects.filter(hour__in=todo).values_list("hour", flat=True))
        now = timezone.now()  # after the locks, as in aggregate_hour
        types = metric_aggregations()
        results = [
            _aggregate_hour(cursor, hour, None, False, types, hour in rebuilt, now) for hour in todo
        ]
        _record_hours(todo, now)
    return results


def _record_hours(hours: list[datetime], now: datetime) -> None:
    """The ledger says these hours are aggregated (as of `now`); their late marks go."""
    UsageHour.objects.bulk_create(
        [UsageHour(hour=hour, aggregated_at=now) for hour in hours],
        update_conflicts=True,
        unique_fields=["hour"],
        update_fields=["aggregated_at"],
        batch_size=500,
    )
    UsageLateHour.objects.filter(hour__in=hours).delete()


def _aggregate_hour(
    cursor: Any,
    hour: datetime,
    organization_id: int | None,
    dry_run: bool,
    types: dict[str, str],
    rebuilt: bool,
    now: datetime,
) -> HourResult:
    """One hour's statement, inside the caller's transaction (which holds its lock)."""
    ops = connection.ops
    params: dict[str, Any] = {
        "start": ops.adapt_datetimefield_value(hour),
        "end": ops.adapt_datetimefield_value(hour + HOUR),
        "hour": ops.adapt_datetimefield_value(hour),
        "now": ops.adapt_datetimefield_value(now),
    }
    grouped = _grouped_sql(organization_id=organization_id, params=params, types=types)
    if connection.vendor == "postgresql":
        # Room for the hour's groups in memory (no spill to disk); no JIT,
        # whose compile time is a large share of a few-second statement.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute("SET LOCAL jit = off")
    if dry_run:
        cursor.execute(f"SELECT count(*), coalesce(sum(event_count), 0) FROM ({grouped}) x", params)
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
    revised = _record_revisions(cursor, hour, params, organization_id) if rebuilt and written else 0
    return HourResult(hour, written, revised=revised)


def _record_revisions(
    cursor: Any, hour: datetime, params: dict[str, Any], organization_id: int | None
) -> int:
    """Bump the month's UsageRevision of every organization whose figures of
    this (already aggregated) hour just changed: their `updated_at` is this
    rebuild's stamp. Same transaction as the rebuild, so a reader sees both or
    neither."""
    table = UsageRevision._meta.db_table
    params = {
        **params,
        "month": connection.ops.adapt_datefield_value(hour.date().replace(day=1)),
    }
    only = ""
    if organization_id is not None:
        only = " AND organization_id = %(org)s"
        params["org"] = organization_id
    cursor.execute(
        f"""
        INSERT INTO {table} AS r (organization_id, period_start, version, revised_at)
        SELECT DISTINCT organization_id, %(month)s, 1, %(now)s
        FROM {UsageAggregate._meta.db_table}
        WHERE hour = %(hour)s AND updated_at = %(now)s{only}
        ON CONFLICT (organization_id, period_start) DO UPDATE
            SET version = r.version + 1, revised_at = excluded.revised_at
        """,
        params,
    )
    return cursor.rowcount


# --- a period's usage made complete ----------------------------------------------


class UsageIncomplete(Exception):
    """The period's usage cannot be made complete; nothing may be billed from it."""


@dataclass(frozen=True)
class Completion:
    """What `complete_usage` found and did for a period."""

    start: datetime
    end: datetime
    missing: tuple[datetime, ...]  # hours never aggregated, aggregated now
    late: tuple[datetime, ...]  # hours with late events, rebuilt now
    written: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def summary(self) -> dict[str, Any]:
        done = "would_aggregate" if self.dry_run else "aggregated"
        return {
            "period_hours": int((self.end - self.start) / HOUR),
            f"missing_hours_{done}": len(self.missing),
            f"late_hours_{'would_rebuild' if self.dry_run else 'rebuilt'}": len(self.late),
            "aggregates_written": self.written,
            "seconds": round(self.seconds, 3),
            **({"first_missing": self.missing[0].isoformat()} if self.missing else {}),
            **({"late": [h.isoformat() for h in self.late[:24]]} if self.late else {}),
        }


COMPLETION_PASSES = 3  # events keep arriving; three rounds and it is late usage


def incomplete_hours(*, start: datetime, end: datetime) -> tuple[list[datetime], list[datetime]]:
    """(hours of [start, end) never aggregated, hours marked late): two indexed reads."""
    done = set(
        UsageHour.objects.filter(hour__gte=start, hour__lt=end).values_list("hour", flat=True)
    )
    missing = [h for h in hours_between(start, end - HOUR) if h not in done]
    late = list(
        UsageLateHour.objects.filter(hour__gte=start, hour__lt=end)
        .order_by("hour")
        .values_list("hour", flat=True)
    )
    return missing, late


def complete_usage(
    *, start: datetime, end: datetime, dry_run: bool = False, as_of: datetime | None = None
) -> Completion:
    """Make the usage of [start, end) complete before it is billed: every hour
    aggregated (the ledger says so) and no hour marked late, using the same
    aggregation as billing.aggregate_usage (all organizations).

    An hour never aggregated is aggregated whatever its age (its events were
    never counted, so none were purged); a late hour older than the event
    retention cannot be rebuilt (its counted events may be purged) and makes
    the period incomplete: UsageIncomplete, and nothing may be billed from it.
    The hours are redone in one transaction; events that mark hours late
    meanwhile get up to COMPLETION_PASSES rounds, after that they are late usage.
    `as_of` (default now): when the period must be over, and what the
    retention counts from (a job passes its slot, as billing.aggregate_usage does).
    """
    started = time.perf_counter()
    as_of = as_of or timezone.now()
    if end > as_of:
        raise UsageIncomplete(f"the period ends {end.isoformat()}, which is not over yet")
    missing, late = incomplete_hours(start=start, end=end)
    oldest = as_of - timedelta(days=settings.USAGE_EVENT_RETENTION_DAYS)
    too_old = [h for h in late if h < oldest]
    if too_old:
        raise UsageIncomplete(
            f"{len(too_old)} hour(s) from {too_old[0].isoformat()} received late events but are "
            f"older than the event retention (USAGE_EVENT_RETENTION_DAYS="
            f"{settings.USAGE_EVENT_RETENTION_DAYS}): they cannot be rebuilt"
        )
    if dry_run:
        return Completion(start, end, tuple(missing), tuple(late), dry_run=True)
    first_missing, first_late, written = tuple(missing), tuple(late), 0
    for _ in range(COMPLETION_PASSES):
        todo = sorted(set(missing) | set(late))
        if not todo:
            break
        written += sum(r.written for r in aggregate_hours(hours=todo))
        missing, late = incomplete_hours(start=start, end=end)
    else:
        if missing or late:
            raise UsageIncomplete(
                f"{len(missing) + len(late)} hour(s) of the period still incomplete after "
                f"{COMPLETION_PASSES} passes (events keep arriving for them)"
            )
    return Completion(start, end, first_missing, first_late, written, time.perf_counter() - started)

"""What every workload shares: its result, the output line, timing, fair resets."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection


@dataclass
class Result:
    project: float  # seconds
    baseline_name: str
    baseline: float  # seconds
    extras: dict[str, str] = field(default_factory=dict)
    digits: int = 2  # of the seconds printed (4 for a workload timed in milliseconds)

    @property
    def ratio(self) -> float:
        return self.project / self.baseline if self.baseline else float("inf")


def format_line(name: str, result: Result) -> str:
    d = result.digits
    line = (
        f"bench {name}: project {result.project:.{d}f} s, "
        f"{result.baseline_name} {result.baseline:.{d}f} s, ratio {result.ratio:.2f}"
    )
    return line + "".join(f", {k} {v}" for k, v in result.extras.items())


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


@contextmanager
def timed(label: str, into: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[label] = time.perf_counter() - start
    log(f"{label}: {into[label]:.2f} s")


def settle(*tables: str) -> None:
    """VACUUM ANALYZE the tables and CHECKPOINT, so no phase pays for the
    previous phase's dead rows, stale statistics or dirty buffers."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
        cursor.execute("CHECKPOINT")


def table_names() -> dict[str, str]:
    """The database tables the workloads seed and reset, by short name."""
    from audit.models import AuditTrail
    from billing.models import (
        BillableMetric,
        BilledUsage,
        CreditNote,
        DailyMetrics,
        Invoice,
        InvoiceLine,
        NumberSequence,
        PlanMetricPrice,
        UsageAggregate,
        UsageEvent,
        UsageHour,
        UsageLateHour,
        UsageRevision,
    )
    from jobs.models import JobChunk
    from notifications.models import EmailAttachment, OutboundEmail
    from payments.models import Payment
    from subscriptions.models import Organization, Plan, Subscription

    return {
        "sub": Subscription._meta.db_table,
        "org": Organization._meta.db_table,
        "plan": Plan._meta.db_table,
        "audit": AuditTrail._meta.db_table,
        "outbox": OutboundEmail._meta.db_table,
        "attachment": EmailAttachment._meta.db_table,
        "payment": Payment._meta.db_table,
        "metric": BillableMetric._meta.db_table,
        "price": PlanMetricPrice._meta.db_table,
        "event": UsageEvent._meta.db_table,
        "agg": UsageAggregate._meta.db_table,
        "daily": DailyMetrics._meta.db_table,
        "invoice": Invoice._meta.db_table,
        "line": InvoiceLine._meta.db_table,
        "sequence": NumberSequence._meta.db_table,
        "hour": UsageHour._meta.db_table,
        "late": UsageLateHour._meta.db_table,
        "revision": UsageRevision._meta.db_table,
        "billed": BilledUsage._meta.db_table,
        "credit": CreditNote._meta.db_table,
        "chunk": JobChunk._meta.db_table,
    }


def seed_usage_metrics(cursor: Any) -> None:
    """One billable metric per aggregation type, as the usage workloads meter them."""
    cursor.execute(
        f"""INSERT INTO {table_names()["metric"]} (code, name, aggregation, unit) VALUES
        ('api_calls', 'API calls', 'sum', 'call'), ('requests', 'Requests', 'count', ''),
        ('storage_gb', 'Storage', 'max', 'GB'), ('active_users', 'Users', 'unique_count', '')"""
    )


def seed_organizations(cursor: Any, *, count: int, created_at: datetime) -> None:
    """`count` active organizations org_00001..., each with a billing email."""
    table = table_names()["org"]
    cursor.execute(
        f"""INSERT INTO {table} (key, name, billing_email, status, timezone, created_at)
        SELECT 'org_' || lpad(g::text, 5, '0'), 'Organization ' || g,
               'billing@org' || g || '.example', 'active', 'UTC', %(created)s
        FROM generate_series(1, %(count)s) g""",
        {"created": created_at, "count": count},
    )

"""Billing reads that need more than a one-line queryset.

Usage first (kept at the top: invoices read it); other areas follow below.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max, Sum

from billing.models import (
    AggregationType,
    BillableMetric,
    BilledUsage,
    CreditNote,
    DailyMetrics,
    Invoice,
    InvoiceStatus,
    UsageAggregate,
    UsageEvent,
    UsageLateHour,
    UsageRevision,
)

# --- usage ------------------------------------------------------------------------

IN_CHUNK = 5_000  # organization ids per IN (...) list


def metric_aggregations() -> dict[str, str]:
    """{metric code: aggregation type}. A code with no BillableMetric adds up as a sum."""
    return dict(BillableMetric.objects.values_list("code", "aggregation"))


def _check_on_the_hour(name: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
    if (value.minute, value.second, value.microsecond) != (0, 0, 0):
        raise ValueError(f"{name} must be on the hour (aggregates are hourly), got {value}")


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), IN_CHUNK):
        yield ids[i : i + IN_CHUNK]


def usage_totals(
    *, organization_ids: Iterable[int], start: datetime, end: datetime
) -> dict[tuple[int, str], int]:
    """Each organization's usage per metric over [start, end), as a period total.

    `start` and `end` are on the hour. Hourly aggregates are the source, so
    only hours billing.aggregate_usage has done count (run invoices after the
    period's last hour is aggregated). Per aggregation type:

    * sum, count: the sum of the hourly totals;
    * max: the largest hourly total (the largest quantity in the period);
    * unique_count: distinct `value_key`s over the whole period, counted from the
      raw events (hourly distinct counts do not add up). Events are kept
      USAGE_EVENT_RETENTION_DAYS; for a pair whose events are all purged, the
      largest hourly distinct count is returned (a lower bound).

    Pairs with no usage are absent. Call it with every organization of a run at
    once: the unique-count part scans the period's events once per 5,000 ids.
    """
    _check_on_the_hour("start", start)
    _check_on_the_hour("end", end)
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    ids = sorted(set(organization_ids))
    types = metric_aggregations()
    unique_codes = [code for code, kind in types.items() if kind == AggregationType.UNIQUE_COUNT]
    totals: dict[tuple[int, str], int] = {}
    for chunk in _chunks(ids):
        rows = (
            UsageAggregate.objects.filter(organization_id__in=chunk, hour__gte=start, hour__lt=end)
            .values_list("organization_id", "metric")
            .annotate(summed=Sum("total"), largest=Max("total"))
            .order_by()
        )
        for org_id, metric, summed, largest in rows:
            kind = types.get(metric, AggregationType.SUM)
            by_max = kind in (AggregationType.MAX, AggregationType.UNIQUE_COUNT)
            totals[(org_id, metric)] = int(largest if by_max else summed)
        if unique_codes:
            distinct = (
                UsageEvent.objects.filter(
                    organization_id__in=chunk,
                    metric__in=unique_codes,
                    occurred_at__gte=start,
                    occurred_at__lt=end,
                )
                .exclude(value_key="")
                .values_list("organization_id", "metric")
                .annotate(n=Count("value_key", distinct=True))
                .order_by()
            )
            for org_id, metric, n in distinct:
                if (org_id, metric) in totals:  # only hours that were aggregated count
                    totals[(org_id, metric)] = int(n)
    return totals


def late_hours(*, before: datetime, since: datetime, limit: int) -> list[datetime]:
    """Hours in [since, before) marked as having received events after their
    aggregation, oldest first (billing.aggregate_usage rebuilds them)."""
    return list(
        UsageLateHour.objects.filter(hour__gte=since, hour__lt=before)
        .order_by("hour")
        .values_list("hour", flat=True)[:limit]
    )


# --- analytics --------------------------------------------------------------------


def daily_cache_key(*, tenant: str, day: Any) -> str:
    """Where one organization's figures of one day are cached."""
    return f"analytics:{tenant}:overview:daily:{day.isoformat()}"


def daily_overview(*, organization_id: int, tenant: str, day: Any) -> dict[str, Any] | None:
    """One organization's figures of one day: the cache, else the table."""
    cached = cache.get(daily_cache_key(tenant=tenant, day=day))
    if cached is not None:
        return cached
    row = DailyMetrics.objects.filter(organization_id=organization_id, day=day).first()
    return metrics_as_dict(row) if row else None


# The figures of a day's overview, as cached and as read back (after "day").
OVERVIEW_FIELDS = (
    "currency",
    "revenue_minor",
    "new_subscriptions",
    "churned_subscriptions",
    "active_subscriptions",
    "mrr_minor",
    "usage",
)


def metrics_as_dict(row: DailyMetrics) -> dict[str, Any]:
    return {"day": row.day.isoformat(), **{f: getattr(row, f) for f in OVERVIEW_FIELDS}}


def daily_series(*, organization_id: int, last_day: Any, days: int = 30) -> list[dict[str, Any]]:
    """The figures of `days` days ending with `last_day`, one dict per day
    (zeros for a day with no row), oldest first: what the admin chart draws."""
    first = last_day - timedelta(days=days - 1)
    rows = {
        r.day: r
        for r in DailyMetrics.objects.filter(
            organization_id=organization_id, day__gte=first, day__lte=last_day
        )
    }
    series = []
    for i in range(days):
        day = first + timedelta(days=i)
        row = rows.get(day)
        if row is None:
            series.append(
                {
                    "day": day.isoformat(),
                    "missing": True,
                    "currency": "",
                    "revenue_minor": 0,
                    "new_subscriptions": 0,
                    "churned_subscriptions": 0,
                    "active_subscriptions": 0,
                    "mrr_minor": 0,
                    "usage": {},
                }
            )
        else:
            series.append({**metrics_as_dict(row), "missing": False})
    return series


# --- invoices ---------------------------------------------------------------------


def invoice_pdf_names() -> set[str]:
    """Storage names of every invoice's and credit note's PDF, voided invoices
    included (they are history). maintenance.cleanup's orphaned-PDF category
    keeps these."""
    return set(Invoice.objects.exclude(pdf="").values_list("pdf", flat=True)) | set(
        CreditNote.objects.exclude(pdf="").values_list("pdf", flat=True)
    )


UsageKey = tuple[int, date, str]  # organization id, month, metric code


def billed_usage(
    *,
    organization_ids: Iterable[int],
    periods: Iterable[date],
    exclude_invoice_ids: Iterable[int] = (),
) -> dict[UsageKey, tuple[int, int]]:
    """{(organization, month, metric): (quantity, amount)} billed so far by
    live invoices (void ones no longer count), from the usage ledger."""
    rows = (
        BilledUsage.objects.filter(
            organization_id__in=list(organization_ids), period_start__in=list(periods)
        )
        .exclude(invoice__status=InvoiceStatus.VOID)
        .exclude(invoice_id__in=list(exclude_invoice_ids))
        .values_list("organization_id", "period_start", "metric")
        .annotate(quantity=Sum("quantity"), amount=Sum("amount_minor"))
        .order_by()
    )
    return {(o, p, m): (int(q), int(a)) for o, p, m, q, a in rows}


def next_usage_revisions(
    *, organization_ids: Iterable[int], periods: Iterable[date]
) -> dict[UsageKey, int]:
    """The revision the next billing of each (organization, month, metric) gets
    (pairs never billed are absent: their first billing is revision 0). Void
    invoices' rows count here: revisions are never reused."""
    rows = (
        BilledUsage.objects.filter(
            organization_id__in=list(organization_ids), period_start__in=list(periods)
        )
        .values_list("organization_id", "period_start", "metric")
        .annotate(last=Max("revision"))
        .order_by()
    )
    return {(o, p, m): last + 1 for o, p, m, last in rows}


def usage_revisions(
    *, organization_ids: Iterable[int], through: date
) -> dict[tuple[int, date], int]:
    """{(organization, month): version} of the months up to `through` whose
    usage changed after they were first aggregated."""
    return {
        (o, p): v
        for o, p, v in UsageRevision.objects.filter(
            organization_id__in=list(organization_ids), period_start__lte=through
        ).values_list("organization_id", "period_start", "version")
    }

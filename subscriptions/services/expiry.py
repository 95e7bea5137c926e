"""Expiry: the `subscriptions.expire` job's work.

`expire_subscriptions` runs a few set-based statements in one transaction
that change the statuses, write the audit trail (one bulk record per
organization and identical before/after, listing the subscriptions) and
queue one digest email per organization and kind. Nothing is loaded into
Python per subscription.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from audit.services import bulk_insert_sql, record_bulk_audit_from_select
from notifications.services import (
    EmailDraft,
    EmailTemplate,
    Variant,
    queue_bulk,
    queue_from_queryset,
)
from subscriptions.models import RUNNING_STATUSES, Organization, Subscription
from subscriptions.selectors import TenantExpiryCounts, expiry_counts, tenant_keys
from subscriptions.services.common import (
    EXPIRED,
    OBJECT_TYPE,
    PER_TENANT_IN_SUMMARY,
    SUSPENDED,
    changes_for,
)


class ExpiryGuardTripped(Exception):
    """The run would expire too large a share of some tenant's subscriptions.

    Usually a sign of bad data upstream (a failed renewal sync, a clock or
    import error), so nothing is changed until a person forces the run.
    """

    def __init__(self, tenants: list[TenantExpiryCounts], limit_percent: float) -> None:
        self.tenants = tenants
        self.limit_percent = limit_percent
        names = ", ".join(
            f"{t.key}: {t.would_expire} of {t.running} ({t.expire_percent:.0f}%)"
            for t in tenants[:10]
        )
        more = f" and {len(tenants) - 10} more tenants" if len(tenants) > 10 else ""
        super().__init__(
            f"expiry guard: would expire more than {limit_percent:g}% of the running "
            f"subscriptions of {len(tenants)} tenant(s) — {names}{more}. "
            "Nothing changed; rerun with force=true if this is intended."
        )

    def guard_summary(self) -> dict[str, Any]:
        """The run's `guard` summary when the guard stopped it."""
        return {
            "limit_percent": self.limit_percent,
            "checked": True,
            "forced": False,
            "aborted": True,
            "tenants_over_limit": [
                {"tenant": t.key, "would_expire": t.would_expire, "running": t.running}
                for t in self.tenants[:PER_TENANT_IN_SUMMARY]
            ],
            "tenants_over_limit_count": len(self.tenants),
        }


@dataclass
class ExpiryResult:
    expired: int = 0
    suspended: int = 0
    audit_records: int = 0
    emails_queued: int = 0
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Group:
    """The subscriptions of one organization that moved to one status."""

    organization_id: int
    status: str
    count: int


def grace_cutoff(*, slot: datetime, grace_days: int) -> datetime:
    return slot - timedelta(days=grace_days)


def guard_violations(
    counts: list[TenantExpiryCounts], *, limit_percent: float
) -> list[TenantExpiryCounts]:
    """Tenants that would lose more than `limit_percent` of their running
    subscriptions, counting only those losing at least EXPIRY_SAFETY_MIN_EXPIRING
    (a percentage of a tiny tenant says nothing about a runaway expiry)."""
    least = max(1, settings.EXPIRY_SAFETY_MIN_EXPIRING)
    return [
        t
        for t in counts
        if t.would_expire >= least and t.would_expire * 100 > limit_percent * t.running
    ]


def plan_expiry(
    *,
    slot: datetime,
    grace_days: int,
    organization_id: int | None = None,
    limit_percent: float | None = None,
) -> dict[str, Any]:
    """What `expire_subscriptions` would do at `slot`; reads only (the dry run)."""
    limit = settings.EXPIRY_SAFETY_LIMIT_PERCENT if limit_percent is None else limit_percent
    counts = expiry_counts(
        slot=slot,
        grace_cutoff=grace_cutoff(slot=slot, grace_days=grace_days),
        organization_id=organization_id,
    )
    over = guard_violations(counts, limit_percent=limit)
    busiest = sorted(counts, key=lambda t: (-(t.would_expire + t.would_suspend), t.key))
    return {
        "would_expire": sum(t.would_expire for t in counts),
        "would_suspend": sum(t.would_suspend for t in counts),
        "tenants_affected": len(counts),
        "per_tenant": {
            t.key: {
                "would_expire": t.would_expire,
                "would_suspend": t.would_suspend,
                "running": t.running,
            }
            for t in busiest[:PER_TENANT_IN_SUMMARY]
        },
        "guard": _guard_summary(over, limit=limit, forced=False, checked=True),
    }


def _guard_summary(
    over: list[TenantExpiryCounts], *, limit: float, forced: bool, checked: bool
) -> dict[str, Any]:
    return {
        "limit_percent": limit,
        "min_expiring": settings.EXPIRY_SAFETY_MIN_EXPIRING,
        "checked": checked,
        "forced": forced,
        "tenants_over_limit": [
            {
                "tenant": t.key,
                "would_expire": t.would_expire,
                "running": t.running,
                "percent": round(t.expire_percent, 1),
            }
            for t in over[:PER_TENANT_IN_SUMMARY]
        ],
        "tenants_over_limit_count": len(over),
    }


def expire_subscriptions(
    *,
    slot: datetime,
    grace_days: int,
    actor: str,
    job_run_id: int | None = None,
    organization_id: int | None = None,
    force: bool = False,
    limit_percent: float | None = None,
) -> tuple[ExpiryResult, dict[str, Any]]:
    """Expire running subscriptions whose period ended by `slot`; suspend expired
    ones whose grace ended by `slot`. Returns the result and the guard report.

    All or nothing: the status changes, their audit rows and their emails
    commit together. Rerunning for the same slot finds nothing left to do.
    Raises ExpiryGuardTripped (and changes nothing) when a tenant would lose
    more than the safety limit of its running subscriptions, unless `force`.
    """
    if grace_days < 0:
        raise ValueError(f"grace_days must be 0 or more, got {grace_days}")
    limit = settings.EXPIRY_SAFETY_LIMIT_PERCENT if limit_percent is None else limit_percent
    cutoff = grace_cutoff(slot=slot, grace_days=grace_days)
    now = timezone.now()
    with transaction.atomic():
        if force:
            guard = _guard_summary([], limit=limit, forced=True, checked=False)
        else:
            counts = expiry_counts(slot=slot, grace_cutoff=cutoff, organization_id=organization_id)
            over = guard_violations(counts, limit_percent=limit)
            if over:
                raise ExpiryGuardTripped(over, limit)
            guard = _guard_summary([], limit=limit, forced=False, checked=True)
        renderer = _DigestRenderer(slot=slot, grace_days=grace_days)
        transition = (
            _transition_postgres if connection.vendor == "postgresql" else _transition_portable
        )
        started = time.perf_counter()
        groups, audit_records = transition(
            slot=slot,
            cutoff=cutoff,
            now=now,
            actor=actor,
            job_run_id=job_run_id,
            organization_id=organization_id,
        )
        result = ExpiryResult(audit_records=audit_records)
        result.seconds["transition"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        for g in groups:
            if g.status == EXPIRED:
                result.expired += g.count
            else:
                result.suspended += g.count
        result.emails_queued = _queue_digests(groups, renderer=renderer)
        result.seconds["digests"] = round(time.perf_counter() - started, 3)
        if len({g.organization_id for g in groups}) <= PER_TENANT_IN_SUMMARY:
            result.tenants = _per_tenant(groups)
    return result, guard


# --- the status change, its audit rows -------------------------------------------

_SUBSCRIPTION = Subscription._meta.db_table
_ORGANIZATION = Organization._meta.db_table
_RUNNING_SQL = ", ".join(f"'{s.value}'" for s in RUNNING_STATUSES)


def _where(alias: str, organization_id: int | None) -> str:
    tenant = f" AND {alias}.organization_id = %(org)s" if organization_id else ""
    return (
        f"(({alias}.status IN ({_RUNNING_SQL}) AND {alias}.current_period_end <= %(slot)s)"
        f" OR ({alias}.status = '{EXPIRED}' AND {alias}.expired_at <= %(cutoff)s)){tenant}"
    )


def _changes_params(slot: datetime) -> dict[str, str]:
    """The audit `changes` JSON depends only on the old status and auto_renew,
    so it is built once per combination here, not once per row in SQL."""
    at = slot.isoformat()
    params = {
        "changes_suspended": json.dumps(
            changes_for(before={"status": EXPIRED}, after={"status": SUSPENDED, "suspended_at": at})
        )
    }
    for status in RUNNING_STATUSES:
        for renew in (True, False):
            suffix = "_renew" if renew else ""
            after: dict[str, Any] = {"status": EXPIRED, "expired_at": at}
            if renew:
                after["auto_renew"] = False
            params[f"changes_{status.value}{suffix}"] = json.dumps(
                changes_for(before={"status": status.value, "auto_renew": renew}, after=after)
            )
    return params


def _transition_postgres(
    *,
    slot: datetime,
    cutoff: datetime,
    now: datetime,
    actor: str,
    job_run_id: int | None,
    organization_id: int | None,
) -> tuple[list[_Group], int]:
    """One statement: the UPDATE, the audit records fed by its RETURNING (one
    per organization and old state, listing the subscriptions), and the
    per-organization groups the digests need. The self-join gives RETURNING the
    old values (PostgreSQL < 18 has no OLD in RETURNING); the WHERE is on the
    updated alias so a concurrent change is rechecked, and only rows really
    changed are audited. The same WHERE on `old` keeps the join's both sides to
    the due rows."""
    audit_insert = bulk_insert_sql(
        f"""
            SELECT %(now)s, %(actor)s::text, o.key, 'subscription.' || g.status,
                   '{OBJECT_TYPE}', '', to_jsonb(g.ids),
                   CASE WHEN g.status = '{SUSPENDED}' THEN %(changes_suspended)s::jsonb
                        WHEN g.old_auto_renew THEN CASE g.old_status
                            WHEN 'trialing' THEN %(changes_trialing_renew)s::jsonb
                            WHEN 'active' THEN %(changes_active_renew)s::jsonb
                            ELSE %(changes_past_due_renew)s::jsonb END
                        ELSE CASE g.old_status
                            WHEN 'trialing' THEN %(changes_trialing)s::jsonb
                            WHEN 'active' THEN %(changes_active)s::jsonb
                            ELSE %(changes_past_due)s::jsonb END
                   END,
                   %(run)s::bigint, ''
            FROM grouped g JOIN {_ORGANIZATION} o ON o.id = g.organization_id
        """
    )
    sql = f"""
        WITH changed AS (
            UPDATE {_SUBSCRIPTION} AS s SET
                status = CASE WHEN s.status = '{EXPIRED}' THEN '{SUSPENDED}' ELSE '{EXPIRED}' END,
                auto_renew = CASE WHEN s.status = '{EXPIRED}' THEN s.auto_renew ELSE false END,
                expired_at = CASE WHEN s.status = '{EXPIRED}' THEN s.expired_at
                                  ELSE %(slot)s END,
                suspended_at = CASE WHEN s.status = '{EXPIRED}' THEN %(slot)s
                                    ELSE s.suspended_at END,
                updated_at = %(now)s
            FROM {_SUBSCRIPTION} AS old
            WHERE old.id = s.id AND {_where("s", organization_id)}
              AND {_where("old", organization_id)}
            RETURNING s.id, s.organization_id, s.status,
                      old.status AS old_status, old.auto_renew AS old_auto_renew
        ),
        grouped AS (
            SELECT organization_id, status, old_status, old_auto_renew, count(*) AS n,
                   array_agg(id) AS ids
            FROM changed
            GROUP BY organization_id, status, old_status, old_auto_renew
        ),
        audit AS (
            {audit_insert}
            RETURNING 1
        )
        SELECT organization_id, status, sum(n)::bigint, (SELECT count(*) FROM audit)
        FROM grouped
        GROUP BY organization_id, status
    """
    params = {
        "slot": slot,
        "cutoff": cutoff,
        "now": now,
        "actor": actor,
        "run": job_run_id,
        "org": organization_id,
        **_changes_params(slot),
    }
    with connection.cursor() as cursor:
        # Room for the self-join's hash and the RETURNING set in memory.
        cursor.execute("SET LOCAL work_mem = '128MB'")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    groups = [_Group(org, status, n) for org, status, n, _ in rows]
    return groups, (rows[0][3] if rows else 0)


def _transition_portable(
    *,
    slot: datetime,
    cutoff: datetime,
    now: datetime,
    actor: str,
    job_run_id: int | None,
    organization_id: int | None,
) -> tuple[list[_Group], int]:
    """SQLite: INSERT ... SELECT the audit rows, read the groups, then UPDATE with
    the same WHERE. SQLite has no data-modifying CTEs, but its transactions here
    are IMMEDIATE (the write lock is taken at BEGIN), so no other writer can
    change the selected rows between these statements."""
    ops = connection.ops
    params = {
        "slot": ops.adapt_datetimefield_value(slot),
        "cutoff": ops.adapt_datetimefield_value(cutoff),
        "now": ops.adapt_datetimefield_value(now),
        "actor": actor,
        "run": job_run_id,
        "org": organization_id,
        "slot_iso": slot.isoformat(),
    }
    audit_select = f"""
        SELECT %(now)s, %(actor)s, o.key,
               CASE WHEN s.status = '{EXPIRED}' THEN 'subscription.{SUSPENDED}'
                    ELSE 'subscription.{EXPIRED}' END,
               '{OBJECT_TYPE}', '', json_group_array(s.id),
               CASE WHEN s.status = '{EXPIRED}' THEN json_object(
                   'status', json_array(s.status, '{SUSPENDED}'),
                   'suspended_at', json_array(NULL, %(slot_iso)s))
               WHEN s.auto_renew THEN json_object(
                   'status', json_array(s.status, '{EXPIRED}'),
                   'expired_at', json_array(NULL, %(slot_iso)s),
                   'auto_renew', json_array(json('true'), json('false')))
               ELSE json_object(
                   'status', json_array(s.status, '{EXPIRED}'),
                   'expired_at', json_array(NULL, %(slot_iso)s))
               END,
               %(run)s, ''
        FROM (SELECT * FROM {_SUBSCRIPTION} s WHERE {_where("s", organization_id)}
              ORDER BY s.id) s
        JOIN {_ORGANIZATION} o ON o.id = s.organization_id
        GROUP BY s.organization_id, s.status, s.auto_renew
    """
    groups_sql = f"""
        SELECT s.organization_id,
               CASE WHEN s.status = '{EXPIRED}' THEN '{SUSPENDED}' ELSE '{EXPIRED}' END,
               count(*)
        FROM {_SUBSCRIPTION} s
        WHERE {_where("s", organization_id)}
        GROUP BY 1, 2
    """
    update_sql = f"""
        UPDATE {_SUBSCRIPTION} AS s SET
            status = CASE WHEN s.status = '{EXPIRED}' THEN '{SUSPENDED}' ELSE '{EXPIRED}' END,
            auto_renew = CASE WHEN s.status = '{EXPIRED}' THEN s.auto_renew ELSE 0 END,
            expired_at = CASE WHEN s.status = '{EXPIRED}' THEN s.expired_at ELSE %(slot)s END,
            suspended_at = CASE WHEN s.status = '{EXPIRED}' THEN %(slot)s
                                ELSE s.suspended_at END,
            updated_at = %(now)s
        WHERE {_where("s", organization_id)}
    """
    with connection.cursor() as cursor:
        audit_records = record_bulk_audit_from_select(audit_select, params)
        cursor.execute(groups_sql, params)
        groups = [_Group(org, status, n) for org, status, n in cursor.fetchall()]
        cursor.execute(update_sql, params)
        changed = cursor.rowcount
    if changed != sum(g.count for g in groups):
        raise RuntimeError(
            f"expiry changed {changed} rows but audited {sum(g.count for g in groups)}"
        )  # cannot happen under the write lock; refuse rather than mis-audit
    return groups, audit_records


# --- the digests ----------------------------------------------------------------


class _DigestRenderer:
    """Renders the status-change digest emails of one run.

    A digest per organization and kind, not one email per subscription: an
    organization whose 300 seats lapse together gets one message. On
    PostgreSQL each template is rendered once and the database fills in the
    names and counts (`sql_rendered`); elsewhere one render per digest. The dedupe
    key (kind, organization, slot) makes a rerun of the slot queue nothing new.
    """

    def __init__(self, *, slot: datetime, grace_days: int) -> None:
        self.templates = {
            EXPIRED: EmailTemplate("subscriptions_expired"),
            SUSPENDED: EmailTemplate("subscriptions_suspended"),
        }
        self.slot_text = f"{slot:%Y-%m-%d %H:%M}"
        self.slot_key = f"{slot:%Y-%m-%dT%H:%M:%SZ}"
        self.suspend_after = f"{slot + timedelta(days=grace_days):%Y-%m-%d %H:%M}"
        self.grace_text = str(grace_days)

    def context(self, *, name: str, count: str, single: bool) -> dict[str, Any]:
        # Numbers as text: skips number localization, a third of the render
        # time when thousands of digests are rendered.
        return {
            "organization_name": name,
            "count": count,
            "single": single,
            "slot": self.slot_text,
            "grace_days": self.grace_text,
            "suspend_after": self.suspend_after,
        }

    def variants(self, status: str) -> list[Variant]:
        """The digest of one organization, or of one subscription (`single`)."""
        template = self.templates[status]
        return [
            Variant(template, self.context(name="", count="", single=True), when="single"),
            Variant(template, self.context(name="", count="", single=False)),
        ]

    def draft(
        self, *, organization_id: int, status: str, count: int, name: str, email: str
    ) -> EmailDraft:
        kind = f"subscriptions.{status}"
        rendered = self.templates[status].render(
            self.context(name=name, count=str(count), single=count == 1)
        )
        return EmailDraft(
            to=email,
            kind=kind,
            dedupe_key=f"{kind}:org{organization_id}:{self.slot_key}",
            subject=rendered.subject,
            body_text=rendered.body_text,
            body_html=rendered.body_html,
            organization_id=organization_id,
        )


def _queue_digests(groups: list[_Group], *, renderer: _DigestRenderer) -> int:
    """One email per organization and kind to its billing contact, queued in bulk."""
    if connection.vendor == "postgresql":
        return sum(
            _queue_digests_sql([g for g in groups if g.status == status], renderer=renderer)
            for status in (EXPIRED, SUSPENDED)
        )
    orgs = {
        o["id"]: o
        for o in Organization.objects.filter(id__in={g.organization_id for g in groups}).values(
            "id", "name", "billing_email"
        )
    }
    drafts = [
        renderer.draft(
            organization_id=g.organization_id,
            status=g.status,
            count=g.count,
            name=orgs[g.organization_id]["name"],
            email=orgs[g.organization_id]["billing_email"],
        )
        for g in groups
        if orgs.get(g.organization_id, {}).get("billing_email")
    ]
    return queue_bulk(emails=drafts)


def _queue_digests_sql(groups: list[_Group], *, renderer: _DigestRenderer) -> int:
    """PostgreSQL: the digests of one kind in one INSERT ... SELECT, the template
    rendered once by Django with the organization's name and count filled in per
    row by the database (byte for byte what Django renders)."""
    if not groups:
        return 0
    status = groups[0].status
    kind = f"subscriptions.{status}"
    # Each organization's count, looked up per row in one jsonb parameter.
    counts = json.dumps({str(g.organization_id): g.count for g in groups})
    table = connection.ops.quote_name(_ORGANIZATION)
    n = RawSQL(f"(%s::jsonb ->> {table}.id::text)::bigint", [counts])
    rows = (
        Organization.objects.filter(id__in=[g.organization_id for g in groups])
        .exclude(billing_email="")
        .annotate(n=n)
        .values(
            organization_id=F("id"),
            to=F("billing_email"),
            organization_name=F("name"),
            count=Cast("n", TextField()),
            single=ExpressionWrapper(Q(n=1), output_field=BooleanField()),
            dedupe_key=Concat(
                Value(f"{kind}:org"),
                Cast("id", TextField()),
                Value(f":{renderer.slot_key}"),
                output_field=TextField(),
            ),
        )
    )
    return queue_from_queryset(
        rows, kind=kind, variants=renderer.variants(status), fields=("organization_name", "count")
    )


def _per_tenant(groups: list[_Group]) -> dict[str, dict[str, int]]:
    keys = tenant_keys(g.organization_id for g in groups)
    out: dict[str, dict[str, int]] = {}
    for g in groups:
        entry = out.setdefault(keys.get(g.organization_id, str(g.organization_id)), {})
        entry[g.status] = entry.get(g.status, 0) + g.count
    return out

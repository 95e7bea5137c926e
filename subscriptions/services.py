"""Every write to subscriptions.

`expire_subscriptions` is the expiry job's work: a few set-based statements
in one transaction that change the statuses, write the audit trail (one bulk
record per organization and identical before/after, listing the subscriptions)
and queue one digest email per organization and kind. Nothing is loaded into
Python per subscription.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from audit.services import (
    BULK_COLUMNS,
    BulkChange,
    audit_table,
    record_audit,
    record_bulk_audit,
)
from core.sql import update_from_values
from notifications.services import (
    EmailDraft,
    EmailTemplate,
    SqlRendered,
    queue_bulk,
    queue_from_query,
    render_sql,
)
from payments.tenant_calls import ERROR, OK, SKIPPED, TenantCalls, TenantRunResult
from subscriptions.models import (
    RUNNING_STATUSES,
    Organization,
    Subscription,
    SubscriptionStatus,
)
from subscriptions.selectors import TenantExpiryCounts, expiry_counts

EXPIRED = SubscriptionStatus.EXPIRED.value
SUSPENDED = SubscriptionStatus.SUSPENDED.value
OBJECT_TYPE = "subscriptions.subscription"
PER_TENANT_IN_SUMMARY = 50


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


def changes_for(*, before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Audit `changes` as {field: [before, after]}, compact because a job may
    write hundreds of thousands of them."""
    return {name: [before.get(name), value] for name, value in after.items()}


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
    columns = ", ".join(BULK_COLUMNS)
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
            INSERT INTO {audit_table()} ({columns})
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
    columns = ", ".join(BULK_COLUMNS)
    audit_sql = f"""
        INSERT INTO {audit_table()} ({columns})
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
        cursor.execute(audit_sql, params)
        audit_records = cursor.rowcount
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

    def sql_rendered(self, status: str, *, single: bool) -> SqlRendered:
        holes = {"organization_name": "o.name", "count": "g.n::text"}
        context = self.context(name="", count="", single=single)
        return render_sql(self.templates[status], context=context, fields=holes)

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
    variants = [
        ("g.n = 1", renderer.sql_rendered(status, single=True)),
        (None, renderer.sql_rendered(status, single=False)),
    ]
    kind = f"subscriptions.{status}"
    return queue_from_query(
        select_from=(
            f"unnest(%s::bigint[], %s::bigint[]) AS g(org_id, n) "
            f"JOIN {_ORGANIZATION} o ON o.id = g.org_id CROSS JOIN (SELECT %s::text AS key) k"
        ),
        where="o.billing_email <> ''",
        params=[[g.organization_id for g in groups], [g.count for g in groups], renderer.slot_key],
        variants=variants,
        to_sql="o.billing_email",
        organization_sql="o.id",
        kind=kind,
        dedupe_key_sql=f"'{kind}:org' || o.id::text || ':' || k.key",
    )


def _per_tenant(groups: list[_Group]) -> dict[str, dict[str, int]]:
    keys = dict(
        Organization.objects.filter(id__in={g.organization_id for g in groups}).values_list(
            "id", "key"
        )
    )
    out: dict[str, dict[str, int]] = {}
    for g in groups:
        entry = out.setdefault(keys.get(g.organization_id, str(g.organization_id)), {})
        entry[g.status] = entry.get(g.status, 0) + g.count
    return out


# --- renewal and payment reminders ------------------------------------------------

RENEWAL_REMINDER = "subscriptions.renewal_reminder"
PAYMENT_DUE = "subscriptions.payment_due"


@dataclass
class ReminderResult:
    renewal: int = 0
    payment_due: int = 0


def _sql_minute(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
    return f"substr({column}, 1, 16)"  # SQLite stores UTC 'YYYY-MM-DD HH:MM:SS...'


def _sql_period_key(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')"""
    return f"replace(substr({column}, 1, 19), ' ', 'T')"


def queue_renewal_reminders(
    *,
    slot: datetime,
    days: int,
    organization_id: int | None = None,
    dry_run: bool = False,
) -> ReminderResult:
    """Queue reminders in two INSERT ... SELECT statements, deduped per subscription
    and period (so a rerun, or tomorrow's run, queues nothing new):

    * trialing/active subscriptions whose period ends within `days` of `slot`
      get a renewal reminder (a late or missed daily run still reminds them);
    * past_due ones get a payment-due reminder, once per period.

    Bodies are rendered from `templates/emails/` once, with the per-row values
    filled in by the database, so 100,000 reminders cost about one INSERT.
    """
    from subscriptions.models import OrganizationStatus, Plan

    sub = connection.ops.quote_name(Subscription._meta.db_table)
    org = connection.ops.quote_name(Organization._meta.db_table)
    plan = connection.ops.quote_name(Plan._meta.db_table)
    fields = {
        "organization_name": "o.name",
        "plan_name": "p.name",
        "period_end": _sql_minute("s.current_period_end"),
    }
    select_from = (
        f"{sub} s JOIN {org} o ON o.id = s.organization_id JOIN {plan} p ON p.id = s.plan_id"
    )
    base_where = "o.status = %s AND o.billing_email <> ''"
    base_params: list[Any] = [OrganizationStatus.ACTIVE]
    if organization_id:
        base_where += " AND s.organization_id = %s"
        base_params.append(organization_id)
    result = ReminderResult()
    with transaction.atomic():
        renewal = EmailTemplate("subscription_renewal_reminder")
        result.renewal = queue_from_query(
            select_from=select_from,
            where=f"{base_where} AND s.status IN (%s, %s) AND s.current_period_end > %s "
            "AND s.current_period_end <= %s",
            params=[
                *base_params,
                SubscriptionStatus.TRIALING,
                SubscriptionStatus.ACTIVE,
                slot,
                slot + timedelta(days=days),
            ],
            variants=[
                ("s.auto_renew", render_sql(renewal, context={"auto_renew": True}, fields=fields)),
                (None, render_sql(renewal, context={"auto_renew": False}, fields=fields)),
            ],
            to_sql="o.billing_email",
            organization_sql="s.organization_id",
            kind=RENEWAL_REMINDER,
            dedupe_key_sql=f"'{RENEWAL_REMINDER}:sub' || s.id || ':' || "
            f"{_sql_period_key('s.current_period_end')}",
            dry_run=dry_run,
        )
        result.payment_due = queue_from_query(
            select_from=select_from,
            where=f"{base_where} AND s.status = %s",
            params=[*base_params, SubscriptionStatus.PAST_DUE],
            variants=[
                (
                    None,
                    render_sql(
                        EmailTemplate("subscription_payment_due"), context={}, fields=fields
                    ),
                )
            ],
            to_sql="o.billing_email",
            organization_sql="s.organization_id",
            kind=PAYMENT_DUE,
            dedupe_key_sql=f"'{PAYMENT_DUE}:sub' || s.id || ':' || "
            f"{_sql_period_key('s.current_period_end')}",
            dry_run=dry_run,
        )
    return result


# --- payment outcomes (payments.reconcile) ------------------------------------------

ACTIVE = SubscriptionStatus.ACTIVE.value
PAST_DUE = SubscriptionStatus.PAST_DUE.value
# A paid subscription in these states is the local side's decision: left as is.
NOT_RENEWED_ON_PAYMENT = (SubscriptionStatus.SUSPENDED.value, SubscriptionStatus.CANCELED.value)


@dataclass
class PaymentOutcomeResult:
    changed: int = 0
    skipped: int = 0
    audit_records: int = 0


def _next_period_end(end: datetime, interval: str) -> datetime:
    from dateutil.relativedelta import relativedelta

    return end + (relativedelta(years=1) if interval == "year" else relativedelta(months=1))


def _audit_groups(
    groups: dict[tuple[int, str], list[int]],
    *,
    action: str,
    new_status: str,
    extra: dict[str, Any],
    actor: str,
    job_run_id: int | None,
    now: datetime,
) -> int:
    """One audit row per organization and old status, listing the subscriptions."""
    if not groups:
        return 0
    keys = dict(
        Organization.objects.filter(id__in={org for org, _ in groups}).values_list("id", "key")
    )
    return record_bulk_audit(
        (
            BulkChange(
                tenant=keys.get(org, ""),
                action=action,
                object_type=OBJECT_TYPE,
                object_ids=ids,
                changes={"status": [old, new_status], **extra},
            )
            for (org, old), ids in sorted(groups.items())
        ),
        actor=actor,
        job_run_id=job_run_id,
        at=now,
    )


def renew_paid_subscriptions(
    *,
    subscription_ids: list[int],
    now: datetime,
    actor: str,
    job_run_id: int | None = None,
    renewal_days: int | None = None,
) -> PaymentOutcomeResult:
    """A payment for these subscriptions succeeded: make them active again
    (past_due, expired, trialing -> active) and, when their period ends within
    `renewal_days` (or has ended), advance it by one plan interval.

    Suspended and canceled ones are left alone (counted as skipped). Two
    statements: one read, one UPDATE ... FROM of every row's new period, guarded
    by the status read, so a concurrent change is never overwritten.
    """
    days = settings.SUBSCRIPTION_RENEWAL_DAYS_BEFORE if renewal_days is None else renewal_days
    horizon = now + timedelta(days=days)
    result = PaymentOutcomeResult()
    rows = []
    groups: dict[tuple[int, str], list[int]] = {}
    for sub in Subscription.objects.filter(id__in=set(subscription_ids)).values(
        "id",
        "organization_id",
        "status",
        "current_period_start",
        "current_period_end",
        "plan__interval",
    ):
        if sub["status"] in NOT_RENEWED_ON_PAYMENT:
            result.skipped += 1
            continue
        start, end = sub["current_period_start"], sub["current_period_end"]
        if end <= horizon:
            start, end = end, _next_period_end(end, sub["plan__interval"])
        rows.append((sub["id"], sub["status"], start, end))
        groups.setdefault((sub["organization_id"], sub["status"]), []).append(sub["id"])
    changed = update_from_values(
        table=Subscription._meta.db_table,
        columns=[
            ("id", "bigint"),
            ("old_status", "text"),
            ("start", "timestamptz"),
            ("finish", "timestamptz"),
        ],
        rows=rows,
        set_sql=(
            "status = %(active)s, expired_at = NULL, current_period_start = v.start, "
            "current_period_end = v.finish, updated_at = %(now)s"
        ),
        where_sql="t.status = v.old_status",
        params={"active": ACTIVE, "now": now},
        returning="id",
    )
    done = {row[0] for row in changed}
    result.changed = len(done)
    result.skipped += len(rows) - len(done)
    groups = {k: [i for i in ids if i in done] for k, ids in groups.items()}
    result.audit_records = _audit_groups(
        {k: ids for k, ids in groups.items() if ids},
        action="subscription.renewed",
        new_status=ACTIVE,
        extra={"reason": "payment succeeded"},
        actor=actor,
        job_run_id=job_run_id,
        now=now,
    )
    return result


def mark_subscriptions_past_due(
    *,
    subscription_ids: list[int],
    now: datetime,
    actor: str,
    job_run_id: int | None = None,
) -> PaymentOutcomeResult:
    """A payment for these subscriptions failed: active or trialing ones become
    past_due (others are further along already and are left alone)."""
    result = PaymentOutcomeResult()
    ids = set(subscription_ids)
    candidates = Subscription.objects.filter(
        id__in=ids, status__in=[SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING]
    )
    groups: dict[tuple[int, str], list[int]] = {}
    with transaction.atomic():
        for sub in candidates.select_for_update().values("id", "organization_id", "status"):
            groups.setdefault((sub["organization_id"], sub["status"]), []).append(sub["id"])
        moved = [i for group in groups.values() for i in group]
        result.changed = Subscription.objects.filter(id__in=moved).update(
            status=PAST_DUE, updated_at=now
        )
        result.skipped = len(ids) - result.changed
        result.audit_records = _audit_groups(
            groups,
            action="subscription.past_due",
            new_status=PAST_DUE,
            extra={"reason": "payment failed"},
            actor=actor,
            job_run_id=job_run_id,
            now=now,
        )
    return result


# --- renewal sync with Stripe (subscriptions.sync_renewals) --------------------------

# Stripe's subscription statuses, as ours. Those not listed change nothing locally
# and are reported as a mismatch.
STRIPE_STATUS = {
    "trialing": SubscriptionStatus.TRIALING.value,
    "active": ACTIVE,
    "past_due": PAST_DUE,
    "unpaid": PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED.value,
    "incomplete_expired": SubscriptionStatus.CANCELED.value,
}
CANCELED = SubscriptionStatus.CANCELED.value
RUNNING_VALUES = tuple(s.value for s in RUNNING_STATUSES)
SYNCABLE_STATUSES = (*RUNNING_STATUSES, SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELED)


@dataclass(frozen=True)
class LocalSubscription:
    id: int
    organization_id: int
    stripe_subscription_id: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    auto_renew: bool
    cancel_at_period_end: bool


@dataclass(frozen=True)
class RemoteSubscription:
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


def remote_subscription(data: dict[str, Any]) -> RemoteSubscription:
    """Read a Stripe Subscription: the period sits on the subscription in older
    API versions (and localstripe), on its items since 2025-03-31."""
    start, end = data.get("current_period_start"), data.get("current_period_end")
    items = (data.get("items") or {}).get("data") or []
    if end is None and items:
        start = items[0].get("current_period_start")
        end = items[0].get("current_period_end")
    return RemoteSubscription(
        status=str(data.get("status") or ""),
        current_period_start=datetime.fromtimestamp(start, UTC) if start else None,
        current_period_end=datetime.fromtimestamp(end, UTC) if end else None,
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
    )


@dataclass
class SyncDecision:
    """What one subscription's row becomes. `push_cancellation`: the local
    cancellation must be sent to Stripe first."""

    local: LocalSubscription
    status: str
    current_period_start: datetime
    current_period_end: datetime
    auto_renew: bool
    cancel_at_period_end: bool
    reconciliation_status: str
    error: str = ""
    push_cancellation: bool = False

    @property
    def changed_fields(self) -> list[str]:
        old = self.local
        return [
            name
            for name in (
                "status",
                "current_period_start",
                "current_period_end",
                "auto_renew",
                "cancel_at_period_end",
            )
            if getattr(old, name) != getattr(self, name)
        ]


def _keep(local: LocalSubscription, recon: str, error: str = "") -> SyncDecision:
    return SyncDecision(
        local=local,
        status=local.status,
        current_period_start=local.current_period_start,
        current_period_end=local.current_period_end,
        auto_renew=local.auto_renew,
        cancel_at_period_end=local.cancel_at_period_end,
        reconciliation_status=recon,
        error=error,
    )


def decide_sync(
    local: LocalSubscription, remote: RemoteSubscription, *, push_cancellations: bool
) -> SyncDecision:
    """Stripe is the authority on status and period; the local side on a
    cancellation not yet sent and on a period it already advanced (a payment
    reconciled before Stripe's renewal): those are mismatches, never overwritten."""
    from subscriptions.models import ReconciliationStatus as R

    remote_status = STRIPE_STATUS.get(remote.status)
    if remote_status is None or remote.current_period_end is None:
        return _keep(local, R.MISMATCH, f"Stripe status {remote.status!r} has no local equivalent")
    remote_canceling = remote_status == CANCELED or remote.cancel_at_period_end
    if local.status == CANCELED or (local.status in RUNNING_VALUES and not local.auto_renew):
        # Canceled here (or renewal turned off here): Stripe must follow, not lead.
        if not remote_canceling:
            decision = _keep(local, R.MISMATCH, "local cancellation not yet sent to Stripe")
            decision.push_cancellation = push_cancellations
            return decision
        if local.status == CANCELED:
            return _keep(local, R.SYNCED)
    if remote.current_period_end < local.current_period_end:
        return _keep(
            local,
            R.MISMATCH,
            f"Stripe period ends {remote.current_period_end:%Y-%m-%d %H:%M}, before the local "
            f"{local.current_period_end:%Y-%m-%d %H:%M}; local period kept",
        )
    start = remote.current_period_start or local.current_period_start
    return SyncDecision(
        local=local,
        status=remote_status,
        current_period_start=start
        if start < remote.current_period_end
        else local.current_period_start,
        current_period_end=remote.current_period_end,
        auto_renew=not remote_canceling,
        cancel_at_period_end=remote.cancel_at_period_end,
        reconciliation_status=R.SYNCED,
    )


def subscriptions_to_sync(
    *, slot: datetime, days: int, organization_id: int | None = None, limit: int
) -> list[LocalSubscription]:
    """Linked subscriptions whose period ends within `days` of `slot`, either
    way (renewing soon, or just ended and not yet renewed here), of tenants
    whose Stripe gateway is enabled."""
    rows = Subscription.objects.filter(
        status__in=SYNCABLE_STATUSES,
        current_period_end__gt=slot - timedelta(days=days),
        current_period_end__lte=slot + timedelta(days=days),
        organization__payment_provider__enabled=True,
    ).exclude(stripe_subscription_id="")
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    return [
        LocalSubscription(*row)
        for row in rows.order_by("current_period_end", "id").values_list(
            "id",
            "organization_id",
            "stripe_subscription_id",
            "status",
            "current_period_start",
            "current_period_end",
            "auto_renew",
            "cancel_at_period_end",
        )[:limit]
    ]


@dataclass
class SyncWriteResult:
    written: int = 0
    changed: int = 0
    audit_records: int = 0


def write_sync(
    *, decisions: list[SyncDecision], now: datetime, actor: str, job_run_id: int | None = None
) -> SyncWriteResult:
    """One UPDATE ... FROM for the batch, guarded by the values read (a row
    changed meanwhile is left for the next run), and bulk audit rows for the
    rows whose status, period or renewal changed."""
    rows = [
        (
            d.local.id,
            d.local.status,
            d.local.current_period_end,
            d.local.auto_renew,
            d.status,
            d.current_period_start,
            d.current_period_end,
            d.auto_renew,
            d.cancel_at_period_end,
            str(d.reconciliation_status),
            d.error[:2000],
            bool(d.changed_fields),
        )
        for d in decisions
    ]
    result = SyncWriteResult()
    with transaction.atomic():
        written = update_from_values(
            table=Subscription._meta.db_table,
            columns=[
                ("id", "bigint"),
                ("old_status", "text"),
                ("old_end", "timestamptz"),
                ("old_renew", "boolean"),
                ("status", "text"),
                ("start", "timestamptz"),
                ("finish", "timestamptz"),
                ("renew", "boolean"),
                ("cancel_at_end", "boolean"),
                ("recon", "text"),
                ("error", "text"),
                ("changed", "boolean"),
            ],
            rows=rows,
            set_sql=(
                "status = v.status, current_period_start = v.start, "
                "current_period_end = v.finish, auto_renew = v.renew, "
                "cancel_at_period_end = v.cancel_at_end, "
                "expired_at = CASE WHEN v.status = %(expired)s THEN t.expired_at ELSE NULL END, "
                "canceled_at = CASE WHEN v.status = %(canceled)s "
                "THEN COALESCE(t.canceled_at, %(now)s) ELSE t.canceled_at END, "
                "reconciliation_status = v.recon, reconciliation_error = v.error, "
                "last_stripe_sync_at = %(now)s, "
                "updated_at = CASE WHEN v.changed THEN %(now)s ELSE t.updated_at END"
            ),
            where_sql=(
                "t.status = v.old_status AND t.current_period_end = v.old_end "
                "AND t.auto_renew = v.old_renew"
            ),
            params={
                "expired": EXPIRED,
                "canceled": SubscriptionStatus.CANCELED.value,
                "now": now,
            },
            returning="id",
        )
        done = {row[0] for row in written}
        result.written = len(done)
        groups: dict[tuple[int, str, str, tuple[str, ...]], list[int]] = {}
        for d in decisions:
            fields = tuple(d.changed_fields)
            if d.local.id in done and fields:
                key = (d.local.organization_id, d.local.status, d.status, fields)
                groups.setdefault(key, []).append(d.local.id)
        result.changed = sum(len(ids) for ids in groups.values())
        if groups:
            keys = dict(
                Organization.objects.filter(id__in={g[0] for g in groups}).values_list("id", "key")
            )
            result.audit_records = record_bulk_audit(
                (
                    BulkChange(
                        tenant=keys.get(org, ""),
                        action="subscription.stripe_synced",
                        object_type=OBJECT_TYPE,
                        object_ids=ids,
                        changes={"status": [old, new], "fields": list(fields)},
                    )
                    for (org, old, new, fields), ids in sorted(groups.items())
                ),
                actor=actor,
                job_run_id=job_run_id,
                at=now,
            )
    return result


def mark_sync_errors(*, errors: dict[int, str], now: datetime) -> int:
    """Record on each row why it could not be synced."""
    from subscriptions.models import ReconciliationStatus

    return len(
        update_from_values(
            table=Subscription._meta.db_table,
            columns=[("id", "bigint"), ("error", "text")],
            rows=[(sub_id, message[:2000]) for sub_id, message in errors.items()],
            set_sql=(
                "reconciliation_status = %(error_status)s, reconciliation_error = v.error, "
                "last_stripe_sync_at = %(now)s"
            ),
            params={"error_status": ReconciliationStatus.ERROR.value, "now": now},
            returning="id",
        )
    )


@dataclass
class RenewalSyncResult(TenantRunResult):
    selected: int = 0
    fetched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    cancellations_sent: int = 0
    cancellations_pending: int = 0


class RenewalSync(TenantCalls):
    """Brings Stripe's view of renewing subscriptions into their local rows, batch
    by batch: Stripe reads on a thread pool (per-tenant limiter and breaker in
    the gateway), decisions in Python, one guarded UPDATE per batch.

    A local cancellation Stripe has not heard of is sent to it (unless
    `push_cancellations` is off or it is a dry run) with a deterministic
    idempotency key, so a rerun after a crash never sends it twice.
    """

    item_kind = "subscription"
    not_done = "subscription(s) not synced"
    thread_name_prefix = "sync"

    def __init__(
        self,
        *,
        now: datetime,
        actor: str,
        job_run_id: int | None = None,
        dry_run: bool = False,
        push_cancellations: bool = True,
        concurrency: int = 4,
        on_item_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, on_item_failure=on_item_failure)
        self.now = now
        self.actor = actor
        self.job_run_id = job_run_id
        self.dry_run = dry_run
        self.push_cancellations = push_cancellations
        self.result = RenewalSyncResult()

    def _fetch(self, local: LocalSubscription) -> tuple[str, Any]:
        return self._call(
            local.organization_id,
            lambda gateway: remote_subscription(
                gateway.retrieve_subscription(local.stripe_subscription_id)
            ),
        )

    def _push(self, decision: SyncDecision) -> str:
        """Send a local cancellation; returns an error message, or "" when sent."""
        local = decision.local
        org = local.organization_id
        period_end = local.current_period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind, value = self._call(
            org,
            lambda gateway: gateway.set_cancel_at_period_end(
                local.stripe_subscription_id,
                cancel=True,
                idempotency_key=f"org:{org}:renewal:{local.id}:{period_end}",
            ),
        )
        return "" if kind == OK else value

    def _tally(self, org: int, outcome: str) -> None:
        self.result.count(org, outcome)
        if outcome != SKIPPED:
            self.result.outcomes[outcome] = self.result.outcomes.get(outcome, 0) + 1

    def run_batch(self, batch: list[LocalSubscription]) -> None:
        from subscriptions.models import ReconciliationStatus as R

        r = self.result
        r.selected += len(batch)
        self._prepare({s.organization_id for s in batch})
        fetched = self._map(self._fetch, batch)
        decisions: list[SyncDecision] = []
        errors: dict[int, str] = {}
        for local, (kind, value) in zip(batch, fetched, strict=True):
            org = local.organization_id
            if kind == SKIPPED:
                self._tally(org, SKIPPED)
                continue
            if kind == ERROR:
                errors[local.id] = value
                continue
            r.fetched += 1
            decision = decide_sync(local, value, push_cancellations=self.push_cancellations)
            if decision.push_cancellation:
                if self.dry_run:
                    r.cancellations_pending += 1
                else:
                    failure = self._push(decision)
                    if failure:
                        errors[local.id] = f"sending the local cancellation: {failure}"
                        continue
                    decision.cancel_at_period_end = True
                    decision.reconciliation_status = R.SYNCED
                    decision.error = ""
                    r.cancellations_sent += 1
            elif decision.error == "local cancellation not yet sent to Stripe":
                r.cancellations_pending += 1
            decisions.append(decision)
            self._tally(org, str(decision.reconciliation_status).lower())
        for local in batch:
            if local.id in errors:
                self._item_failed(local.id, errors[local.id])
                self._tally(local.organization_id, ERROR)
        if self.dry_run:
            r.changed += sum(1 for d in decisions if d.changed_fields)
            return
        if errors:
            mark_sync_errors(errors=errors, now=self.now)
        written = write_sync(
            decisions=decisions, now=self.now, actor=self.actor, job_run_id=self.job_run_id
        )
        r.changed += written.changed
        r.audit_records += written.audit_records


# --- what invoices say about an organization ------------------------------------------

BILLING_DETAIL_FIELDS = (
    "legal_name",
    "billing_address",
    "country",
    "tax_id",
    "tax_rate_bps",
    "tax_name",
    "stripe_bills_plan_fees",
)


def update_billing_details(
    *, organization: Organization, actor: str, **changes: Any
) -> Organization:
    """Set the organization's invoice details (legal name, address, country,
    tax id, tax rate and name, whether Stripe bills its plan fees), audited.
    A ValueError naming the problem, and nothing written, for an unknown
    field, a tax rate outside 0-10000 bps (0-100%) or a country that is not
    an ISO 3166 code of two capitals."""
    unknown = sorted(set(changes) - set(BILLING_DETAIL_FIELDS))
    if unknown:
        raise ValueError(f"not a billing detail: {', '.join(unknown)}")
    rate = changes.get("tax_rate_bps")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise ValueError(f"tax_rate_bps must be a whole number of basis points, got {rate!r}")
    before = {name: getattr(organization, name) for name in changes}
    for name, value in changes.items():
        setattr(organization, name, value)
    try:
        organization.clean_fields(
            exclude=[f.name for f in Organization._meta.fields if f.name not in changes]
        )
    except ValidationError as exc:
        for name, value in before.items():
            setattr(organization, name, value)
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise ValueError(problems) from None
    with transaction.atomic():
        organization.save(update_fields=list(changes))
        record_audit(
            actor=actor,
            action="organization.billing_details_changed",
            object_type="subscriptions.organization",
            object_id=organization.pk,
            changes={name: [before[name], changes[name]] for name in changes},
            tenant=organization.key,
        )
    return organization

"""Renewal and payment-due reminders (`subscriptions.send_renewal_reminders`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from notifications.services import EmailTemplate, queue_from_query, render_sql
from subscriptions.models import (
    Organization,
    OrganizationStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)

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

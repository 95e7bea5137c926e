"""Renewal and payment-due reminders (`subscriptions.send_renewal_reminders`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet, TextField, Value
from django.db.models.functions import Cast, Concat

from core.sql import UtcText
from notifications.services import EmailTemplate, Variant, queue_from_queryset
from subscriptions.models import (
    OrganizationStatus,
    Subscription,
    SubscriptionStatus,
)

RENEWAL_REMINDER = "subscriptions.renewal_reminder"
PAYMENT_DUE = "subscriptions.payment_due"


@dataclass
class ReminderResult:
    renewal: int = 0
    payment_due: int = 0


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
    due = Subscription.objects.filter(organization__status=OrganizationStatus.ACTIVE).exclude(
        organization__billing_email=""
    )
    if organization_id:
        due = due.filter(organization_id=organization_id)
    fields = ("organization_name", "plan_name", "period_end")

    def rows(subscriptions: QuerySet[Subscription], kind: str) -> QuerySet[Any]:
        """One row per reminder: recipient, dedupe key (subscription and period)
        and the values the templates print."""
        return subscriptions.values(
            "organization_id",
            "auto_renew",
            to=F("organization__billing_email"),
            organization_name=F("organization__name"),
            plan_name=F("plan__name"),
            period_end=UtcText("current_period_end"),
            dedupe_key=Concat(
                Value(f"{kind}:sub"),
                Cast("id", TextField()),
                Value(":"),
                UtcText("current_period_end", seconds=True),
                output_field=TextField(),
            ),
        )

    result = ReminderResult()
    with transaction.atomic():
        renewal = EmailTemplate("subscription_renewal_reminder")
        result.renewal = queue_from_queryset(
            rows(
                due.filter(
                    status__in=[SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE],
                    current_period_end__gt=slot,
                    current_period_end__lte=slot + timedelta(days=days),
                ),
                RENEWAL_REMINDER,
            ),
            kind=RENEWAL_REMINDER,
            variants=[
                Variant(renewal, {"auto_renew": True}, when="auto_renew"),
                Variant(renewal, {"auto_renew": False}),
            ],
            fields=fields,
            dry_run=dry_run,
        )
        result.payment_due = queue_from_queryset(
            rows(due.filter(status=SubscriptionStatus.PAST_DUE), PAYMENT_DUE),
            kind=PAYMENT_DUE,
            variants=[Variant(EmailTemplate("subscription_payment_due"), {})],
            fields=fields,
            dry_run=dry_run,
        )
    return result

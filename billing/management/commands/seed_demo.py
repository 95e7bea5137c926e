"""Demo data for `make run`: a few organizations with subscriptions in every state,
and their recent usage (billing.demo).

Idempotent: organizations and plans are found by their natural keys, and an
organization's subscriptions are created only when it has none, so running it
on every start never duplicates anything (and never undoes what the expiry
job or staff changed since).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing.demo import seed_usage_demo
from subscriptions.models import Organization, Plan, Subscription, SubscriptionStatus

# An organization is invoiced in one currency, so each buys plans in its own.
ORGANIZATIONS = [
    ("org_acme", "Acme Corp", "billing@acme.example", "EUR"),
    ("org_globex", "Globex", "accounts@globex.example", "EUR"),
    ("org_initech", "Initech", "finance@initech.example", "USD"),
]
# What their invoices say about them.
BILLING_DETAILS = {
    "org_acme": {
        "legal_name": "Acme Corporation GmbH",
        "billing_address": "Friedrichstrasse 100\n10117 Berlin",
        "country": "DE",
        "tax_id": "DE123456789",
    },
    "org_globex": {
        "legal_name": "Globex SARL",
        "billing_address": "8 rue de Rivoli\n75004 Paris",
        "country": "FR",
        "tax_id": "FR40303265045",
    },
    "org_initech": {
        "legal_name": "Initech, Inc.",
        "billing_address": "4120 Freidrich Lane\nAustin, TX 78744",
        "country": "US",
    },
}
PLANS = [
    ("Starter", 900, "EUR", "month"),
    ("Pro", 2900, "EUR", "month"),
    ("Enterprise", 99000, "EUR", "year"),
    ("Starter", 1000, "USD", "month"),
    ("Pro", 3200, "USD", "month"),
    ("Enterprise", 109000, "USD", "year"),
]

S = SubscriptionStatus
# (status, period end relative to now, expired/suspended/canceled offset) per
# organization: 11 running subscriptions of which 2 are due (18%, under the
# default 20% guard), one expired in grace, one past grace, and the rest.
LAYOUT = [
    (S.TRIALING, timedelta(days=10), None),
    (S.TRIALING, timedelta(days=3), None),
    (S.ACTIVE, timedelta(days=20), None),
    (S.ACTIVE, timedelta(days=15), None),
    (S.ACTIVE, timedelta(days=9), None),
    (S.ACTIVE, timedelta(days=4), None),
    (S.ACTIVE, timedelta(hours=30), None),
    (S.ACTIVE, -timedelta(hours=2), None),  # due to expire
    (S.PAST_DUE, timedelta(days=2), None),
    (S.PAST_DUE, timedelta(days=1), None),
    (S.PAST_DUE, -timedelta(minutes=30), None),  # due to expire
    (S.EXPIRED, -timedelta(days=3), -timedelta(days=3)),  # in grace
    (S.EXPIRED, -timedelta(days=9), -timedelta(days=8)),  # past grace: due to suspend
    (S.SUSPENDED, -timedelta(days=40), -timedelta(days=30)),
    (S.CANCELED, timedelta(days=12), -timedelta(days=5)),
]


class Command(BaseCommand):
    help = "Create demo organizations, plans and subscriptions (idempotent)."

    def handle(self, *args, **options) -> None:
        now = timezone.now().replace(second=0, microsecond=0)
        created: list[str] = []
        with transaction.atomic():
            plans = []
            for name, price, currency, interval in PLANS:
                plan, new = Plan.objects.get_or_create(
                    name=name, currency=currency, interval=interval, defaults={"price_minor": price}
                )
                plans.append(plan)
                if new:
                    created.append(f"plan {plan}")
            for key, name, email, currency in ORGANIZATIONS:
                org, new = Organization.objects.get_or_create(
                    key=key,
                    defaults={"name": name, "billing_email": email, **BILLING_DETAILS[key]},
                )
                if new:
                    created.append(f"organization {org}")
                if org.subscriptions.exists():
                    continue
                offered = [plan for plan in plans if plan.currency == currency]
                subs = [
                    self._subscription(org, offered[i % len(offered)], row, now, i)
                    for i, row in enumerate(LAYOUT)
                ]
                Subscription.objects.bulk_create(subs)
                created.append(f"{len(subs)} subscriptions for {key} (every status)")
            created += seed_usage_demo(organization_keys=[key for key, *_ in ORGANIZATIONS])
        if created:
            for line in created:
                self.stdout.write(f"created {line}")
        else:
            self.stdout.write("demo data already present; nothing created")

    @staticmethod
    def _subscription(org: Organization, plan: Plan, row, now, n: int = 0) -> Subscription:
        """The current period ends at the row's offset from now and lasts the
        plan's interval (30 days, or a year). Trials began with their period;
        the others were bought months ago, so the monthly invoice run bills
        every organization whatever the day (billing.services.build)."""
        status, end_offset, state_offset = row
        end = now + end_offset
        length = timedelta(days=365) if plan.interval == "year" else timedelta(days=30)
        start = end - length
        bought = min(start, now) if status == S.TRIALING else now - timedelta(days=95 + 11 * n)
        sub = Subscription(
            organization=org,
            plan=plan,
            status=status,
            current_period_start=start,
            current_period_end=end,
            auto_renew=status in (S.TRIALING, S.ACTIVE, S.PAST_DUE),
            created_at=min(bought, start),
        )
        if status in (S.EXPIRED, S.SUSPENDED):
            sub.expired_at = now + state_offset
        if status == S.SUSPENDED:
            sub.suspended_at = sub.expired_at + timedelta(days=7)
        if status == S.CANCELED:
            sub.canceled_at = now + state_offset
        return sub

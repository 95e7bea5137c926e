from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import RunStatus
from jobs.runner import run_job
from notifications.models import OutboundEmail
from notifications.services import EmailTemplate
from subscriptions.models import SubscriptionStatus
from subscriptions.services.reminders import PAYMENT_DUE, RENEWAL_REMINDER, queue_renewal_reminders
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

SLOT = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


def ending(days: float, **kwargs):
    end = SLOT + timedelta(days=days)
    return SubscriptionFactory(
        current_period_end=end, current_period_start=end - timedelta(days=30), **kwargs
    )


def test_subscriptions_ending_within_the_window_get_one_renewal_reminder():
    soon = ending(6.5, organization=OrganizationFactory(name="Acme <Corp>"))
    ending(8)  # outside the window
    ending(-1)  # already ended: expiry's business
    ending(3, status=SubscriptionStatus.CANCELED, canceled_at=SLOT)

    run = run_job("subscriptions.send_renewal_reminders", slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["renewal_reminders_queued"] == 1
    email = OutboundEmail.objects.get()
    assert email.kind == RENEWAL_REMINDER
    assert email.to == soon.organization.billing_email
    assert email.organization_id == soon.organization_id
    assert email.dedupe_key == f"{RENEWAL_REMINDER}:sub{soon.pk}:2030-03-07T21:00:00"
    assert email.subject == f"Your {soon.plan.name} subscription renews on 2030-03-07 21:00"
    assert "Hello Acme <Corp>," in email.body_text
    assert "renews automatically" in email.body_text
    assert "Acme &lt;Corp&gt;" in email.body_html


def test_reminders_render_exactly_like_the_templates():
    sub = ending(2, auto_renew=False, organization=OrganizationFactory(name='O\'Neil & "Sons"'))

    queue_renewal_reminders(slot=SLOT, days=7)

    email = OutboundEmail.objects.get()
    expected = EmailTemplate("subscription_renewal_reminder").render(
        {
            "organization_name": sub.organization.name,
            "plan_name": sub.plan.name,
            "period_end": "2030-03-03 09:00",
            "auto_renew": False,
        }
    )
    assert (email.subject, email.body_text, email.body_html) == (
        expected.subject,
        expected.body_text,
        expected.body_html,
    )


def test_running_twice_queues_once():
    ending(1)
    ending(2, status=SubscriptionStatus.PAST_DUE)

    first = queue_renewal_reminders(slot=SLOT, days=7)
    second = queue_renewal_reminders(slot=SLOT + timedelta(hours=3), days=7)
    next_day = run_job("subscriptions.send_renewal_reminders", slot=SLOT + timedelta(days=1))

    assert (first.renewal, first.payment_due) == (1, 1)
    assert (second.renewal, second.payment_due) == (0, 0)
    assert next_day.summary["renewal_reminders_queued"] == 0
    assert OutboundEmail.objects.count() == 2


def test_past_due_subscriptions_get_a_payment_due_reminder():
    plan = PlanFactory(name="Pro")
    sub = ending(20, status=SubscriptionStatus.PAST_DUE, plan=plan)

    queue_renewal_reminders(slot=SLOT, days=7)

    email = OutboundEmail.objects.get()
    assert email.kind == PAYMENT_DUE
    assert email.subject == "Payment due for your Pro subscription"
    assert email.dedupe_key.startswith(f"{PAYMENT_DUE}:sub{sub.pk}:")


def test_days_param_and_tenant():
    a = ending(10)
    ending(10)

    run = run_job(
        "subscriptions.send_renewal_reminders",
        params={"days": 14},
        tenant=a.organization.key,
        slot=SLOT,
    )

    assert run.summary["renewal_reminders_queued"] == 1
    assert OutboundEmail.objects.get().organization_id == a.organization_id


def test_dry_run_counts_and_queues_nothing():
    ending(1)
    ending(2)
    ending(3, status=SubscriptionStatus.PAST_DUE)
    queue_renewal_reminders(slot=SLOT, days=1)  # the 1-day one and the past-due one

    run = run_job("subscriptions.send_renewal_reminders", slot=SLOT, dry_run=True)

    assert run.summary["would_queue_renewal"] == 1
    assert run.summary["would_queue_payment_due"] == 0
    assert OutboundEmail.objects.count() == 2

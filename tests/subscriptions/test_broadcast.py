"""notifications.send_bulk: broadcasts to organizations (subscriptions.services.broadcast)."""

import pytest

from jobs.models import RunStatus
from jobs.runner import run_job
from notifications.models import EmailStatus, OutboundEmail
from subscriptions.models import OrganizationStatus
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_send_bulk_queues_one_email_per_chosen_organization():
    a = OrganizationFactory(key="org_a", name="A & Co")
    OrganizationFactory(key="org_b")

    run = run_job(
        "notifications.send_bulk",
        params={
            "subject": "Maintenance on Sunday",
            "message": "We will be down.",
            "organizations": "org_a,org_missing",
            "campaign": "sunday",
        },
    )

    assert run.status == RunStatus.PARTIAL  # the unknown key is an item failure
    assert run.failures.get().item_key == "organization:org_missing"
    email = OutboundEmail.objects.get()
    assert email.to == a.billing_email
    assert email.subject == "Maintenance on Sunday"
    assert "Hello A & Co," in email.body_text and "We will be down." in email.body_text
    assert email.status == EmailStatus.QUEUED
    assert email.dedupe_key == f"notifications.bulk.announcement:sunday:org{a.pk}"


def test_send_bulk_to_all_active_organizations_once_per_campaign():
    OrganizationFactory.create_batch(3)
    OrganizationFactory(status=OrganizationStatus.CLOSED)
    params = {"subject": "News", "campaign": "news-1"}

    first = run_job("notifications.send_bulk", params=params)
    again = run_job("notifications.send_bulk", params=params)
    dry = run_job("notifications.send_bulk", params={"subject": "x"}, dry_run=True)

    assert first.summary["queued"] == 3
    assert again.summary["queued"] == 0 and again.summary["already_queued"] == 3
    assert dry.summary["would_queue"] == 3
    assert OutboundEmail.objects.count() == 3

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from audit.models import AuditTrail
from jobs.models import RunStatus
from jobs.runner import run_job
from notifications.models import OutboundEmail
from subscriptions.models import Subscription, SubscriptionStatus
from subscriptions.services import expiry as services
from tests.factories import OrganizationFactory, SubscriptionFactory

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_overlapping_tenant_and_global_runs_change_and_audit_each_subscription_once(
    settings, monkeypatch
):
    """A tenant run holds its row locks; the global run for the same slot waits
    on them, rechecks its WHERE on the new row versions and skips them."""
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 100
    org_a, org_b = OrganizationFactory(key="org_a"), OrganizationFactory(key="org_b")
    subs = [
        SubscriptionFactory(organization=org, current_period_end=SLOT - timedelta(hours=1))
        for org in (org_a, org_a, org_b)
    ]
    tenant_run_updated = threading.Event()
    real_queue_digests = services._queue_digests

    def slow_queue_digests(groups, **kwargs):
        if threading.current_thread().name == "tenant-run":
            tenant_run_updated.set()
            time.sleep(1.0)  # keep the transaction (and its row locks) open
        return real_queue_digests(groups, **kwargs)

    monkeypatch.setattr(services, "_queue_digests", slow_queue_digests)
    runs = {}

    def run(name, tenant):
        try:
            runs[name] = run_job("subscriptions.expire", tenant=tenant, slot=SLOT)
        finally:
            connection.close()

    tenant_thread = threading.Thread(target=run, args=("tenant", "org_a"), name="tenant-run")
    tenant_thread.start()
    assert tenant_run_updated.wait(10)
    global_thread = threading.Thread(target=run, args=("global", ""), name="global-run")
    global_thread.start()
    tenant_thread.join(30)
    global_thread.join(30)

    assert runs["tenant"].status == RunStatus.SUCCEEDED, runs["tenant"].error
    assert runs["global"].status == RunStatus.SUCCEEDED, runs["global"].error
    assert runs["tenant"].summary["expired"] == 2
    assert runs["global"].summary["expired"] == 1
    assert set(Subscription.objects.values_list("status", flat=True)) == {
        SubscriptionStatus.EXPIRED
    }
    audited = [i for ids in AuditTrail.objects.values_list("object_ids", flat=True) for i in ids]
    assert sorted(audited) == sorted(s.pk for s in subs)
    assert OutboundEmail.objects.count() == 2  # one digest per organization


@pytest.mark.postgres
@pytest.mark.django_db
def test_digests_rendered_by_the_database_equal_djangos_rendering(settings):
    """On PostgreSQL the digests are queued by one INSERT ... SELECT per kind,
    the template rendered once with holes the database fills; each must be
    byte for byte what Django renders for that organization and count."""
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 100
    one = OrganizationFactory(key="org_one", name='Tom & "Jerry" <Ltd>')
    two = OrganizationFactory(key="org_two", name="O'Brien")
    for org in (one, two, two):
        SubscriptionFactory(organization=org, current_period_end=SLOT - timedelta(hours=1))
    SubscriptionFactory(organization=two, expired=True, expired_at=SLOT - timedelta(days=30))

    run = run_job("subscriptions.expire", slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    renderer = services._DigestRenderer(slot=SLOT, grace_days=7)
    expected = {
        (org.pk, status): renderer.draft(
            organization_id=org.pk,
            status=status,
            count=n,
            name=org.name,
            email=org.billing_email,
        )
        for org, status, n in [(one, "expired", 1), (two, "expired", 2), (two, "suspended", 1)]
    }
    queued = {(e.organization_id, e.kind.split(".")[1]): e for e in OutboundEmail.objects.all()}
    assert set(queued) == set(expected)
    for key, draft in expected.items():
        email = queued[key]
        assert (email.subject, email.body_text, email.body_html) == (
            draft.subject,
            draft.body_text,
            draft.body_html,
        ), key
        assert (email.to, email.dedupe_key) == (draft.to, draft.dedupe_key)

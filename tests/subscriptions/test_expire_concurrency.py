import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from jobs.models import RunStatus
from jobs.runner import run_job
from maintenance.models import AuditTrail
from notifications.models import OutboundEmail
from subscriptions import services
from subscriptions.models import Subscription, SubscriptionStatus
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
    real_queue_bulk = services.queue_bulk

    def slow_queue_bulk(**kwargs):
        if threading.current_thread().name == "tenant-run":
            tenant_run_updated.set()
            time.sleep(1.0)  # keep the transaction (and its row locks) open
        return real_queue_bulk(**kwargs)

    monkeypatch.setattr(services, "queue_bulk", slow_queue_bulk)
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
@pytest.mark.django_db(transaction=True)
def test_digests_rendered_ahead_are_used_only_when_their_count_matches(settings, monkeypatch):
    """On PostgreSQL the digests are rendered by a thread while the UPDATE runs;
    one whose count differs from what really changed is rendered again."""
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 100
    calm = OrganizationFactory(key="org_calm", name="Calm")
    moved = OrganizationFactory(key="org_moved", name="Moved")
    for org in (calm, calm, moved):
        SubscriptionFactory(organization=org, current_period_end=SLOT - timedelta(hours=1))
    rendered_by = []
    real_draft = services._DigestRenderer.draft
    real_run = services._Prerender.run

    def recording_draft(self, **kwargs):
        rendered_by.append((kwargs["organization_id"], threading.current_thread().name))
        return real_draft(self, **kwargs)

    def stale_run(self):
        real_run(self)
        count, draft = self.drafts[(moved.pk, "expired")]
        self.drafts[(moved.pk, "expired")] = (count + 1, draft)  # as if a row changed

    monkeypatch.setattr(services._DigestRenderer, "draft", recording_draft)
    monkeypatch.setattr(services._Prerender, "run", stale_run)

    run = run_job("subscriptions.expire", slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    subjects = dict(OutboundEmail.objects.values_list("organization__key", "subject"))
    assert subjects == {
        "org_calm": "2 subscriptions of Calm have expired",
        "org_moved": "A subscription of Moved has expired",
    }
    assert (calm.pk, "expire-prerender") in rendered_by
    assert (moved.pk, "MainThread") in rendered_by
    assert (calm.pk, "MainThread") not in rendered_by

"""payments.reconcile: open payments checked against their PaymentIntents on localstripe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditTrail
from jobs.enqueue import enqueue_run
from jobs.models import JobItemFailure, RunStatus
from jobs.runner import run_job
from payments.models import Payment, PaymentStatus
from subscriptions.models import Subscription, SubscriptionStatus
from tests.factories import (
    OrganizationFactory,
    PaymentFactory,
    PaymentProviderConfigFactory,
    SubscriptionFactory,
)
from tests.payments.intents import intent

pytestmark = pytest.mark.django_db
S = SubscriptionStatus


def pay(org, state, *, subscription=None, age=timedelta(hours=1), **kwargs) -> Payment:
    return PaymentFactory(
        organization=org,
        subscription=subscription,
        provider_reference=intent(org, state),
        created_at=timezone.now() - age,
        **kwargs,
    )


def reconcile(**kwargs):
    return run_job("payments.reconcile", **kwargs)


def fresh(obj):
    obj.refresh_from_db()
    return obj


def test_open_payments_move_to_what_stripe_says(stripe_org):
    succeeded = pay(stripe_org, "succeeded")
    failed = pay(stripe_org, "failed")
    canceled = pay(stripe_org, "canceled")
    still_open = pay(stripe_org, "open")

    run = reconcile()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert fresh(succeeded).status == PaymentStatus.SUCCEEDED
    assert succeeded.succeeded_at is not None
    assert fresh(failed).status == PaymentStatus.FAILED
    assert failed.failure_reason == "Your card was declined."
    assert fresh(canceled).status == PaymentStatus.CANCELED
    assert fresh(still_open).status == PaymentStatus.PENDING
    assert still_open.attempts == 1 and still_open.last_checked_at is not None
    assert run.summary["succeeded"] == 1
    assert run.summary["failed"] == 1
    assert run.summary["canceled"] == 1
    assert run.summary["still_open"] == 1
    assert run.summary["checked"] == 4


def test_only_payments_open_for_more_than_30_minutes_are_checked(stripe_org, localstripe):
    young = pay(stripe_org, "succeeded", age=timedelta(minutes=10))
    localstripe.clear_requests()

    run = reconcile()

    assert run.summary["due"] == 0
    assert fresh(young).status == PaymentStatus.PENDING
    assert localstripe.requests() == []


def test_a_paid_subscription_is_renewed_and_made_active(stripe_org):
    end = timezone.now() + timedelta(days=2)
    past_due = SubscriptionFactory(
        organization=stripe_org, status=S.PAST_DUE, current_period_end=end
    )
    expired = SubscriptionFactory(organization=stripe_org, expired=True, current_period_end=end)
    pay(stripe_org, "succeeded", subscription=past_due)
    pay(stripe_org, "succeeded", subscription=expired)

    run = reconcile()

    for sub in (fresh(past_due), fresh(expired)):
        assert sub.status == S.ACTIVE
        assert sub.current_period_start == end
        assert sub.current_period_end.month == (end.month % 12) + 1
        assert sub.expired_at is None
    assert run.summary["subscriptions_renewed"] == 2


def test_a_failed_payment_makes_its_subscription_past_due(stripe_org):
    sub = SubscriptionFactory(organization=stripe_org)
    pay(stripe_org, "failed", subscription=sub)

    run = reconcile()

    assert fresh(sub).status == S.PAST_DUE
    assert run.summary["subscriptions_past_due"] == 1


def test_each_transition_is_audited(stripe_org):
    sub = SubscriptionFactory(organization=stripe_org, status=S.PAST_DUE)
    paid = pay(stripe_org, "succeeded", subscription=sub)

    run = reconcile()

    payment_audit = AuditTrail.objects.get(object_type="payments.payment")
    assert payment_audit.action == "payment.succeeded"
    assert payment_audit.object_ids == [paid.pk]
    assert payment_audit.changes == {"status": ["pending", "succeeded"]}
    assert payment_audit.job_run_id == run.pk
    assert payment_audit.tenant == stripe_org.key
    sub_audit = AuditTrail.objects.get(object_type="subscriptions.subscription")
    assert sub_audit.action == "subscription.renewed"
    assert sub_audit.object_ids == [sub.pk]
    assert sub_audit.changes["status"] == ["past_due", "active"]


def test_a_second_run_changes_nothing(stripe_org):
    sub = SubscriptionFactory(organization=stripe_org, status=S.PAST_DUE)
    pay(stripe_org, "succeeded", subscription=sub)
    pay(stripe_org, "failed")
    reconcile()
    period = fresh(sub).current_period_end
    audits = AuditTrail.objects.count()

    again = reconcile()

    assert again.summary["due"] == 0
    assert fresh(sub).current_period_end == period
    assert AuditTrail.objects.count() == audits


def test_dry_run_reads_stripe_and_writes_nothing(stripe_org, localstripe):
    sub = SubscriptionFactory(organization=stripe_org, status=S.PAST_DUE)
    payment = pay(stripe_org, "succeeded", subscription=sub)
    localstripe.clear_requests()

    run = reconcile(dry_run=True)

    assert run.summary["would_succeeded"] == 1
    assert fresh(payment).status == PaymentStatus.PENDING and payment.attempts == 0
    assert fresh(sub).status == S.PAST_DUE
    assert not AuditTrail.objects.filter(object_type="payments.payment").exists()
    assert {r["method"] for r in localstripe.requests()} == {"GET"}


def test_an_unknown_intent_is_an_item_failure_and_the_run_goes_on(stripe_org):
    missing = PaymentFactory(organization=stripe_org, provider_reference="pi_missing")
    ok = pay(stripe_org, "succeeded")

    run = reconcile()

    assert run.status == RunStatus.PARTIAL
    assert fresh(ok).status == PaymentStatus.SUCCEEDED
    failure = JobItemFailure.objects.get(run=run)
    assert failure.item_key == f"payment:{missing.pk}"
    assert "pi_missing" in failure.error


def test_a_tenant_with_an_open_breaker_fails_fast_and_others_complete(stripe_settings, localstripe):
    calm = PaymentProviderConfigFactory(secret_key="sk_test_calm_0000000abcd").organization
    storm = PaymentProviderConfigFactory(secret_key="sk_test_stormy_000000abcd").organization
    calm_payments = [pay(calm, "succeeded") for _ in range(3)]
    storm_payments = [pay(storm, "succeeded") for _ in range(10)]
    localstripe.add_fault(status=429, times=10_000, api_key="sk_test_stormy_000000abcd")
    localstripe.clear_requests()

    run = reconcile(params={"concurrency": 1})

    assert run.status == RunStatus.PARTIAL
    assert all(fresh(p).status == PaymentStatus.SUCCEEDED for p in calm_payments)
    assert all(fresh(p).status == PaymentStatus.PENDING for p in storm_payments)
    stormy_calls = [r for r in localstripe.requests() if r["api_key"].startswith("sk_test_st")]
    assert len(stormy_calls) == 3 * 3  # breaker opened after 3 calls (x3 tries each)
    # Two rate-limited item failures; the third call opened the breaker, so it
    # and the seven after it were not checked.
    assert run.summary["errors"] == 2
    assert run.summary["skipped"] == 8
    assert storm.key in run.summary["tenants_failed"]
    keys = set(JobItemFailure.objects.filter(run=run).values_list("item_key", flat=True))
    assert f"tenant:{storm.key}" in keys
    assert not any(k == f"tenant:{calm.key}" for k in keys)


def test_a_tenant_run_checks_only_that_tenant(stripe_settings):
    a = PaymentProviderConfigFactory().organization
    b = PaymentProviderConfigFactory().organization
    pa, pb = pay(a, "succeeded"), pay(b, "succeeded")

    run = reconcile(tenant=a.key)

    assert fresh(pa).status == PaymentStatus.SUCCEEDED
    assert fresh(pb).status == PaymentStatus.PENDING
    assert run.summary["checked"] == 1


def test_tenants_without_stripe_are_left_out(stripe_settings):
    org = OrganizationFactory()
    payment = PaymentFactory(organization=org)

    run = reconcile()

    assert run.summary["due"] == 0
    assert fresh(payment).status == PaymentStatus.PENDING


@pytest.mark.usefixtures("empty_broker")
def test_rerun_failed_items_checks_only_those(
    stripe_org, drain_queue, django_capture_on_commit_callbacks
):
    missing = PaymentFactory(organization=stripe_org, provider_reference="pi_missing")
    first = reconcile()
    other = pay(stripe_org, "succeeded")
    keys = list(JobItemFailure.objects.filter(run=first).values_list("item_key", flat=True))
    assert keys == [f"payment:{missing.pk}"]

    with django_capture_on_commit_callbacks(execute=True):
        rerun, _ = enqueue_run("payments.reconcile", rerun_of=first, only_items=keys)
    drain_queue()

    rerun.refresh_from_db()
    assert rerun.summary["due"] == 1
    assert fresh(other).status == PaymentStatus.PENDING


def test_many_payments_on_a_thread_pool(stripe_org):
    payments = [pay(stripe_org, state) for state in ["succeeded", "failed", "open"] * 10]

    run = reconcile(params={"concurrency": 8, "batch_size": 7})

    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["succeeded"] == 10 and run.summary["failed"] == 10
    statuses = Payment.objects.filter(pk__in=[p.pk for p in payments]).values_list(
        "status", flat=True
    )
    assert sorted(set(statuses)) == ["failed", "pending", "succeeded"]
    assert Subscription.objects.count() == 0


def test_the_jobs_are_declared_with_their_schedules():
    from jobs.registry import get_job

    reconcile_spec = get_job("payments.reconcile")
    assert (reconcile_spec.schedule, reconcile_spec.queue) == ("*/30 * * * *", "critical")
    assert reconcile_spec.supports_item_rerun
    sync_spec = get_job("subscriptions.sync_renewals")
    assert sync_spec.schedule is not None
    assert {p.name: p.default for p in sync_spec.params}["batch_size"] == 100
    assert {p.name: p.default for p in sync_spec.params}["max_subscriptions"] == 10_000


def test_overlapping_runs_transition_each_payment_once(stripe_org):
    """Two runs that both read the payment as open: only the first write counts."""
    from payments.selectors import open_payments_due
    from payments.services import PaymentReconciler

    sub = SubscriptionFactory(organization=stripe_org, status=S.PAST_DUE)
    pay(stripe_org, "succeeded", subscription=sub)
    due = open_payments_due(older_than=timezone.now(), limit=10)
    first = PaymentReconciler(now=timezone.now(), actor="test:first")
    second = PaymentReconciler(now=timezone.now(), actor="test:second")
    checked_first, checked_second = first.check(due), second.check(due)

    first.apply(checked_first)
    period = fresh(sub).current_period_end
    second.apply(checked_second)

    assert first.result.subscriptions_renewed == 1
    assert second.result.subscriptions_renewed == 0
    assert second.result.audit_records == 0
    assert fresh(sub).current_period_end == period
    assert AuditTrail.objects.filter(actor="test:second").count() == 0

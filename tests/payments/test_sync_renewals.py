"""subscriptions.sync_renewals: subscriptions renewing soon, synced with Stripe (localstripe)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import AuditTrail
from jobs.models import JobItemFailure, RunStatus
from jobs.runner import run_job
from payments import subscription_sync
from payments.gateway import gateway_for
from subscriptions.models import ReconciliationStatus, Subscription, SubscriptionStatus
from subscriptions.selectors import subscriptions_to_sync
from tests.factories import PaymentProviderConfigFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db
S = SubscriptionStatus
R = ReconciliationStatus


def stripe_subscription(org, *, cancel_at_period_end: bool = False, canceled: bool = False):
    """A paying Stripe subscription of `org` on localstripe: (id, period end)."""
    c = gateway_for(org).client.v1
    plan_id = f"pro-{uuid.uuid4().hex[:12]}"
    c.plans.create(
        params={
            "id": plan_id,
            "amount": 2900,
            "currency": "eur",
            "interval": "month",
            "product": {"name": "Pro"},
        }
    )
    customer = c.customers.create(params={"email": f"owner@{org.key}.example"})
    method = c.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    c.payment_methods.attach(method.id, params={"customer": customer.id})
    c.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    sub = c.subscriptions.create(params={"customer": customer.id, "items": [{"plan": plan_id}]})
    if cancel_at_period_end:
        c.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    if canceled:
        c.subscriptions.cancel(sub.id)
    return sub.id, datetime.fromtimestamp(sub.current_period_end, UTC)


def renewing(org, *, days: float = 3, **kwargs) -> Subscription:
    """A local subscription linked to a fresh Stripe one, ending in `days`."""
    stripe_id, _ = stripe_subscription(
        org, **{k: kwargs.pop(k) for k in ("cancel_at_period_end", "canceled") if k in kwargs}
    )
    return SubscriptionFactory(
        organization=org,
        stripe_subscription_id=stripe_id,
        current_period_end=timezone.now() + timedelta(days=days),
        **kwargs,
    )


def sync(**kwargs):
    return run_job("subscriptions.sync_renewals", **kwargs)


def fresh(sub: Subscription) -> Subscription:
    sub.refresh_from_db()
    return sub


def test_stripe_renewal_is_brought_into_the_local_row(stripe_org):
    sub = renewing(stripe_org, status=S.PAST_DUE)

    run = sync()

    assert run.status == RunStatus.SUCCEEDED, run.error
    sub = fresh(sub)
    assert sub.status == S.ACTIVE
    assert sub.current_period_end > timezone.now() + timedelta(days=20)  # Stripe's new period
    assert sub.reconciliation_status == R.SYNCED
    assert sub.reconciliation_error == ""
    assert sub.last_stripe_sync_at is not None
    assert run.summary["synced"] == 1 and run.summary["changed"] == 1
    audit = AuditTrail.objects.get(action="subscription.stripe_synced")
    assert audit.object_ids == [sub.pk]
    assert audit.changes["status"] == ["past_due", "active"]


def test_stripe_cancel_at_period_end_turns_auto_renew_off(stripe_org):
    sub = renewing(stripe_org, cancel_at_period_end=True)

    sync()

    sub = fresh(sub)
    assert sub.cancel_at_period_end is True
    assert sub.auto_renew is False
    assert sub.reconciliation_status == R.SYNCED


def test_a_subscription_canceled_in_stripe_is_canceled_here(stripe_org):
    sub = renewing(stripe_org, canceled=True)

    sync()

    sub = fresh(sub)
    assert sub.status == S.CANCELED and sub.canceled_at is not None


def test_a_local_cancellation_not_yet_sent_is_a_mismatch_and_is_sent(stripe_org, localstripe):
    sub = renewing(stripe_org, auto_renew=False)
    localstripe.clear_requests()

    run = sync()

    sub = fresh(sub)
    assert sub.auto_renew is False  # the local side is the authority
    assert sub.cancel_at_period_end is True
    assert sub.reconciliation_status == R.SYNCED
    assert run.summary["cancellations_sent"] == 1
    (write,) = localstripe.writes()
    assert write["path"] == f"/v1/subscriptions/{sub.stripe_subscription_id}"
    end = sub.current_period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert write["idempotency_key"] == f"org:{stripe_org.pk}:renewal:{sub.pk}:{end}"


def test_without_pushing_a_local_cancellation_stays_a_reported_mismatch(stripe_org, localstripe):
    sub = renewing(stripe_org, auto_renew=False)
    before = fresh(sub).current_period_end
    localstripe.clear_requests()

    run = sync(params={"push_cancellations": False})

    sub = fresh(sub)
    assert sub.reconciliation_status == R.MISMATCH
    assert sub.reconciliation_error == "local cancellation not yet sent to Stripe"
    assert sub.current_period_end == before and sub.auto_renew is False
    assert run.summary["mismatch"] == 1 and run.summary["cancellations_not_sent"] == 1
    assert localstripe.writes() == []


def test_a_locally_canceled_subscription_is_never_reopened(stripe_org):
    sub = renewing(
        stripe_org, canceled=False, status=S.CANCELED, canceled_at=timezone.now(), auto_renew=False
    )

    sync()
    sync(slot=timezone.now() + timedelta(seconds=1))

    sub = fresh(sub)
    assert sub.status == S.CANCELED
    assert sub.reconciliation_status == R.SYNCED


def test_a_period_already_advanced_here_is_kept_and_reported(stripe_org):
    sub = renewing(stripe_org, days=3)
    Subscription.objects.filter(pk=sub.pk).update(
        current_period_end=timezone.now() + timedelta(days=6),
        current_period_start=timezone.now() - timedelta(days=1),
    )
    with_stripe_later = fresh(sub).current_period_end

    sync(params={"days_before": 60})

    sub = fresh(sub)
    # localstripe's period ends a calendar month on (28 to 31 days), later than
    # ours: synced. Make ours a day later, still inside the 60-day window:
    assert sub.reconciliation_status == R.SYNCED
    Subscription.objects.filter(pk=sub.pk).update(
        current_period_end=sub.current_period_end + timedelta(days=1)
    )
    sync(params={"days_before": 60}, slot=timezone.now() + timedelta(seconds=1))
    sub = fresh(sub)
    assert sub.reconciliation_status == R.MISMATCH
    assert "local period kept" in sub.reconciliation_error
    assert with_stripe_later < sub.current_period_end


def test_only_subscriptions_renewing_within_the_window_are_synced(stripe_org, localstripe):
    later = renewing(stripe_org, days=30)
    localstripe.clear_requests()

    run = sync()

    assert run.summary["selected"] == 0
    assert fresh(later).last_stripe_sync_at is None
    assert localstripe.requests() == []


def test_an_unknown_stripe_subscription_is_an_item_failure_with_error_status(stripe_org):
    missing = SubscriptionFactory(
        organization=stripe_org,
        stripe_subscription_id="sub_missing",
        current_period_end=timezone.now() + timedelta(days=2),
    )
    ok = renewing(stripe_org)

    run = sync()

    assert run.status == RunStatus.PARTIAL
    assert fresh(missing).reconciliation_status == R.ERROR
    assert "sub_missing" in missing.reconciliation_error
    assert fresh(ok).reconciliation_status == R.SYNCED
    assert JobItemFailure.objects.get(run=run).item_key == f"subscription:{missing.pk}"


def test_dry_run_calls_no_write_endpoint_and_writes_nothing(stripe_org, localstripe):
    canceling = renewing(stripe_org, auto_renew=False)
    renewed = renewing(stripe_org, status=S.PAST_DUE)
    localstripe.clear_requests()

    run = sync(dry_run=True)

    assert run.summary["would_send_cancellations"] == 1
    assert run.summary["would_change"] == 1
    assert {r["method"] for r in localstripe.requests()} == {"GET"}
    assert fresh(canceling).last_stripe_sync_at is None
    assert fresh(renewed).status == S.PAST_DUE
    assert fresh(renewed).reconciliation_status == R.PENDING


def test_the_tenant_in_the_request_limits_the_run(stripe_settings):
    a = PaymentProviderConfigFactory().organization
    b = PaymentProviderConfigFactory().organization
    sa, sb = renewing(a), renewing(b)

    run = sync(tenant=a.key, params={"batch_size": 100})

    assert fresh(sa).reconciliation_status == R.SYNCED
    assert fresh(sb).reconciliation_status == R.PENDING
    assert run.summary["selected"] == 1


def test_a_broken_tenant_fails_fast_and_another_tenant_completes(stripe_settings, localstripe):
    calm = PaymentProviderConfigFactory(secret_key="sk_test_calm_0000000abcd").organization
    storm = PaymentProviderConfigFactory(secret_key="sk_test_stormy_000000abcd").organization
    calm_subs = [renewing(calm) for _ in range(2)]
    storm_subs = [renewing(storm) for _ in range(6)]
    localstripe.add_fault(status=503, times=10_000, api_key="sk_test_stormy_000000abcd")

    run = sync(params={"concurrency": 1})

    assert run.status == RunStatus.PARTIAL
    assert all(fresh(s).reconciliation_status == R.SYNCED for s in calm_subs)
    assert storm.key in run.summary["tenants_failed"]
    assert run.summary["skipped"] == 4  # the breaker opened on the third call
    assert sum(fresh(s).reconciliation_status == R.ERROR for s in storm_subs) == 2


def test_a_killed_run_rerun_makes_no_second_stripe_write(stripe_org, localstripe, monkeypatch):
    sub = renewing(stripe_org, auto_renew=False)
    localstripe.clear_requests()

    def killed(**kwargs):
        raise SystemExit("worker killed after the Stripe call, before the local write")

    with monkeypatch.context() as m:
        m.setattr(subscription_sync, "write_sync", killed)
        with pytest.raises(SystemExit):
            sync()
    assert fresh(sub).last_stripe_sync_at is None  # nothing local was written

    rerun = sync(slot=timezone.now() + timedelta(seconds=1))

    # The rerun reads Stripe first, finds the cancellation there and sends nothing.
    assert rerun.status == RunStatus.SUCCEEDED
    assert rerun.summary["cancellations_sent"] == 0
    assert len([r for r in localstripe.requests() if r["method"] == "POST"]) == 1
    assert fresh(sub).cancel_at_period_end is True
    assert sub.reconciliation_status == R.SYNCED


def test_a_repeated_cancellation_carries_the_same_key_and_stripe_replays_it(
    stripe_org, localstripe
):
    """If the read raced the write (Stripe not yet showing the first send), the
    second send carries the same deterministic key: Stripe replays, changes nothing."""
    sub = renewing(stripe_org, auto_renew=False)
    local = subscriptions_to_sync(slot=timezone.now(), days=7, limit=10)[0]
    remote = subscription_sync.RemoteSubscription("active", None, local.current_period_end, False)
    decision = subscription_sync.decide_sync(local, remote, push_cancellations=True)
    sync_ = subscription_sync.RenewalSync(now=timezone.now(), actor="test")
    sync_._prepare({stripe_org.pk})
    localstripe.clear_requests()

    assert sync_._push(decision) == ""
    assert sync_._push(decision) == ""

    sent = localstripe.requests()
    assert len(sent) == 2 and sent[0]["idempotency_key"] == sent[1]["idempotency_key"]
    assert [r["replayed"] for r in sent] == [False, True]
    assert len(localstripe.writes()) == 1
    assert sub.pk == local.id


@pytest.mark.usefixtures("empty_broker")
def test_the_api_runs_it_for_the_tenant_in_the_body(
    stripe_settings, client, drain_queue, django_capture_on_commit_callbacks
):
    a = PaymentProviderConfigFactory().organization
    b = PaymentProviderConfigFactory().organization
    sa, sb = renewing(a), renewing(b)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/jobs/subscriptions.sync_renewals/runs",
            data={"tenant": a.key, "params": {"batch_size": 100}},
            content_type="application/json",
            HTTP_AUTHORIZATION="Bearer test-api-token",
        )
    assert response.status_code == 202, response.content
    drain_queue()

    assert fresh(sa).reconciliation_status == R.SYNCED
    assert fresh(sb).reconciliation_status == R.PENDING


def test_a_tenant_whose_key_cannot_be_read_is_recorded_and_others_sync(stripe_settings):
    from payments.models import PaymentProviderConfig

    good = PaymentProviderConfigFactory().organization
    bad = PaymentProviderConfigFactory().organization
    ok = renewing(good)
    stuck = SubscriptionFactory(
        organization=bad,
        stripe_subscription_id="sub_x",
        current_period_end=timezone.now() + timedelta(days=2),
    )
    PaymentProviderConfig.objects.filter(organization=bad).update(
        secret_key_encrypted="not-a-fernet-token"
    )

    run = sync()

    assert run.status == RunStatus.PARTIAL
    assert fresh(ok).reconciliation_status == R.SYNCED
    assert fresh(stuck).reconciliation_status == R.PENDING
    failure = JobItemFailure.objects.get(run=run)
    assert failure.item_key == f"tenant:{bad.key}"
    assert "cannot be decrypted" in failure.error

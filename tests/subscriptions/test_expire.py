from datetime import UTC, datetime, timedelta

import pytest
from django.db import DataError, IntegrityError, transaction

from audit.models import AuditTrail
from jobs.models import RunStatus
from jobs.runner import SlotTaken, run_job
from jobs.tenants import UnknownTenant
from notifications.models import OutboundEmail
from subscriptions.models import Organization, Plan, Subscription, SubscriptionStatus
from subscriptions.services import expiry as services
from tests.factories import OrganizationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = SubscriptionStatus


@pytest.fixture
def no_guard(settings):
    """Most tests use tiny tenants, which the 20% guard would stop."""
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 100


def ending(delta: timedelta, **kwargs) -> Subscription:
    return SubscriptionFactory(current_period_end=SLOT + delta, **kwargs)


def expire(**kwargs):
    kwargs.setdefault("slot", SLOT)
    return run_job("subscriptions.expire", **kwargs)


def statuses(*subs: Subscription) -> list[str]:
    return [Subscription.objects.get(pk=s.pk).status for s in subs]


def test_expire_moves_due_active_subscriptions_to_expired(no_guard):
    org = OrganizationFactory()
    due = [
        ending(-timedelta(hours=1), organization=org, status=status)
        for status in (S.TRIALING, S.ACTIVE, S.PAST_DUE)
    ]
    at_slot = ending(timedelta(0), organization=org)
    later = ending(timedelta(minutes=1), organization=org)
    canceled = ending(-timedelta(days=1), organization=org, canceled=True)

    run = expire()

    assert run.status == RunStatus.SUCCEEDED, run.error
    for sub in [*due, at_slot]:
        sub.refresh_from_db()
        assert sub.status == S.EXPIRED
        assert sub.auto_renew is False
        assert sub.expired_at == SLOT
    assert statuses(later, canceled) == [S.ACTIVE, S.CANCELED]
    assert run.summary["expired"] == 4
    assert run.summary["suspended"] == 0
    assert (run.processed, run.succeeded) == (4, 4)


def test_expire_suspends_after_grace_period(no_guard):
    past_grace = SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=7))
    in_grace = SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=6, hours=23))

    run = expire()

    past_grace.refresh_from_db()
    assert past_grace.status == S.SUSPENDED
    assert past_grace.suspended_at == SLOT
    assert past_grace.expired_at == SLOT - timedelta(days=7)
    assert statuses(in_grace) == [S.EXPIRED]
    assert run.summary["suspended"] == 1


def test_grace_days_parameter_overrides_the_setting(no_guard):
    sub = SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=2))

    expire(params={"grace_days": "1"})

    assert statuses(sub) == [S.SUSPENDED]


def test_expire_uses_the_slot_not_now(no_guard):
    # The slot is months in the past: by "now" both periods have ended.
    ended_before_slot = ending(-timedelta(minutes=1))
    ended_after_slot = ending(timedelta(hours=1))
    expired_in_grace_at_slot = SubscriptionFactory(
        expired=True, expired_at=SLOT - timedelta(days=6)
    )

    expire()

    ended_before_slot.refresh_from_db()
    assert ended_before_slot.expired_at == SLOT
    assert statuses(ended_after_slot, expired_in_grace_at_slot) == [S.ACTIVE, S.EXPIRED]


def test_expire_writes_audit_and_outbox_rows_in_the_same_transaction(no_guard):
    org = OrganizationFactory(key="org_audit", billing_email="pay@audit.example")
    expiring = ending(-timedelta(hours=1), organization=org, status=S.PAST_DUE)
    suspending = SubscriptionFactory(
        organization=org, expired=True, expired_at=SLOT - timedelta(days=8)
    )

    run = expire()

    audit = {a.action: a for a in AuditTrail.objects.all()}
    assert set(audit) == {"subscription.expired", "subscription.suspended"}
    assert audit["subscription.expired"].object_ids == [expiring.pk]
    assert audit["subscription.suspended"].object_ids == [suspending.pk]
    expired_row = audit["subscription.expired"]
    assert expired_row.actor == f"job:subscriptions.expire#{run.pk}"
    assert expired_row.job_run_id == run.pk
    assert expired_row.tenant == "org_audit"
    assert expired_row.action == "subscription.expired"
    assert expired_row.object_type == "subscriptions.subscription"
    assert expired_row.changes == {
        "status": ["past_due", "expired"],
        "auto_renew": [True, False],
        "expired_at": [None, SLOT.isoformat()],
    }
    assert audit["subscription.suspended"].changes == {
        "status": ["expired", "suspended"],
        "suspended_at": [None, SLOT.isoformat()],
    }
    emails = {e.kind: e for e in OutboundEmail.objects.all()}
    assert set(emails) == {"subscriptions.expired", "subscriptions.suspended"}
    expired_mail = emails["subscriptions.expired"]
    assert expired_mail.to == "pay@audit.example"
    assert expired_mail.organization == org
    assert expired_mail.status == "queued"
    assert expired_mail.subject == "A subscription of Organization org_audit has expired"
    assert "Renew before 2026-03-08 12:00 UTC" in expired_mail.body_text
    assert "2026-03-08 12:00 UTC" in expired_mail.body_html
    assert expired_mail.dedupe_key == f"subscriptions.expired:org{org.pk}:2026-03-01T12:00:00Z"
    assert run.summary["audit_records"] == 2
    assert run.summary["emails_queued"] == 2


def test_a_failure_while_queueing_emails_rolls_back_the_status_changes(no_guard, monkeypatch):
    sub = ending(-timedelta(hours=1))

    def broken(groups, **kwargs):
        raise RuntimeError("outbox down")

    monkeypatch.setattr(services, "_queue_digests", broken)
    run = expire()

    assert run.status == RunStatus.FAILED
    assert "outbox down" in run.error
    assert statuses(sub) == [S.ACTIVE]
    assert not AuditTrail.objects.exists()
    assert not OutboundEmail.objects.exists()


def test_expire_twice_for_the_same_slot_changes_nothing(no_guard):
    ending(-timedelta(hours=1))
    SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=10))
    first = expire()

    with pytest.raises(SlotTaken) as taken:  # the platform refuses the slot's second start
        expire()
    assert taken.value.run.pk == first.pk
    # The job itself is idempotent too, e.g. a rerun whose record was lost:
    result, _ = services.expire_subscriptions(slot=SLOT, grace_days=7, actor="test")

    assert (result.expired, result.suspended, result.audit_records, result.emails_queued) == (
        0,
        0,
        0,
        0,
    )
    assert AuditTrail.objects.count() == 2
    assert OutboundEmail.objects.count() == 2


def test_a_digest_already_queued_for_the_slot_is_not_queued_again(no_guard):
    org = OrganizationFactory()
    first = ending(-timedelta(hours=1), organization=org)
    services.expire_subscriptions(slot=SLOT, grace_days=7, actor="test")
    Subscription.objects.filter(pk=first.pk).update(status=S.ACTIVE, expired_at=None)

    result, _ = services.expire_subscriptions(slot=SLOT, grace_days=7, actor="test")

    assert result.expired == 1
    assert result.emails_queued == 0
    assert OutboundEmail.objects.count() == 1


def test_one_digest_per_organization_and_kind(no_guard):
    org = OrganizationFactory(name="Many Corp")
    for _ in range(12):
        ending(-timedelta(hours=1), organization=org)

    run = expire()

    (email,) = OutboundEmail.objects.all()
    assert email.subject == "12 subscriptions of Many Corp have expired"
    assert "12 of your subscriptions" in email.body_text
    assert run.summary["emails_queued"] == 1


def test_expire_guard_aborts_and_changes_nothing(settings):
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 20
    settings.EXPIRY_SAFETY_MIN_EXPIRING = 3
    risky = OrganizationFactory(key="org_risky")
    due = [ending(-timedelta(hours=1), organization=risky) for _ in range(3)]
    fine = [ending(timedelta(days=3), organization=risky) for _ in range(7)]  # 3 of 10: 30%
    calm = OrganizationFactory(key="org_calm")
    calm_due = ending(-timedelta(hours=1), organization=calm)
    for _ in range(9):
        ending(timedelta(days=3), organization=calm)  # 1 of 10: 10%
    suspending = SubscriptionFactory(
        organization=calm, expired=True, expired_at=SLOT - timedelta(days=30)
    )

    run = expire()

    assert run.status == RunStatus.FAILED
    assert "org_risky: 3 of 10 (30%)" in run.error
    assert "org_calm" not in run.error
    assert run.summary["guard"]["tenants_over_limit"] == [
        {"tenant": "org_risky", "would_expire": 3, "running": 10}
    ]
    assert set(statuses(*due, *fine, calm_due)) == {S.ACTIVE}
    assert statuses(suspending) == [S.EXPIRED]
    assert not AuditTrail.objects.exists()
    assert not OutboundEmail.objects.exists()


def test_a_tenant_losing_fewer_than_the_minimum_never_trips_the_guard(settings):
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 20
    settings.EXPIRY_SAFETY_MIN_EXPIRING = 3
    tiny = OrganizationFactory(key="org_tiny")
    due = [ending(-timedelta(hours=1), organization=tiny) for _ in range(2)]  # 2 of 3: 67%
    ending(timedelta(days=3), organization=tiny)

    run = expire()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert statuses(*due) == [S.EXPIRED, S.EXPIRED]
    assert run.summary["guard"]["min_expiring"] == 3


def test_force_bypasses_guard(settings):
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 20
    settings.EXPIRY_SAFETY_MIN_EXPIRING = 1
    sub = ending(-timedelta(hours=1))  # 1 of 1: 100%

    run = expire(params={"force": "true"})

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert statuses(sub) == [S.EXPIRED]
    assert run.summary["guard"]["forced"] is True


def test_suspensions_alone_never_trip_the_guard(settings):
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 20
    sub = SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=30))

    run = expire()

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert statuses(sub) == [S.SUSPENDED]


def test_dry_run_reports_counts_and_writes_nothing(settings):
    settings.EXPIRY_SAFETY_LIMIT_PERCENT = 20
    settings.EXPIRY_SAFETY_MIN_EXPIRING = 1
    org = OrganizationFactory(key="org_dry")
    due = [ending(-timedelta(hours=1), organization=org) for _ in range(2)]
    ending(timedelta(days=1), organization=org)
    grace_over = SubscriptionFactory(
        organization=org, expired=True, expired_at=SLOT - timedelta(days=9)
    )

    run = expire(dry_run=True)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.summary["would_expire"] == 2
    assert run.summary["would_suspend"] == 1
    assert run.summary["per_tenant"] == {
        "org_dry": {"would_expire": 2, "would_suspend": 1, "running": 3}
    }
    # It reports the guard it would trip (2 of 3) instead of failing.
    assert run.summary["guard"]["tenants_over_limit"][0]["tenant"] == "org_dry"
    assert set(statuses(*due)) == {S.ACTIVE}
    assert statuses(grace_over) == [S.EXPIRED]
    assert not AuditTrail.objects.exists()
    assert not OutboundEmail.objects.exists()


def test_tenant_run_touches_only_that_tenant(no_guard):
    mine = OrganizationFactory(key="org_mine")
    other = OrganizationFactory(key="org_other")
    my_sub = ending(-timedelta(hours=1), organization=mine)
    my_grace = SubscriptionFactory(
        organization=mine, expired=True, expired_at=SLOT - timedelta(days=8)
    )
    other_sub = ending(-timedelta(hours=1), organization=other)
    other_grace = SubscriptionFactory(
        organization=other, expired=True, expired_at=SLOT - timedelta(days=8)
    )

    run = expire(tenant="org_mine")

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert statuses(my_sub, my_grace) == [S.EXPIRED, S.SUSPENDED]
    assert statuses(other_sub, other_grace) == [S.ACTIVE, S.EXPIRED]
    assert set(AuditTrail.objects.values_list("tenant", flat=True)) == {"org_mine"}
    assert set(OutboundEmail.objects.values_list("organization__key", flat=True)) == {"org_mine"}
    assert run.summary["tenant"] == "org_mine"


def test_unknown_tenant_is_refused():
    with pytest.raises(UnknownTenant):
        expire(tenant="org_nobody")


def test_negative_grace_days_is_refused_before_anything_runs(no_guard):
    from jobs.models import JobRun
    from jobs.params import ParamError

    sub = SubscriptionFactory(expired=True, expired_at=SLOT - timedelta(days=30))

    with pytest.raises(ParamError, match="'grace_days' must be at least 0, got -1"):
        expire(params={"grace_days": -1})

    assert not JobRun.objects.exists()
    assert statuses(sub) == [S.EXPIRED]


def test_expire_is_registered_hourly_on_the_critical_queue():
    from jobs.registry import get_job

    spec = get_job("subscriptions.expire")
    assert spec.queue == "critical"
    assert spec.schedule == "0 * * * *"
    assert {p.name for p in spec.params} == {"grace_days", "force"}


def test_database_rejects_invalid_status():
    sub = SubscriptionFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.filter(pk=sub.pk).update(status="paused")


@pytest.mark.parametrize(
    "changes",
    [
        {"status": S.EXPIRED, "expired_at": None},
        {"status": S.SUSPENDED, "suspended_at": None},
        {"status": S.CANCELED, "canceled_at": None},
    ],
)
def test_database_rejects_a_status_without_its_timestamp(changes):
    sub = SubscriptionFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.filter(pk=sub.pk).update(**changes)


def test_database_rejects_a_period_that_ends_before_it_starts():
    with pytest.raises(IntegrityError), transaction.atomic():
        SubscriptionFactory(current_period_start=SLOT, current_period_end=SLOT - timedelta(days=1))


@pytest.mark.parametrize(
    "fields", [{"price_minor": -1}, {"currency": "eur"}, {"currency": "EURO"}, {"interval": "week"}]
)
def test_database_rejects_invalid_plans(fields):
    values = {"name": "Bad", "price_minor": 100, "currency": "EUR", "interval": "month"} | fields
    # PostgreSQL refuses a 4-letter code by the column's length (DataError).
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        Plan.objects.create(**values)


def test_database_rejects_a_duplicate_organization_key():
    OrganizationFactory(key="org_dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.create(key="org_dup", name="Again", billing_email="a@b.example")


def test_a_bulk_audit_record_lists_every_subscription_that_changed_alike(no_guard):
    org = OrganizationFactory(key="org_many")
    renewing = [ending(-timedelta(hours=h), organization=org, auto_renew=True) for h in (1, 2)]
    lapsing = ending(-timedelta(hours=3), organization=org, auto_renew=False)
    trial = ending(-timedelta(hours=1), organization=org, status=S.TRIALING, auto_renew=False)

    expire()

    records = {
        (r.changes["status"][0], "auto_renew" in r.changes): r for r in AuditTrail.objects.all()
    }
    assert sorted(records[("active", True)].object_ids) == sorted(s.pk for s in renewing)
    assert records[("active", False)].object_ids == [lapsing.pk]
    assert records[("trialing", False)].object_ids == [trial.pk]
    assert sum(len(r.object_ids) for r in records.values()) == 4


def test_each_expired_subscription_is_found_in_the_audit_trail_by_its_id(no_guard):
    from audit.selectors import audit_of_object

    subs = [ending(-timedelta(hours=1)) for _ in range(3)]
    other = SubscriptionFactory()
    expire()

    for sub in subs:
        found = list(
            audit_of_object(
                object_type="subscriptions.subscription",
                object_id=sub.pk,
                tenant=sub.organization.key,
            )
        )
        assert [r.action for r in found] == ["subscription.expired"]
    assert not audit_of_object(object_type="subscriptions.subscription", object_id=other.pk)

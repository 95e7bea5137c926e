"""Alerts: rules evaluated at a run's end and every minute, delivered to a real
HTTP receiver on a loopback port (signed webhooks), deduplicated, resolved."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_q.models import Schedule

from jobs.alert_channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from jobs.alert_models import AlertDelivery, AlertIncident, AlertRule
from jobs.alerts import evaluate_alerts, figure_of
from jobs.models import JobRun, RunStatus, ScheduleState, Trigger
from jobs.retry import send_due_retries
from jobs.retry_policy import RetryPolicy
from jobs.runner import execute_queued, run_job
from jobs.schedule_models import CustomSchedule
from jobs.schedules import sync_schedules
from tests.factories import JobRunFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SECRET = "whsec-test-0123456789"


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(NOW, tick=False)
    return time_machine


def webhook_rule(receiver, **fields) -> AlertRule:
    fields.setdefault("name", fields.get("condition", "rule"))
    return AlertRule.objects.create(
        channel="webhook", target=receiver.url, secret=SECRET, cooldown_minutes=60, **fields
    )


def assert_signed(request) -> None:
    timestamp = request.headers[TIMESTAMP_HEADER]
    assert verify(SECRET, timestamp, request.body, request.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", timestamp, request.body, request.headers[SIGNATURE_HEADER])


def test_a_failing_job_sends_one_signed_alert_then_a_resolved_notice(
    register_job, webhook_receiver, clock
):
    outcome = {"fail": True}

    @register_job("tests.billing_sync")
    def billing_sync(ctx):
        if outcome["fail"]:
            raise RuntimeError("provider answered 503")
        return {}

    webhook_rule(webhook_receiver, condition="failed", job="tests.billing_sync")
    failed = run_job("tests.billing_sync", trigger=Trigger.API)
    run_job("tests.billing_sync", trigger=Trigger.API)  # still failing: same incident
    assert len(webhook_receiver.requests) == 1
    alert = webhook_receiver.requests[0]
    assert_signed(alert)
    body = alert.json
    assert body["kind"] == "alert" and body["job"] == "tests.billing_sync"
    assert "provider answered 503" in body["text"] and body["text"].startswith("[ALERT]")
    assert body["run_url"].endswith(reverse("admin:jobs_jobrun_change", args=[failed.pk]))
    assert AlertIncident.objects.get().state == "open"

    outcome["fail"] = False
    ok = run_job("tests.billing_sync", trigger=Trigger.API)
    assert len(webhook_receiver.requests) == 2
    resolved = webhook_receiver.requests[1]
    assert_signed(resolved)
    assert resolved.json["kind"] == "resolved" and resolved.json["text"].startswith("[RESOLVED]")
    assert resolved.json["run_url"].endswith(reverse("admin:jobs_jobrun_change", args=[ok.pk]))
    assert AlertIncident.objects.get().state == "resolved"
    assert list(AlertDelivery.objects.values_list("kind", "status", "response_code")) == [
        ("resolved", "sent", 200),
        ("alert", "sent", 200),
    ]


def test_a_flapping_job_is_quiet_within_the_cooldown(register_job, webhook_receiver, clock):
    outcome = {"fail": True}

    @register_job("tests.flapping")
    def flapping(ctx):
        if outcome["fail"]:
            raise RuntimeError("boom")

    webhook_rule(webhook_receiver, condition="failed")  # every job
    for fail in (True, False, True, False):
        outcome["fail"] = fail
        run_job("tests.flapping")
        clock.shift(timedelta(minutes=5))
    assert [r.json["kind"] for r in webhook_receiver.requests] == ["alert", "resolved"]
    assert AlertIncident.objects.filter(notified=False).count() == 1

    clock.shift(timedelta(minutes=61))
    outcome["fail"] = True
    run_job("tests.flapping")
    assert [r.json["kind"] for r in webhook_receiver.requests] == ["alert", "resolved", "alert"]


def test_dry_runs_never_alert(register_job, webhook_receiver, clock):
    @register_job("tests.dry_fail")
    def dry_fail(ctx):
        raise RuntimeError("boom")

    webhook_rule(webhook_receiver, condition="failed")
    run_job("tests.dry_fail", dry_run=True)
    evaluate_alerts()
    assert webhook_receiver.requests == []
    assert not AlertIncident.objects.exists()


def test_partial_alerts_only_when_the_rule_says_so(register_job, webhook_receiver, clock):
    @register_job("tests.partial")
    def partial(ctx):
        ctx.item_failed("org_1", "card declined")

    webhook_rule(webhook_receiver, name="failed only", condition="failed")
    webhook_rule(webhook_receiver, name="partial too", condition="failed_or_partial")
    run_job("tests.partial")
    assert [r.json["rule"] for r in webhook_receiver.requests] == ["partial too"]
    assert "1 items failed" in webhook_receiver.requests[0].json["text"]


def test_retries_spent_alerts_on_the_last_attempt_only(register_job, webhook_receiver, clock):

    @register_job("tests.spent", retry=RetryPolicy(retries=1, base=60, jitter=False))
    def spent(ctx):
        raise RuntimeError("down")

    webhook_rule(webhook_receiver, condition="retries_spent")
    run_job("tests.spent", slot=NOW)
    assert webhook_receiver.requests == []  # attempt 2 comes
    clock.shift(timedelta(seconds=60))
    for run_id in send_due_retries():
        execute_queued(run_id)
    assert len(webhook_receiver.requests) == 1
    assert "last attempt (2 of 2" in webhook_receiver.requests[0].json["text"]


def test_silence_no_success_in_x_hours_alerts_and_resolves(register_job, webhook_receiver, clock):
    @register_job("tests.hourly_sync", schedule="0 * * * *")
    def hourly_sync(ctx):
        return {}

    JobRunFactory(
        job="tests.hourly_sync",
        status=RunStatus.SUCCEEDED,
        created_at=NOW - timedelta(hours=5),
        finished_at=NOW - timedelta(hours=5),
    )
    JobRunFactory(job="tests.hourly_sync", status=RunStatus.FAILED, finished_at=NOW)
    webhook_rule(webhook_receiver, condition="silence_success", job="tests.hourly_sync", hours=3)
    evaluate_alerts()
    evaluate_alerts()  # once per incident
    assert len(webhook_receiver.requests) == 1
    alert = webhook_receiver.requests[0]
    assert_signed(alert)
    assert "no successful run in 3 h" in alert.json["text"]

    run_job("tests.hourly_sync")
    evaluate_alerts()
    assert [r.json["kind"] for r in webhook_receiver.requests] == ["alert", "resolved"]


def test_silence_figure_zero_in_every_run_of_x_days(register_job, webhook_receiver, clock):
    @register_job("tests.expire", schedule="0 * * * *")
    def expire(ctx):
        return {"expired": 0}

    for hours_ago in (60, 30, 2):
        JobRunFactory(
            job="tests.expire",
            summary={"expired": 0},
            finished_at=NOW - timedelta(hours=hours_ago),
        )
    JobRunFactory(
        job="tests.expire", summary={"expired": 4}, finished_at=NOW - timedelta(days=3, hours=1)
    )
    JobRunFactory(job="tests.expire", dry_run=True, summary={"expired": 9}, finished_at=NOW)
    webhook_rule(
        webhook_receiver, condition="silence_zero", job="tests.expire", figure="expired", days=3
    )
    evaluate_alerts()
    assert len(webhook_receiver.requests) == 1
    assert_signed(webhook_receiver.requests[0])
    assert (
        "expired was 0 in every run of the last 3 days (3 runs)"
        in (webhook_receiver.requests[0].json["text"])
    )
    JobRunFactory(job="tests.expire", summary={"expired": 2}, finished_at=NOW)
    evaluate_alerts()
    assert [r.json["kind"] for r in webhook_receiver.requests] == ["alert", "resolved"]


def test_excess_above_a_limit_and_above_k_times_the_median(register_job, webhook_receiver, clock):
    counts = iter([10, 12, 11, 50, 12])

    @register_job("tests.expiries")
    def expiries(ctx):
        return {"expired": next(counts)}

    webhook_rule(
        webhook_receiver, name="limit", condition="excess_limit", figure="expired", limit=40
    )
    webhook_rule(
        webhook_receiver,
        name="median",
        condition="excess_median",
        figure="expired",
        factor=3,
        runs=3,
    )
    for _ in range(3):
        run_job("tests.expiries")
        clock.shift(timedelta(minutes=1))
    assert webhook_receiver.requests == []
    run_job("tests.expiries")  # 50: above 40, and above 3 x median(10, 12, 11) = 33
    clock.shift(timedelta(minutes=1))
    alerts = {r.json["rule"]: r for r in webhook_receiver.requests}
    assert set(alerts) == {"limit", "median"}
    for request in alerts.values():
        assert_signed(request)
    assert (
        "expired = 50, above 3 x its median 11 of the previous 3 runs"
        in (alerts["median"].json["text"])
    )
    run_job("tests.expiries")  # 12: back to normal
    assert sorted(
        r.json["rule"] for r in webhook_receiver.requests if r.json["kind"] == "resolved"
    ) == [
        "limit",
        "median",
    ]


def test_an_overdue_schedule_alerts(register_job, webhook_receiver, clock):

    @register_job("tests.nightly", schedule="0 3 * * *")
    def nightly(ctx):
        pass

    sync_schedules()
    Schedule.objects.filter(name="tests.nightly").update(next_run=NOW - timedelta(hours=1))
    webhook_rule(webhook_receiver, condition="overdue", job="tests.nightly")
    evaluate_alerts()
    assert len(webhook_receiver.requests) == 1
    assert "schedule tests.nightly is overdue" in webhook_receiver.requests[0].json["text"]


def test_an_overdue_staff_schedule_alerts_too(register_job, webhook_receiver, clock):
    @register_job("tests.own_overdue")
    def own_overdue(ctx):
        pass

    CustomSchedule.objects.create(
        name="acme", job="tests.own_overdue", cron="0 * * * *", next_run=NOW - timedelta(hours=2)
    )
    webhook_rule(webhook_receiver, condition="overdue")
    evaluate_alerts()
    assert len(webhook_receiver.requests) == 1
    assert (
        "schedule 'acme' of tests.own_overdue is overdue"
        in webhook_receiver.requests[0].json["text"]
    )
    CustomSchedule.objects.update(next_run=NOW + timedelta(minutes=30))
    evaluate_alerts()
    assert [r.json["kind"] for r in webhook_receiver.requests] == ["alert", "resolved"]


def test_a_failed_delivery_is_retried_with_backoff(register_job, webhook_receiver, clock, settings):
    settings.JOBS_ALERT_RETRY_BASE_SECONDS = 30

    @register_job("tests.retry_delivery")
    def retry_delivery(ctx):
        raise RuntimeError("boom")

    webhook_receiver.fail_next = 2
    webhook_rule(webhook_receiver, condition="failed")
    run_job("tests.retry_delivery")
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at == NOW + timedelta(seconds=30)
    evaluate_alerts()  # not due yet
    assert len(webhook_receiver.requests) == 1
    clock.shift(timedelta(seconds=30))
    evaluate_alerts()
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == NOW + timedelta(seconds=30 + 60)  # doubled
    clock.shift(timedelta(seconds=60))
    evaluate_alerts()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 3, 200)
    assert len(webhook_receiver.requests) == 3


def test_the_evaluate_alerts_job_is_a_scheduled_platform_job():
    sync_schedules()
    run = run_job("jobs.evaluate_alerts")
    assert run.status == RunStatus.SUCCEEDED and run.summary["rules"] == 0
    assert JobRun.objects.filter(job="jobs.evaluate_alerts").count() == 1

    assert ScheduleState.objects.get(job="jobs.evaluate_alerts").schedule.cron == "* * * * *"


def test_figures_are_read_at_dotted_paths():
    assert figure_of({"usage": {"rows": 3}}, "usage.rows") == 3.0
    assert figure_of({"expired": True}, "expired") is None
    assert figure_of({"expired": "4"}, "expired") is None
    assert figure_of({}, "expired") is None


def test_staff_add_rules_in_the_admin_with_form_errors_for_bad_input(client, webhook_receiver):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:jobs_alertrule_add")
    base = {"name": "silence", "enabled": "on", "job": "", "cooldown_minutes": "60"}
    response = client.post(
        url, {**base, "condition": "silence_success", "channel": "webhook", "target": "ftp://x"}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "This condition needs it." in page
    assert "must be an http(s) URL" in page
    assert "A webhook needs a signing secret." in page
    response = client.post(
        url, {**base, "condition": "failed", "channel": "email", "target": "ops@, x"}
    )
    assert response.status_code == 200 and "is not an email address" in response.content.decode()
    response = client.post(
        url,
        {
            **base,
            "condition": "silence_success",
            "hours": "6",
            "channel": "webhook",
            "target": webhook_receiver.url,
            "secret": SECRET,
        },
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.secret, rule.hours) == (SECRET, 6)
    change = client.get(reverse("admin:jobs_alertrule_change", args=[rule.pk])).content.decode()
    assert SECRET not in change
    for name in ("alertincident", "alertdelivery"):
        assert client.get(reverse(f"admin:jobs_{name}_changelist")).status_code == 200


def test_staff_without_run_job_cannot_change_rules(client):

    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__endswith="alertrule"))
    client.force_login(user)
    assert client.get(reverse("admin:jobs_alertrule_add")).status_code == 403

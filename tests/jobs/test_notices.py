"""Completion notices: per schedule and per API start, by webhook (a real
loopback receiver) and email (the outbox), with summary, counts, duration and
a link to the run."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from jobs.alert_channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from jobs.alert_models import CompletionNotice, NoticeDelivery
from jobs.models import JobRun, RunStatus, ScheduleState
from jobs.retry import send_due_retries
from jobs.retry_policy import RetryPolicy
from jobs.runner import execute_queued, run_job, run_scheduled
from jobs.schedules import sync_schedules
from notifications.models import OutboundEmail
from tests.factories import ApiKeyFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 12, 1, 6, tzinfo=UTC)


def test_a_schedules_notice_sends_summary_counts_duration_and_link(
    register_job, webhook_receiver, time_machine
):
    time_machine.move_to(SLOT, tick=False)

    @register_job("tests.nightly_report", schedule="0 6 * * *")
    def nightly_report(ctx):
        time_machine.shift(timedelta(seconds=42))
        ctx.count(processed=3, succeeded=3)
        return {"rows": 3}

    sync_schedules()
    state = ScheduleState.objects.get(job="tests.nightly_report")
    CompletionNotice.objects.create(
        schedule=state, emails="ops@example.com", webhook_url=webhook_receiver.url, secret="s3cret"
    )
    run_scheduled("tests.nightly_report", slot=SLOT.isoformat())
    run = JobRun.objects.get(job="tests.nightly_report")
    (request,) = webhook_receiver.requests
    assert verify(
        "s3cret", request.headers[TIMESTAMP_HEADER], request.body, request.headers[SIGNATURE_HEADER]
    )
    body = request.json
    assert body["kind"] == "completion" and body["status"] == "succeeded"
    assert body["counts"] == {"processed": 3, "succeeded": 3, "failed": 0, "skipped": 0}
    assert body["summary"] == {"rows": 3} and body["duration_seconds"] == 42
    assert body["run_url"].endswith(reverse("admin:jobs_jobrun_change", args=[run.pk]))
    assert "succeeded in 42.0 s: processed 3" in body["text"]
    email = OutboundEmail.objects.get(kind="jobs.alert")
    assert email.to == "ops@example.com" and "processed 3" in email.body_text
    assert set(NoticeDelivery.objects.values_list("channel", "status")) == {
        ("email", "sent"),
        ("webhook", "sent"),
    }
    # A manual run of the job is not the schedule's: no notice.
    run_job("tests.nightly_report")
    assert len(webhook_receiver.requests) == 1


def test_an_api_start_with_notify_gets_its_notice(register_job, webhook_receiver):
    @register_job("tests.export")
    def export(ctx):
        ctx.count(processed=1, succeeded=1)

    key = ApiKeyFactory(scopes=["jobs:run:tests.*"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    response = client.post(
        "/api/jobs/tests.export/runs",
        {"notify": {"webhook": webhook_receiver.url, "emails": ["dev@example.com"]}},
        content_type="application/json",
    )
    assert response.status_code == 202
    execute_queued(response.json()["run_id"])  # the worker's turn
    run = JobRun.objects.get(pk=response.json()["run_id"])
    assert run.status == RunStatus.SUCCEEDED
    assert [r.json["run_id"] for r in webhook_receiver.requests] == [run.pk]
    assert OutboundEmail.objects.filter(to="dev@example.com").exists()


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ("yes", "notify must be an object"),
        ({"webhook": "ftp://x"}, "http(s) URL"),
        ({"webhook": "http://x:99999/"}, "http(s) URL"),
        ({"webhook": "https://x.example/" + "a" * 600}, "longer than 500"),
        ({"emails": ["not-an-address"]}, "is not an email address"),
        ({"when": "sometimes", "emails": ["a@example.com"]}, "notify.when must be one of"),
        ({}, "notify needs emails or a webhook"),
        ({"sms": "+1"}, "unknown notify field"),
    ],
)
def test_bad_notify_is_a_400_naming_it(register_job, notify, message):
    @register_job("tests.export2")
    def export2(ctx):
        pass

    key = ApiKeyFactory(scopes=["jobs:run:tests.*"])
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    response = client.post(
        "/api/jobs/tests.export2/runs", {"notify": notify}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "notify" and message in response.json()["error"]
    assert not JobRun.objects.exists()


def test_a_retried_run_notifies_once_at_its_last_attempt(
    register_job, webhook_receiver, time_machine
):
    time_machine.move_to(SLOT, tick=False)
    outcome = iter([True, False])

    @register_job("tests.flaky_notice", retry=RetryPolicy(retries=1, base=60, jitter=False))
    def flaky_notice(ctx):
        if next(outcome):
            raise RuntimeError("boom")

    first = run_job("tests.flaky_notice", slot=SLOT)
    CompletionNotice.objects.create(run=first, webhook_url=webhook_receiver.url, when="always")
    time_machine.shift(timedelta(seconds=60))
    for run_id in send_due_retries():
        execute_queued(run_id)
    assert [(r.json["attempt"], r.json["status"]) for r in webhook_receiver.requests] == [
        (2, "succeeded")
    ]


def test_problems_only_notices_skip_successes(register_job, webhook_receiver):
    @register_job("tests.sometimes", schedule="0 * * * *")
    def sometimes(ctx, *, fail: bool = False):
        if fail:
            raise RuntimeError("boom")

    sync_schedules()
    CompletionNotice.objects.create(
        schedule=ScheduleState.objects.get(job="tests.sometimes"),
        webhook_url=webhook_receiver.url,
        when="problems",
    )
    run_scheduled("tests.sometimes", slot=SLOT.isoformat())
    assert webhook_receiver.requests == []


def test_staff_add_a_schedule_notice_in_the_admin(register_job, client, webhook_receiver):
    @register_job("tests.admin_notice", schedule="0 * * * *")
    def admin_notice(ctx):
        pass

    sync_schedules()
    state = ScheduleState.objects.get(job="tests.admin_notice")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:jobs_completionnotice_add")
    response = client.post(url, {"when": "always"})
    assert response.status_code == 200
    assert "Choose a schedule (every run) or one run" in response.content.decode()
    response = client.post(url, {"schedule": state.pk, "when": "always", "emails": "nope"})
    assert "is not an email address" in response.content.decode()
    response = client.post(
        url, {"schedule": state.pk, "when": "always", "webhook_url": webhook_receiver.url}
    )
    assert response.status_code == 302
    assert CompletionNotice.objects.get().schedule == state
    assert client.get(reverse("admin:jobs_noticedelivery_changelist")).status_code == 200

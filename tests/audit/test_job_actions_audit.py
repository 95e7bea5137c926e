"""Admin actions and API calls on jobs leave audit records (via JobAction)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse

from audit.models import AuditTrail
from jobs.models import JobRun
from jobs.schedules import pause, set_cron, sync_schedules
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

TOKEN = "maintenance-test-token"


@pytest.fixture
def scheduled_job(register_job):
    @register_job("tests.audited", schedule="*/5 * * * *")
    def audited(ctx, *, n: int = 1):
        """Counts n."""
        ctx.count(processed=n)

    sync_schedules()
    return "tests.audited"


@pytest.fixture
def operator_client(client):
    user = UserFactory(username="operator", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="jobs",
            codename__in=["view_schedulestate", "change_schedulestate", "run_job", "view_jobrun"],
        )
    )
    client.force_login(user)
    return client


def test_admin_pause_leaves_an_audit_record(operator_client, scheduled_job):
    response = operator_client.post(
        reverse("jobs_pause", args=[scheduled_job]),
        {"reason": "Stripe is down"},
        HTTP_X_REQUEST_ID="req-pause-1",
    )

    assert response.status_code == 302
    record = AuditTrail.objects.get(action="job.pause")
    assert record.actor == "user:operator"
    assert (record.object_type, record.object_id) == ("jobs.schedule", scheduled_job)
    assert record.changes == {"paused": [False, True], "pause_reason": ["", "Stripe is down"]}
    assert record.request_id == "req-pause-1"


def test_admin_resume_and_run_now_leave_audit_records(operator_client, scheduled_job):
    pause(scheduled_job, actor="operator", reason="maintenance")
    operator_client.post(reverse("jobs_resume", args=[scheduled_job]))
    operator_client.post(reverse("jobs_run_now", args=[scheduled_job]))

    resume = AuditTrail.objects.get(action="job.resume")
    assert (resume.actor, resume.object_id) == ("user:operator", scheduled_job)
    run = JobRun.objects.get(job=scheduled_job)
    record = AuditTrail.objects.get(action="job.run")
    assert record.actor == "user:operator"
    assert (record.object_type, record.object_id, record.job_run_id) == (
        "jobs.jobrun",
        str(run.pk),
        run.pk,
    )
    assert record.request_id  # made by the middleware when no header came


def test_cron_edit_leaves_an_audit_record_with_before_and_after(scheduled_job):
    set_cron(scheduled_job, "0 3 * * *", actor="alice")

    record = AuditTrail.objects.get(action="job.edit_cron")
    assert record.actor == "user:alice"
    assert record.changes == {"cron": ["*/5 * * * *", "0 3 * * *"]}


@override_settings(JOBS_API_TOKEN=TOKEN)
def test_api_run_leaves_an_audit_record(client, scheduled_job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/jobs/{scheduled_job}/runs",
            data=json.dumps({"params": {"n": 2}, "dry_run": True}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
            HTTP_X_REQUEST_ID="req-api-7",
        )

    assert response.status_code == 202
    assert response["X-Request-ID"] == "req-api-7"
    run_id = response.json()["run_id"]
    record = AuditTrail.objects.get(job_run_id=run_id)
    assert record.actor == "api:JOBS_API_TOKEN"  # which key: here the bootstrap one
    assert record.action == "job.dry_run"
    assert (record.object_type, record.object_id) == ("jobs.jobrun", str(run_id))
    assert record.changes["params"] == [None, {"n": 2}]
    assert record.request_id == "req-api-7"


@override_settings(JOBS_API_TOKEN=TOKEN)
def test_a_refused_api_call_leaves_no_audit_record(client, scheduled_job):
    response = client.post(
        f"/api/jobs/{scheduled_job}/runs",
        data=json.dumps({"params": {"n": "many"}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
    )

    assert response.status_code == 400
    assert not AuditTrail.objects.exists()


def test_a_malformed_request_id_header_is_replaced():
    from django.http import HttpResponse
    from django.test import RequestFactory

    from audit.middleware import RequestIdMiddleware, current_request_id

    seen = {}

    def view(request):
        seen["id"] = current_request_id()
        return HttpResponse()

    response = RequestIdMiddleware(view)(
        RequestFactory().get("/", HTTP_X_REQUEST_ID="bad id\nwith newline" + "x" * 80)
    )
    assert len(seen["id"]) == 32 and seen["id"] == response["X-Request-ID"]
    assert current_request_id() == ""


def test_a_request_id_with_a_trailing_newline_is_replaced_not_echoed(client):
    """`$` in a regex matches before a final newline; echoing that id would
    put a newline in a response header, which Django refuses with a 500."""
    response = client.get("/health/", HTTP_X_REQUEST_ID="req-1\n")

    assert response.status_code in (200, 503)
    assert response["X-Request-ID"] != "req-1\n"
    assert "\n" not in response["X-Request-ID"]

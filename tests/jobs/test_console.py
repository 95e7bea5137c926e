"""The operations console: "Run now…" with parameters, preview and confirm,
cancellation, health without dry runs, the live fragments and each run's log."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from jobs import context as job_context
from jobs.alert_models import CompletionNotice
from jobs.api_keys import create_api_key
from jobs.cancel import NotCancelable, cancel_run
from jobs.enqueue import enqueue_run, rerun
from jobs.models import JobAction, JobRun, JobRunLog, RunStatus, Trigger
from jobs.param_forms import ParamForm
from jobs.params import Choices, Range, params_from_signature
from jobs.runner import execute_queued, run_job
from jobs.schedules import pause, sync_schedules
from tests.factories import JobRunFactory, OrganizationFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

OPERATOR_PERMISSIONS = ["view_jobrun", "view_schedulestate", "view_jobaction", "run_job"]


@pytest.fixture
def operator_client(client):
    user = UserFactory(username="operator", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__in=OPERATOR_PERMISSIONS)
    )
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def instant_cancel_checks(monkeypatch):
    """ctx.cancelled() looks at the database on every call in these tests."""
    monkeypatch.setattr(job_context, "CANCEL_CHECK_INTERVAL", 0)


def typed(
    ctx,
    *,
    limit: Annotated[int, Range(ge=1, le=10)],
    force: bool = False,
    day: date | None = None,
    at: datetime | None = None,
    mode: Annotated[str, Choices("fast", "safe")] = "safe",
    note: str = "",
):
    return {}


# --- The parameter form ----------------------------------------------------------


def test_param_form_makes_typed_fields_and_coerces_like_the_runner():
    form = ParamForm(
        {
            "param_limit": "7",
            "param_force": "on",
            "param_day": "2026-03-01",
            "param_at": "2026-03-01T10:00:05",
            "param_mode": "fast",
        },
        params=params_from_signature(typed),
    )
    assert form.is_valid(), form.errors
    assert form.params() == {
        "limit": 7,
        "force": True,
        "day": "2026-03-01",
        "at": "2026-03-01T10:00:05+00:00",
        "mode": "fast",
    }


def test_param_form_refuses_out_of_range_missing_and_unknown_choice_values():
    form = ParamForm(
        {"param_limit": "11", "param_mode": "reckless", "param_day": "not a date"},
        params=params_from_signature(typed),
    )
    assert not form.is_valid()
    assert "param_limit" in form.errors and "param_mode" in form.errors
    assert "param_day" in form.errors
    missing = ParamForm({}, params=params_from_signature(typed))
    assert not missing.is_valid() and "param_limit" in missing.errors


# --- Run now… ----------------------------------------------------------------------


@pytest.fixture
def greeting_job(register_job):
    @register_job("tests.console_greet")
    def greet(ctx, *, times: Annotated[int, Range(ge=1, le=5)], loud: bool = False):
        """Greets."""
        ctx.count(processed=times, succeeded=times)
        return {"greeted": times, "loud": loud}

    return "tests.console_greet"


def test_run_now_form_queues_a_run_with_the_typed_parameters(operator_client, greeting_job):
    url = reverse("jobs_start", args=[greeting_job])
    page = operator_client.get(url)
    assert page.status_code == 200
    assert 'name="param_times"' in page.content.decode()

    response = operator_client.post(url, {"param_times": "3", "param_loud": "on"})

    run = JobRun.objects.get(job=greeting_job)
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/change/")
    assert (run.params, run.dry_run, run.trigger) == ({"times": 3, "loud": True}, False, "admin")


def test_bad_values_are_form_errors_and_nothing_is_recorded(operator_client, greeting_job):
    url = reverse("jobs_start", args=[greeting_job])
    response = operator_client.post(url, {"param_times": "9", "tenant": "nobody-here"})

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "param_times" in errors and "tenant" in errors
    assert not JobRun.objects.filter(job=greeting_job).exists()
    assert not JobAction.objects.filter(job=greeting_job).exists()


def test_regenerate_invoice_can_be_started_with_its_parameters(operator_client):
    page = operator_client.get(reverse("jobs_start", args=["billing.regenerate_invoice"]))
    html = page.content.decode()
    assert 'name="param_month"' in html and 'name="param_organization"' in html
    assert 'name="param_reason"' not in html  # asked on the confirmation page


def test_a_job_with_impact_is_previewed_then_confirmed_with_a_reason(
    operator_client, register_job, drain_queue, django_capture_on_commit_callbacks
):
    @register_job("tests.console_mail", impact="emails every customer", ask_reason=True)
    def mail(ctx, *, subject: str, reason: str = ""):
        if ctx.dry_run:
            ctx.count(processed=12)
            return {"would_queue": 12, "would_bill_minor": {"EUR": 647313}}
        return {"queued": 12, "reason": reason}

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            reverse("jobs_start", args=["tests.console_mail"]), {"param_subject": "Hello"}
        )
    preview = JobRun.objects.get(job="tests.console_mail")
    assert preview.dry_run and response["Location"] == reverse("jobs_confirm", args=[preview.pk])
    waiting = operator_client.get(response["Location"]).content.decode()
    assert "this page shows its result when it ends" in waiting

    assert drain_queue() == 1
    page = operator_client.get(response["Location"]).content.decode()
    assert "queue 12; bill EUR 6,473.13" in page
    assert JobRun.objects.filter(job="tests.console_mail").count() == 1

    refused = operator_client.post(response["Location"], {"reason": "  "})
    assert "reason" in refused.context["form"].errors
    assert JobRun.objects.filter(job="tests.console_mail").count() == 1

    operator_client.post(response["Location"], {"reason": "customer asked for a resend"})
    real = JobRun.objects.get(job="tests.console_mail", dry_run=False)
    assert real.params == {"subject": "Hello", "reason": "customer asked for a resend"}
    confirmed = JobAction.objects.get(action="confirmed", run=real)
    assert confirmed.actor == "operator"
    assert confirmed.detail["reason"] == "customer asked for a resend"
    assert confirmed.detail["preview_run"] == preview.pk


def test_one_click_run_now_of_a_job_with_impact_is_refused(operator_client):
    sync_schedules()
    response = operator_client.post(
        reverse("jobs_run_now", args=["subscriptions.expire"]), follow=True
    )
    assert "which previews it first" in response.content.decode()
    assert not JobRun.objects.filter(job="subscriptions.expire").exists()


def test_expire_preview_reads_like_a_sentence():
    from jobs.humanize import preview_sentence
    from jobs.registry import get_job

    spec = get_job("subscriptions.expire")
    sentence = preview_sentence(
        spec.preview, {"would_expire": 1234, "would_suspend": 3, "tenants_affected": 12}, {}
    )
    assert sentence.startswith("expires 1,234 subscriptions and suspends 3 in 12 organizations")


def test_tenant_search_finds_organizations_by_key_or_name_prefix(operator_client):
    OrganizationFactory(key="acme-eu", name="Acme Europe")
    OrganizationFactory(key="zeta", name="Acme Zeta")
    OrganizationFactory(key="other", name="Other")

    found = operator_client.get(reverse("jobs_tenant_search"), {"q": "acme"}).json()["results"]

    assert {r["key"] for r in found} == {"acme-eu", "zeta"}


# --- Cancellation ----------------------------------------------------------------


def test_a_canceled_queued_run_is_never_run(register_job):
    ran = []

    @register_job("tests.console_queued")
    def queued(ctx):
        ran.append(1)
        return {}

    run, _ = enqueue_run("tests.console_queued", trigger=Trigger.ADMIN, triggered_by="alice")
    assert cancel_run(run, actor="alice", reason="wrong month") == "canceled"

    execute_queued(run.pk)

    run.refresh_from_db()
    assert ran == [] and run.status == RunStatus.CANCELED
    action = JobAction.objects.get(run=run, action="cancel")
    assert (action.actor, action.detail["reason"]) == ("alice", "wrong month")
    with pytest.raises(NotCancelable):
        cancel_run(run, actor="alice", reason="again")


def test_a_running_run_stops_at_its_next_batch_keeping_counts_and_checkpoint(register_job):
    done_items = []

    @register_job("tests.console_batches")
    def batches(ctx):
        start = (ctx.resume_state or {}).get("next", 0)
        for batch in range(start, 5):
            done_items.append(batch)
            ctx.count(processed=1)
            if batch == 1 and not ctx.run.rerun_of_id:
                cancel_run(ctx.run, actor="bob", reason="too slow today")
            ctx.checkpoint({"next": batch + 1})
        return {"batches": 5 - start}

    run = run_job("tests.console_batches")

    assert run.status == RunStatus.CANCELED
    assert (run.processed, run.checkpoint) == (2, {"next": 2})
    assert "canceled by bob: too slow today" in run.error
    assert JobAction.objects.filter(run=run, action="cancel_requested", actor="bob").exists()

    again = rerun(run, actor="bob", trigger=Trigger.ADMIN)
    execute_queued(again.pk)
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED
    assert done_items == [0, 1, 2, 3, 4]  # continued from batch 2, nothing repeated


def chunk_that_cancels(ctx, items):
    """Fan-out target: the first chunk asks its run to stop."""
    if ctx.index == 0 and not ctx.run.rerun_of_id:
        cancel_run(ctx.run, actor="carol", reason="provider outage")
    ctx.count(processed=len(items), succeeded=len(items))
    return {"items": len(items)}


def test_a_fanned_out_run_stops_between_chunks_and_a_rerun_continues_its_chunks(register_job):
    @register_job("tests.console_fan")
    def fan(ctx):
        result = ctx.fan_out(
            "tests.jobs.test_console.chunk_that_cancels",
            items=list(range(10)),
            chunk_size=2,
            enqueue=False,
        )
        return {"chunks": result.chunks}

    run = run_job("tests.console_fan")

    assert run.status == RunStatus.CANCELED
    statuses = list(run.chunks.order_by("index").values_list("status", flat=True))
    assert statuses[0] == "done" and set(statuses[1:]) == {"pending"}
    assert run.processed == 2  # counts so far: the chunk that was done

    again = rerun(run, actor="carol", trigger=Trigger.ADMIN)
    execute_queued(again.pk)
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED
    assert (again.processed, again.chunks.count()) == (10, 5)


def test_cancel_page_records_who_and_why(operator_client):
    run = JobRunFactory(job="tests.anything", status=RunStatus.QUEUED)
    response = operator_client.post(reverse("jobs_cancel", args=[run.pk]), {"reason": "dup"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.status, run.cancel_requested_by, run.cancel_reason) == (
        "canceled",
        "operator",
        "dup",
    )


# --- Health ------------------------------------------------------------------------


def test_failing_dry_runs_neither_fail_nor_succeed_a_job(operator_client, register_job):
    @register_job("tests.console_health", schedule="0 * * * *")
    def health(ctx):
        return {}

    sync_schedules()
    for _ in range(3):
        JobRunFactory(job="tests.console_health", status=RunStatus.FAILED, dry_run=True)
    JobRunFactory(job="tests.console_health", status=RunStatus.SUCCEEDED, dry_run=True)

    overview = operator_client.get(reverse("jobs_overview")).context["overview"]
    row = next(j for j in overview.jobs if j.name == "tests.console_health")
    assert not row.failing and row.failures_24h == 0 and row.last_success_at is None
    assert row.health == "never run"

    pause("tests.console_health", actor="alice", reason="migrating")
    fragment = operator_client.get(reverse("jobs_overview"), {"fragment": "1"})
    html = fragment.content.decode()
    assert "<html" not in html and 'id="count-paused"' in html
    row_html = html.split('id="job-testsconsole_health"')[1].split("</tr>")[0]
    assert "job-paused" in row_html and "Resume" in row_html


# --- Live page and the run's own log ---------------------------------------------


def test_a_run_keeps_its_own_log_lines(register_job, operator_client):
    @register_job("tests.console_logs")
    def logs(ctx):
        logging.getLogger("tests.console").info("working on %s", "batch 1")
        logging.getLogger("tests.console").debug("too chatty to keep")
        return {}

    run = run_job("tests.console_logs")

    messages = [line["message"] for line in JobRunLog.objects.get(run=run).lines]
    assert "working on batch 1" in messages
    assert "too chatty to keep" not in messages
    assert any(m.startswith("finished succeeded") for m in messages)
    live = operator_client.get(reverse("jobs_run_live", args=[run.pk]))
    assert "working on batch 1" in live.content.decode() and live["X-Live-Done"] == "1"


def test_the_run_page_shows_progress_with_rate_and_eta(operator_client):
    from django.utils import timezone

    started = timezone.now() - timezone.timedelta(seconds=10)
    run = JobRunFactory(
        job="tests.anything",
        status=RunStatus.RUNNING,
        started_at=started,
        finished_at=None,
        progress_done=50,
        progress_total=150,
    )
    html = operator_client.get(reverse("admin:jobs_jobrun_change", args=[run.pk])).content.decode()
    assert "50 / 150 (33%)" in html
    assert "items/s" in html and "ETA" in html
    assert f'data-live-url="{reverse("jobs_run_live", args=[run.pk])}"' in html
    assert "Cancel…" in html


# --- The API's cancel and log ----------------------------------------------------


def bearer(scopes: list[str], name: str = "ops-bot") -> dict[str, str]:
    key = create_api_key(name=name, owner="ops", scopes=scopes, actor="admin")
    return {"HTTP_AUTHORIZATION": f"Bearer {key.secret}"}


def test_api_cancels_a_queued_run_with_a_scoped_key(client):
    run = JobRunFactory(job="billing.regenerate_invoice", status=RunStatus.QUEUED)
    url = f"/api/jobs/runs/{run.pk}/cancel"

    reader = client.post(
        url, data="{}", content_type="application/json", **bearer(["jobs:read"], "reader")
    )
    assert reader.status_code == 403
    runner = bearer(["jobs:run:billing.*"])
    no_reason = client.post(url, data="{}", content_type="application/json", **runner)
    assert no_reason.status_code == 400 and no_reason.json()["field"] == "reason"

    body = '{"reason": "sent by mistake"}'
    response = client.post(url, data=body, content_type="application/json", **runner)

    assert response.status_code == 202
    assert response.json() == {"run_id": run.pk, "outcome": "canceled", "status": "canceled"}
    again = client.post(url, data=body, content_type="application/json", **runner)
    assert again.status_code == 409
    assert JobAction.objects.get(run=run, action="cancel").actor == "ops-bot"


def test_api_run_status_with_log_gives_the_runs_lines(client, register_job):
    @register_job("tests.console_api_log")
    def noisy(ctx):
        logging.getLogger("tests.console").warning("disk nearly full")
        return {}

    run = run_job("tests.console_api_log")
    auth = bearer(["jobs:read"])

    plain = client.get(f"/api/jobs/runs/{run.pk}", **auth).json()
    with_log = client.get(f"/api/jobs/runs/{run.pk}?log=1", **auth).json()

    assert "log" not in plain
    line = next(x for x in with_log["log"] if x["message"] == "disk nearly full")
    assert line["level"] == "WARNING" and line["at"].endswith("+00:00")


# --- Charts, queues and clusters -------------------------------------------------


def test_charts_show_runs_per_hour_by_outcome_durations_queues_and_clusters(operator_client):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.models import ClusterHeartbeat

    now = timezone.now()
    for status, seconds in (("succeeded", 2), ("succeeded", 4), ("failed", 10)):
        JobRunFactory(
            job="billing.regenerate_invoice",
            status=status,
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
            processed=5,
        )
    JobRunFactory(job="billing.regenerate_invoice", status="failed", dry_run=True)
    JobRunFactory(job="billing.regenerate_invoice", status="queued", queue="default")
    ClusterHeartbeat.objects.create(cluster="backoffice", host="worker-1", seen_at=now)

    response = operator_client.get(reverse("jobs_charts"), {"job": "billing.regenerate_invoice"})

    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="bar-failed"') == 2  # 24 h and 7 d; the dry run left out
    assert "(3 in all)" in html and "(15 in all)" in html
    durations = response.context["durations"]
    assert durations == [
        {**durations[0], "job": "billing.regenerate_invoice", "runs": 3, "p50": 4.0, "p95": 10.0}
    ]
    default = next(q for q in response.context["queues"] if q["queue"] == "default")
    assert default["queued_runs"] == 1
    assert "worker-1" in html and "s ago" in html


def test_schedules_explain_their_cron_in_words_in_the_scheduler_time_zone(operator_client):
    from django.test import override_settings

    sync_schedules()
    with override_settings(SCHEDULER_TIMEZONE="Europe/Berlin"):
        html = operator_client.get(reverse("admin:jobs_schedulestate_changelist")).content.decode()
    assert "<code>0 9 * * *</code>" in html and "At 09:00 (Europe/Berlin)" in html


def test_money_is_shown_in_major_units_with_its_currency():
    from jobs.humanize import money, summary_rows

    assert money(647313, "EUR") == "EUR 6,473.13"
    assert money(1200, "JPY") == "JPY 1,200"
    rows = dict(
        summary_rows({"revenue_minor": {"EUR": 647313}, "total_minor": 39950, "currency": "USD"})
    )
    assert rows == {"Revenue": "EUR 6,473.13", "Total": "USD 399.50", "Currency": "USD"}


@pytest.mark.postgres
def test_the_paginator_estimates_an_unfiltered_count_from_the_planner(monkeypatch):
    from django.db import connection

    from jobs import paginator

    JobRunFactory.create_batch(3, job="tests.anything")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_jobrun")
    monkeypatch.setattr(paginator, "ESTIMATE_FROM", 0)
    monkeypatch.setattr(paginator, "COUNT_CAP", 2)

    everything = paginator.EstimatedCountPaginator(JobRun.objects.order_by("-id"), 50)
    filtered = paginator.EstimatedCountPaginator(JobRun.objects.filter(job="tests.anything"), 50)

    assert everything.count == paginator.estimated_rows("jobs_jobrun") == 3
    assert filtered.count == 2  # capped, not COUNT(*) of every match


def test_run_now_can_ask_for_a_completion_notice(operator_client, greeting_job):
    url = reverse("jobs_start", args=[greeting_job])
    refused = operator_client.post(url, {"param_times": "2", "notify_emails": "not-an-address"})
    assert "notify_emails" in refused.context["form"].errors
    assert not JobRun.objects.filter(job=greeting_job).exists()

    operator_client.post(
        url,
        {
            "param_times": "2",
            "notify_emails": "ops@example.com; lead@example.com",
            "notify_webhook": "https://hooks.example.com/jobs",
        },
    )

    run = JobRun.objects.get(job=greeting_job)
    notice = CompletionNotice.objects.get(run=run)
    assert notice.emails == "ops@example.com, lead@example.com"
    assert notice.webhook_url == "https://hooks.example.com/jobs"
    assert notice.created_by == "operator"


def test_a_previewed_start_carries_its_notice_to_the_real_run(
    operator_client, register_job, drain_queue, django_capture_on_commit_callbacks
):
    @register_job("tests.console_notify_mail", impact="emails every customer")
    def mail(ctx, *, subject: str):
        return {"would_queue": 1} if ctx.dry_run else {"queued": 1}

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            reverse("jobs_start", args=["tests.console_notify_mail"]),
            {"param_subject": "Hi", "notify_emails": "ops@example.com"},
        )
    preview = JobRun.objects.get(job="tests.console_notify_mail")
    assert not CompletionNotice.objects.filter(run=preview).exists()
    assert drain_queue() == 1
    page = operator_client.get(response["Location"])
    assert page.context["form"]["notify_emails"].value() == "ops@example.com"

    operator_client.post(response["Location"], {"reason": "", "notify_emails": "ops@example.com"})

    real = JobRun.objects.get(job="tests.console_notify_mail", dry_run=False)
    assert CompletionNotice.objects.get(run=real).emails == "ops@example.com"


def test_run_now_asks_who_and_what_first_and_the_notice_last(operator_client, greeting_job):
    form = operator_client.get(reverse("jobs_start", args=[greeting_job])).context["form"]

    assert list(form.fields) == [
        "tenant",
        "dry_run",
        "param_times",
        "param_loud",
        "notify_emails",
        "notify_webhook",
    ]

"""The jobs admin, as staff use it: schedules, runs, the overview, permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule, Task

from jobs.models import (
    ChunkStatus,
    JobAction,
    JobChunk,
    JobItemFailure,
    JobRun,
    RunStatus,
    ScheduleState,
    Trigger,
)
from jobs.runner import run_job
from jobs.schedules import pause, sync_schedules
from tests.factories import JobRunFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

VIEW_PERMISSIONS = [
    "view_jobrun",
    "view_schedulestate",
    "view_jobaction",
    "view_jobitemfailure",
]
OPERATOR_PERMISSIONS = [*VIEW_PERMISSIONS, "change_schedulestate", "run_job"]


def staff_user(username: str, codenames: list[str]):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames)
    )
    return user


@pytest.fixture
def operator():
    return staff_user("operator", OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer():
    return staff_user("viewer", VIEW_PERMISSIONS)


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def counted_job(register_job):
    """A throwaway scheduled job that counts three items."""

    @register_job("tests.admin_counted", schedule="*/5 * * * *")
    def counted(ctx, *, n: int = 3):
        """Counts n items."""
        ctx.progress(n, n)
        ctx.count(processed=n, succeeded=n)
        return {"counted": n, "dry_run": ctx.dry_run}

    sync_schedules()
    return ScheduleState.objects.select_related("schedule").get(job="tests.admin_counted")


def schedule_change_url(state: ScheduleState) -> str:
    return reverse("admin:jobs_schedulestate_change", args=[state.pk])


def run_change_url(run: JobRun) -> str:
    return reverse("admin:jobs_jobrun_change", args=[run.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- Schedules -------------------------------------------------------------------


def test_schedules_list_shows_cron_next_runs_last_run_and_pause_state(operator_client, counted_job):
    run = JobRunFactory(job="tests.admin_counted", status=RunStatus.PARTIAL)
    pause("tests.admin_counted", actor="alice", reason="provider outage")

    response = operator_client.get(reverse("admin:jobs_schedulestate_changelist"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Job schedules" in html
    assert "*/5 * * * *" in html
    assert run_change_url(run) in html and "partial" in html
    assert "alice" in html and "provider outage" in html
    changelist = response.context["cl"]
    row = next(s for s in changelist.result_list if s.job == "tests.admin_counted")
    assert len(changelist.model_admin.next_runs(row).split(",")) == 5


def test_schedules_list_reads_every_rows_last_run_at_once(
    operator_client, counted_job, django_assert_max_num_queries
):
    """Not a query per job: the page's rows get their latest runs in two."""
    JobRunFactory.create_batch(3, job="tests.admin_counted")
    url = reverse("admin:jobs_schedulestate_changelist")
    operator_client.get(url)  # the session, permissions and caches warm

    with django_assert_max_num_queries(12) as queries:
        html = operator_client.get(url).content.decode()

    lookups = [
        q for q in queries.captured_queries if "ORDER BY" in q["sql"] and "LIMIT 1" in q["sql"]
    ]
    assert len(lookups) == 1  # one UNION of per-job lookups
    assert "never run" in html


def test_run_now_enqueues_a_run_that_reaches_succeeded(
    operator_client, counted_job, drain_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("jobs_run_now", args=["tests.admin_counted"]))

    assert response.status_code == 302
    run = JobRun.objects.get(job="tests.admin_counted")
    assert run.status == RunStatus.QUEUED
    assert (run.trigger, run.triggered_by, run.dry_run) == (Trigger.ADMIN, "operator", False)
    assert run.task_id

    assert drain_queue() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.counts == {"processed": 3, "succeeded": 3, "failed": 0, "skipped": 0}
    assert JobAction.objects.filter(actor="operator", action="run", run=run).exists()


def test_dry_run_enqueues_a_dry_run_recorded_with_who(
    operator_client, counted_job, drain_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("jobs_dry_run", args=["tests.admin_counted"]))
    drain_queue()

    run = JobRun.objects.get(job="tests.admin_counted")
    assert run.dry_run is True
    assert run.status == RunStatus.SUCCEEDED
    assert run.summary == {"counted": 3, "dry_run": True}
    assert JobAction.objects.filter(actor="operator", action="dry_run", run=run).exists()


def test_run_now_and_dry_run_actions_on_the_schedule_list(operator_client, counted_job):
    url = reverse("admin:jobs_schedulestate_changelist")
    for action in ("run_now", "dry_run"):
        response = operator_client.post(
            url, {"action": action, "_selected_action": [counted_job.pk]}, follow=True
        )
        assert response.status_code == 200
    runs = JobRun.objects.filter(job="tests.admin_counted", triggered_by="operator")
    assert sorted(runs.values_list("dry_run", flat=True)) == [False, True]


def test_run_now_of_a_job_with_a_required_param_is_a_message_not_a_500(
    operator_client, register_job
):
    @register_job("tests.admin_needs_param")
    def needs_param(ctx, *, org: str):
        return {}

    response = operator_client.post(
        reverse("jobs_run_now", args=["tests.admin_needs_param"]), follow=True
    )

    assert response.status_code == 200
    assert any("org" in m and "not run" in m for m in messages_of(response))
    assert not JobRun.objects.filter(job="tests.admin_needs_param").exists()


def test_run_now_of_an_unknown_job_is_a_message_not_a_500(operator_client):
    response = operator_client.post(reverse("jobs_run_now", args=["tests.nope"]), follow=True)
    assert response.status_code == 200
    assert any("unknown job" in m for m in messages_of(response))


def test_pause_requires_a_reason(operator_client, counted_job):
    url = reverse("jobs_pause", args=["tests.admin_counted"])

    response = operator_client.post(url, {"reason": "   "})

    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    counted_job.refresh_from_db()
    assert counted_job.paused is False
    assert not JobAction.objects.filter(action="pause").exists()


def test_pause_records_who_why_and_since(operator_client, counted_job):
    url = reverse("jobs_pause", args=["tests.admin_counted"])
    assert operator_client.get(url).status_code == 200

    response = operator_client.post(url, {"reason": "Stripe is down"})

    assert response.status_code == 302
    counted_job.refresh_from_db()
    assert counted_job.paused is True
    assert counted_job.paused_by == "operator"
    assert counted_job.pause_reason == "Stripe is down"
    assert counted_job.paused_at is not None
    assert JobAction.objects.filter(
        actor="operator", action="pause", job="tests.admin_counted"
    ).exists()
    page = operator_client.get(schedule_change_url(counted_job)).content.decode()
    assert "Stripe is down" in page
    assert reverse("jobs_resume", args=["tests.admin_counted"]) in page


def test_pause_action_on_the_list_asks_for_a_reason_first(operator_client, counted_job):
    url = reverse("admin:jobs_schedulestate_changelist")
    selected = {"action": "pause_schedules", "_selected_action": [counted_job.pk]}

    asked = operator_client.post(url, selected)
    assert asked.status_code == 200
    assert "reason" in asked.context["form"].fields

    empty = operator_client.post(url, {**selected, "apply": "1", "reason": ""})
    assert empty.status_code == 200
    assert empty.context["form"].errors["reason"]
    counted_job.refresh_from_db()
    assert counted_job.paused is False

    done = operator_client.post(url, {**selected, "apply": "1", "reason": "migrating"})
    assert done.status_code == 302
    counted_job.refresh_from_db()
    assert (counted_job.paused, counted_job.pause_reason) == (True, "migrating")


def test_resume_runs_the_next_slot_without_replaying_missed_ones(operator_client, counted_job):
    pause("tests.admin_counted", actor="alice", reason="maintenance")
    Schedule.objects.filter(pk=counted_job.schedule_id).update(
        next_run=timezone.now() - timedelta(days=2)
    )

    response = operator_client.post(reverse("jobs_resume", args=["tests.admin_counted"]))

    assert response.status_code == 302
    counted_job.refresh_from_db()
    schedule = Schedule.objects.get(pk=counted_job.schedule_id)
    now = timezone.now()
    assert counted_job.paused is False
    assert counted_job.resumed_by == "operator"
    assert schedule.repeats == -1
    assert now < schedule.next_run <= now + timedelta(minutes=5)
    assert JobAction.objects.filter(actor="operator", action="resume").exists()


def test_resume_of_a_schedule_that_is_not_paused_is_a_message(operator_client, counted_job):
    response = operator_client.post(
        reverse("jobs_resume", args=["tests.admin_counted"]), follow=True
    )
    assert response.status_code == 200
    assert any("not paused" in m for m in messages_of(response))


def test_cron_edit_rejects_an_invalid_expression_with_a_form_error(operator_client, counted_job):
    response = operator_client.post(schedule_change_url(counted_job), {"cron": "61 * * * *"})

    assert response.status_code == 200
    assert "61 * * * *" in str(response.context["adminform"].form.errors["cron"])
    assert Schedule.objects.get(pk=counted_job.schedule_id).cron == "*/5 * * * *"


def test_cron_edit_accepts_six_fields_seconds_first_and_stores_the_normalized_form(
    operator_client, counted_job, settings
):
    settings.SCHEDULER_TIMEZONE = "UTC"  # the hours below are UTC hours
    response = operator_client.post(schedule_change_url(counted_job), {"cron": "0 0 */6 * * *"})

    assert response.status_code == 302
    schedule = Schedule.objects.get(pk=counted_job.schedule_id)
    assert schedule.cron == "0 */6 * * *"
    assert schedule.next_run > timezone.now()
    assert schedule.next_run.minute == 0 and schedule.next_run.hour % 6 == 0
    assert JobAction.objects.filter(
        actor="operator", action="edit_cron", detail={"from": "*/5 * * * *", "to": "0 */6 * * *"}
    ).exists()
    kept = {r.job: r.action for r in sync_schedules()}
    assert kept["tests.admin_counted"] == "kept"


def test_job_owned_schedules_are_read_only_in_django_q2_admin(admin_client, counted_job):
    url = reverse("admin:django_q_schedule_change", args=[counted_job.schedule_id])
    admin_client.post(url, {"func": "os.system", "cron": "* * * * *"})
    assert Schedule.objects.get(pk=counted_job.schedule_id).func == "jobs.runner.run_scheduled"


@override_settings(BACKGROUND_JOBS_ENABLED=False)
def test_banner_says_scheduled_jobs_are_off_when_disabled(operator_client, counted_job):
    for url in (reverse("admin:jobs_schedulestate_changelist"), reverse("jobs_overview")):
        assert "Scheduled jobs are off" in operator_client.get(url).content.decode()


def test_no_banner_when_background_jobs_are_enabled(operator_client, counted_job):
    page = operator_client.get(reverse("jobs_overview")).content.decode()
    assert "Scheduled jobs are off" not in page


# --- Runs ------------------------------------------------------------------------


def test_run_detail_shows_params_counts_summary_failures_and_links(operator_client, register_job):
    @register_job("tests.detail", supports_item_rerun=True)
    def detail(ctx):
        pass

    original = JobRunFactory(job="tests.detail")
    task_id = "a" * 32
    Task.objects.create(
        id=task_id,
        name="tests.detail#1",
        func="jobs.runner.execute_queued",
        started=timezone.now(),
        stopped=timezone.now(),
        success=False,
    )
    run = JobRunFactory(
        job="tests.detail",
        status=RunStatus.PARTIAL,
        params={"grace_days": 3},
        processed=10,
        succeeded=8,
        failed=2,
        skipped=1,
        summary={"expired": 8},
        error="two items failed",
        progress_done=5,
        progress_total=10,
        task_id=task_id,
        rerun_of=original,
    )
    JobItemFailure.objects.create(run=run, item_key="org-7", error="card declined")

    response = operator_client.get(run_change_url(run))

    assert response.status_code == 200
    html = response.content.decode()
    assert "grace_days" in html and "&quot;expired&quot;: 8" in html
    assert "processed 10 · succeeded 8 · failed 2 · skipped 1" in html
    assert "5 / 10 (50%)" in html
    assert "two items failed" in html
    assert "org-7" in html and "card declined" in html
    assert reverse("admin:django_q_failure_change", args=[task_id]) in html
    assert run_change_url(original) in html
    assert reverse("jobs_rerun", args=[run.pk]) in html
    assert reverse("jobs_rerun_failed_items", args=[run.pk]) in html


def test_run_detail_survives_a_task_id_without_a_task_row(operator_client):
    run = JobRunFactory(task_id="b" * 32)
    response = operator_client.get(run_change_url(run))
    assert response.status_code == 200
    assert "no task result stored yet" in response.content.decode()


def test_run_detail_lists_the_chunks_of_a_fanned_out_run_only(operator_client):
    fanned = JobRunFactory()
    JobChunk.objects.create(
        run=fanned, index=0, items=[1, 2], status=ChunkStatus.DONE, processed=2, succeeded=2
    )
    JobChunk.objects.create(
        run=fanned, index=1, items=[3], status=ChunkStatus.RUNNING, claimed_by="worker-7"
    )
    plain = JobRunFactory()

    html = operator_client.get(run_change_url(fanned)).content.decode()
    assert "chunks (fan-out)" in html.lower()
    assert "worker-7" in html
    assert (
        "chunks (fan-out)"
        not in operator_client.get(run_change_url(plain)).content.decode().lower()
    )


def test_rerun_failed_items_is_offered_only_when_the_run_has_failed_items(operator_client):
    run = JobRunFactory()
    html = operator_client.get(run_change_url(run)).content.decode()
    assert reverse("jobs_rerun", args=[run.pk]) in html
    assert reverse("jobs_rerun_failed_items", args=[run.pk]) not in html


def test_run_list_filters_by_job_status_tenant_trigger_and_date_and_searches(operator_client):
    old = timezone.now() - timedelta(days=30)
    JobRunFactory(job="tests.a", status=RunStatus.FAILED, tenant="acme", trigger=Trigger.ADMIN)
    JobRunFactory(job="tests.b", status=RunStatus.SUCCEEDED, tenant="globex", created_at=old)
    JobRunFactory(job="tests.b", task_id="task-xyz")
    url = reverse("admin:jobs_jobrun_changelist")

    def found(query: dict) -> set[tuple[str, str]]:
        response = operator_client.get(url, query)
        assert response.status_code == 200
        return {(r.job, r.tenant) for r in response.context["cl"].result_list}

    assert found({"job": "tests.a"}) == {("tests.a", "acme")}
    assert found({"status__exact": "failed"}) == {("tests.a", "acme")}
    assert found({"tenant": "globex"}) == {("tests.b", "globex")}
    assert found({"trigger__exact": "admin"}) == {("tests.a", "acme")}
    since = str(timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(7))
    assert ("tests.b", "globex") not in found({"created_at__gte": since})
    assert found({"q": "acme"}) == {("tests.a", "acme")}
    assert found({"q": "task-xyz"}) == {("tests.b", "")}


def test_runs_cannot_be_added_edited_or_deleted_in_the_admin(admin_client):
    run = JobRunFactory(job="tests.readonly", tenant="acme")

    assert admin_client.get(reverse("admin:jobs_jobrun_add")).status_code == 403
    admin_client.post(run_change_url(run), {"job": "tests.changed", "tenant": "x"})
    assert admin_client.get(reverse("admin:jobs_jobrun_delete", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert (run.job, run.tenant) == ("tests.readonly", "acme")
    assert 'name="_save"' not in admin_client.get(run_change_url(run)).content.decode()


def test_rerun_creates_a_linked_run_recorded_with_who(
    operator_client, counted_job, drain_queue, django_capture_on_commit_callbacks
):
    original = run_job("tests.admin_counted", params={"n": 2})

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("jobs_rerun", args=[original.pk]))
    drain_queue()

    again = JobRun.objects.get(rerun_of=original)
    assert response.url == run_change_url(again)
    assert again.status == RunStatus.SUCCEEDED
    assert again.params == {"n": 2}
    assert again.only_items is None
    assert JobAction.objects.filter(actor="operator", action="rerun", run=again).exists()


def test_rerun_failed_items_passes_only_failed_keys(
    operator_client, register_job, drain_queue, django_capture_on_commit_callbacks
):
    seen = []

    @register_job("tests.admin_items", supports_item_rerun=True)
    def items(ctx):
        seen.append(ctx.only_items)
        for key in ("a", "b", "c", "d"):
            if not ctx.should_process(key):
                continue
            if key in ("b", "d") and ctx.only_items is None:
                ctx.item_failed(key, "flaky provider")
            else:
                ctx.count(processed=1, succeeded=1)
        return {}

    original = run_job("tests.admin_items")
    assert original.status == RunStatus.PARTIAL

    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("jobs_rerun_failed_items", args=[original.pk]))
    drain_queue()

    again = JobRun.objects.get(rerun_of=original)
    assert seen[-1] == {"b", "d"}
    assert sorted(again.only_items) == ["b", "d"]
    assert again.status == RunStatus.SUCCEEDED
    assert again.succeeded == 2
    action = JobAction.objects.get(actor="operator", action="rerun_failed_items", run=again)
    assert sorted(action.detail["only_items"]) == ["b", "d"]


def test_rerun_failed_items_of_a_run_without_failures_is_a_message_not_a_500(operator_client):
    run = JobRunFactory()
    response = operator_client.post(reverse("jobs_rerun_failed_items", args=[run.pk]), follow=True)
    assert response.status_code == 200
    assert any("no failed items" in m for m in messages_of(response))
    assert not JobRun.objects.filter(rerun_of=run).exists()


def test_rerun_of_a_job_no_longer_registered_is_a_message_not_a_500(operator_client):
    run = JobRunFactory(job="tests.gone")
    response = operator_client.post(reverse("jobs_rerun", args=[run.pk]), follow=True)
    assert response.status_code == 200
    assert any("unknown job" in m for m in messages_of(response))


# --- Overview --------------------------------------------------------------------


def test_overview_shows_an_overdue_schedule(operator_client, counted_job):
    Schedule.objects.filter(pk=counted_job.schedule_id).update(
        next_run=timezone.now() - timedelta(days=1)
    )

    response = operator_client.get(reverse("jobs_overview"))

    assert response.status_code == 200
    overview = response.context["overview"]
    row = next(j for j in overview.jobs if j.name == "tests.admin_counted")
    assert row.overdue is True
    assert overview.overdue == 1
    html = response.content.decode()
    row_html = html.split('id="job-testsadmin_counted"')[1].split("</tr>")[0]
    assert "overdue" in row_html


def test_overview_shows_failing_running_and_last_success(operator_client, counted_job):
    now = timezone.now()
    JobRunFactory(job="tests.admin_counted", status=RunStatus.SUCCEEDED, finished_at=now)
    JobRunFactory(job="tests.admin_counted", status=RunStatus.FAILED)
    JobRunFactory(
        job="tests.admin_counted",
        status=RunStatus.RUNNING,
        finished_at=None,
        progress_done=40,
        progress_total=100,
    )

    response = operator_client.get(reverse("jobs_overview"))

    overview = response.context["overview"]
    row = next(j for j in overview.jobs if j.name == "tests.admin_counted")
    assert row.failing and not row.healthy
    assert row.failures_24h == 1
    assert row.last_success_at == now
    assert [r.progress_done for r in row.running] == [40]
    assert (overview.failing, overview.running) == (1, 1)
    # The other jobs never ran: "never run", neither healthy nor failing.
    assert overview.healthy + overview.never_run == len(overview.jobs) - 1
    assert "40 / 100" in response.content.decode()


def test_overview_lists_every_registered_job_including_on_demand_ones(
    operator_client, register_job
):
    @register_job("tests.admin_on_demand")
    def on_demand(ctx):
        return {}

    response = operator_client.get(reverse("jobs_overview"))
    row = next(j for j in response.context["overview"].jobs if j.name == "tests.admin_on_demand")
    assert row.state is None and row.health == "never run" and not row.failing
    assert "on demand" in response.content.decode()


def test_admin_index_links_to_the_overview(operator_client):
    html = operator_client.get(reverse("admin:index")).content.decode()
    assert reverse("jobs_overview") in html


# --- Permissions -----------------------------------------------------------------


def test_staff_without_permission_gets_403_on_actions(viewer_client, counted_job):
    run = JobRunFactory(job="tests.admin_counted")
    JobItemFailure.objects.create(run=run, item_key="x", error="boom")
    pause("tests.admin_counted", actor="alice", reason="testing")
    urls = [
        reverse("jobs_run_now", args=["tests.admin_counted"]),
        reverse("jobs_dry_run", args=["tests.admin_counted"]),
        reverse("jobs_pause", args=["tests.admin_counted"]),
        reverse("jobs_resume", args=["tests.admin_counted"]),
        reverse("jobs_rerun", args=[run.pk]),
        reverse("jobs_rerun_failed_items", args=[run.pk]),
    ]

    for url in urls:
        assert viewer_client.post(url, {"reason": "x"}).status_code == 403, url
    assert viewer_client.get(reverse("jobs_pause", args=["tests.admin_counted"])).status_code == 403

    assert JobRun.objects.count() == 1
    counted_job.refresh_from_db()
    assert counted_job.paused_by == "alice"
    assert not JobAction.objects.filter(actor="viewer").exists()


def test_staff_without_permission_sees_pages_but_no_action_buttons(viewer_client, counted_job):
    run = JobRunFactory(job="tests.admin_counted")
    JobItemFailure.objects.create(run=run, item_key="x", error="boom")

    pages = {
        "list": viewer_client.get(reverse("admin:jobs_schedulestate_changelist")),
        "schedule": viewer_client.get(schedule_change_url(counted_job)),
        "run": viewer_client.get(run_change_url(run)),
        "overview": viewer_client.get(reverse("jobs_overview")),
    }

    for name, response in pages.items():
        assert response.status_code == 200, name
        html = response.content.decode()
        for action in ("jobs_run_now", "jobs_dry_run", "jobs_pause"):
            assert reverse(action, args=["tests.admin_counted"]) not in html, (name, action)
        assert reverse("jobs_rerun", args=[run.pk]) not in html, name
        assert reverse("jobs_rerun_failed_items", args=[run.pk]) not in html, name
    assert pages["list"].context["action_form"] is None


def test_staff_without_permission_cannot_use_the_list_actions(viewer_client, counted_job):
    response = viewer_client.post(
        reverse("admin:jobs_schedulestate_changelist"),
        {"action": "run_now", "_selected_action": [counted_job.pk]},
    )
    assert response.status_code in (200, 302)
    assert not JobRun.objects.exists()


def test_actions_must_be_posted(operator_client, counted_job):
    run = JobRunFactory(job="tests.admin_counted")
    for url in (
        reverse("jobs_run_now", args=["tests.admin_counted"]),
        reverse("jobs_resume", args=["tests.admin_counted"]),
        reverse("jobs_rerun", args=[run.pk]),
    ):
        assert operator_client.get(url).status_code == 405, url
    assert JobRun.objects.count() == 1


def test_actions_are_csrf_protected(operator, counted_job):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("jobs_run_now", args=["tests.admin_counted"]))
    assert response.status_code == 403
    assert not JobRun.objects.exists()


def test_non_staff_are_sent_to_the_login_page(client, counted_job):
    client.force_login(UserFactory(username="customer"))
    for url in (
        reverse("jobs_overview"),
        reverse("jobs_run_now", args=["tests.admin_counted"]),
    ):
        response = client.post(url) if "run" in url else client.get(url)
        assert response.status_code == 302
        assert reverse("admin:login") in response.url
    assert not JobRun.objects.exists()


def test_job_actions_are_a_read_only_record(admin_client):
    action = JobAction.objects.create(actor="alice", action="pause", job="tests.x")
    assert admin_client.get(reverse("admin:jobs_jobaction_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:jobs_jobaction_add")).status_code == 403
    url = reverse("admin:jobs_jobaction_delete", args=[action.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert JobAction.objects.filter(pk=action.pk).exists()


def test_rerun_failed_items_is_not_offered_for_a_set_based_job(operator_client, register_job):
    @register_job("tests.set_based")
    def set_based(ctx):
        pass

    run = JobRunFactory(job="tests.set_based", status=RunStatus.PARTIAL)
    JobItemFailure.objects.create(run=run, item_key="org-1", error="x")
    html = operator_client.get(run_change_url(run)).content.decode()
    assert reverse("jobs_rerun_failed_items", args=[run.pk]) not in html
    response = operator_client.post(reverse("jobs_rerun_failed_items", args=[run.pk]), follow=True)
    assert any("does not rerun single items" in m for m in messages_of(response))
    assert not JobRun.objects.filter(rerun_of=run).exists()

"""No admin path short of superuser makes the cluster call a function of one's
choosing, and a Schedule row written by other means is refused by the scheduler.

The staff member here holds every django_q permission and posts through the
real admin views with CSRF checks on, the token read from the page's form.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Failure, Schedule, Task
from django_q.scheduler import scheduler

from audit.models import AuditTrail
from jobs.models import JobAction, JobRun, RunStatus, ScheduleState
from jobs.schedules import HEARTBEAT_SCHEDULE, sync_schedules
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

CALLS: list[tuple] = []


def evil(*args, **kwargs):
    """Stands for os.system: the test fails if anything calls it."""
    CALLS.append((args, kwargs))


EVIL = f"{__name__}.evil"


@pytest.fixture(autouse=True)
def no_calls():
    CALLS.clear()
    yield
    CALLS.clear()


def staff_with(*, app_label: str, codenames: list[str] | None = None, username: str):
    user = UserFactory(username=username, is_staff=True)
    perms = Permission.objects.filter(content_type__app_label=app_label)
    if codenames is not None:
        perms = perms.filter(codename__in=codenames)
    user.user_permissions.set(perms)
    return user


@pytest.fixture
def django_q_staff():
    """Every django_q permission (add, change, delete, view of every model)."""
    return staff_with(app_label="django_q", username="qstaff")


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def token_from(client: Client, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200, url
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert match, f"no CSRF token in the form of {url}"
    return match.group(1)


def queued_tasks() -> int:
    return get_broker().queue_size()


def test_staff_with_every_django_q_permission_cannot_add_a_schedule(django_q_staff):
    client = csrf_client(django_q_staff)
    token = token_from(client, reverse("admin:django_q_schedule_changelist"))
    before = Schedule.objects.count()

    assert client.get(reverse("admin:django_q_schedule_add")).status_code == 403
    response = client.post(
        reverse("admin:django_q_schedule_add"),
        {
            "csrfmiddlewaretoken": token,
            "name": "pwn",
            "func": "os.system",
            "args": "'touch /tmp/pwned'",
            "schedule_type": "I",
            "minutes": "1",
            "repeats": "-1",
            "next_run_0": "2020-01-01",
            "next_run_1": "00:00:00",
        },
    )

    assert response.status_code == 403
    assert Schedule.objects.count() == before
    assert not Schedule.objects.filter(func="os.system").exists()


def test_staff_with_every_django_q_permission_cannot_change_a_schedule(django_q_staff):
    sync_schedules()
    heartbeat = Schedule.objects.get(name=HEARTBEAT_SCHEDULE)  # not a job's: editable before
    client = csrf_client(django_q_staff)
    token = token_from(client, reverse("admin:django_q_schedule_changelist"))
    url = reverse("admin:django_q_schedule_change", args=[heartbeat.pk])

    response = client.post(
        url,
        {
            "csrfmiddlewaretoken": token,
            "name": heartbeat.name,
            "func": "os.system",
            "hook": EVIL,
            "schedule_type": "I",
            "minutes": "1",
            "repeats": "-1",
            "next_run_0": "2020-01-01",
            "next_run_1": "00:00:00",
        },
    )

    assert response.status_code == 403
    heartbeat.refresh_from_db()
    assert (heartbeat.func, heartbeat.hook) == ("jobs.heartbeat.beat", None)
    assert (
        client.post(
            reverse("admin:django_q_schedule_delete", args=[heartbeat.pk]),
            {"csrfmiddlewaretoken": token, "post": "yes"},
        ).status_code
        == 403
    )
    assert Schedule.objects.filter(pk=heartbeat.pk).exists()


def failed_task(func: str = EVIL) -> Failure:
    now = timezone.now()
    Task.objects.create(
        id="0123456789abcdef0123456789abcdef",
        name="earlier-task",
        func=func,
        args=("rm -rf /",),
        kwargs={},
        started=now,
        stopped=now,
        success=False,
        result="boom",
    )
    return Failure.objects.get()


def test_staff_cannot_resubmit_a_failed_task(django_q_staff):
    failure = failed_task()
    client = csrf_client(django_q_staff)
    changelist = reverse("admin:django_q_failure_changelist")
    token = token_from(client, changelist)

    response = client.post(
        changelist,
        {
            "csrfmiddlewaretoken": token,
            "action": "_superuser_resubmit",
            "_selected_action": [failure.pk],
        },
    )
    legacy = client.post(
        changelist,
        {"csrfmiddlewaretoken": token, "action": "resubmit_task", "_selected_action": [failure.pk]},
    )

    assert response.status_code in (200, 302) and legacy.status_code in (200, 302)
    assert queued_tasks() == 0
    assert Failure.objects.filter(pk=failure.pk).exists()
    assert CALLS == []


def test_view_only_staff_are_not_offered_resubmit(django_q_staff):
    failed_task()
    client = csrf_client(django_q_staff)

    page = client.get(reverse("admin:django_q_failure_changelist")).content.decode()

    assert "resubmit" not in page.lower()


def test_a_superuser_may_still_resubmit_a_failed_task(admin_user):
    failure = failed_task(func="jobs.heartbeat.beat")
    client = csrf_client(admin_user)
    changelist = reverse("admin:django_q_failure_changelist")
    token = token_from(client, changelist)

    client.post(
        changelist,
        {
            "csrfmiddlewaretoken": token,
            "action": "_superuser_resubmit",
            "_selected_action": [failure.pk],
        },
    )

    assert queued_tasks() == 1


def test_the_orm_queue_is_read_only_for_staff(django_q_staff):
    from django_q.models import OrmQ

    if not admin_registered(OrmQ):
        pytest.skip("the ORM queue admin exists only with the ORM broker")
    client = csrf_client(django_q_staff)
    assert client.get(reverse("admin:django_q_ormq_changelist")).status_code == 200
    assert client.get(reverse("admin:django_q_ormq_add")).status_code == 403


def admin_registered(model) -> bool:
    from django.contrib import admin

    return admin.site.is_registered(model)


# --- the jobs' own schedule admin -------------------------------------------------


@pytest.fixture
def scheduled(register_job):
    @register_job("tests.guarded", schedule="*/5 * * * *")
    def guarded(ctx):
        ctx.count(processed=1)

    sync_schedules()
    return ScheduleState.objects.get(job="tests.guarded")


def test_a_cron_edit_needs_run_job_not_only_change_schedulestate(scheduled):
    editor = staff_with(
        app_label="jobs",
        codenames=["view_schedulestate", "change_schedulestate", "view_jobrun"],
        username="editor",
    )
    client = csrf_client(editor)
    url = reverse("admin:jobs_schedulestate_change", args=[scheduled.pk])
    token = token_from(client, reverse("admin:jobs_schedulestate_changelist"))

    response = client.post(url, {"csrfmiddlewaretoken": token, "cron": "* * * * *"})

    assert response.status_code == 403
    assert Schedule.objects.get(pk=scheduled.schedule_id).cron == "*/5 * * * *"
    assert not JobAction.objects.filter(action="edit_cron").exists()


def test_the_overview_needs_a_view_permission(client):
    client.force_login(UserFactory(username="bare-staff", is_staff=True))

    assert client.get(reverse("jobs_overview")).status_code == 403


# --- the scheduler itself ----------------------------------------------------------


def foreign_row(**fields) -> Schedule:
    """A row written by other means (SQL, a shell): the admin cannot make one."""
    defaults = {
        "name": "injected",
        "func": EVIL,
        "args": "'touch /tmp/pwned'",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "repeats": -1,
        "next_run": timezone.now() - timedelta(minutes=1),
    }
    return Schedule.objects.create(**{**defaults, **fields})


# django-q2's scheduler closes the connection: it needs real commits.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"func": "jobs.runner.run_scheduled", "hook": EVIL, "name": "hooked"},
        {"func": "jobs.fanout.run_chunks", "name": "chunky", "args": "(1, 'os.system')"},
        {"func": "jobs.runner.run_scheduled", "kwargs": f"{{'q_options': {{'hook': '{EVIL}'}}}}"},
    ],
    ids=["foreign-func", "runner-with-hook", "other-platform-task", "hook-in-q-options"],
)
def test_the_scheduler_refuses_a_row_that_is_not_the_runner(fields, drain_queue, scheduled):
    row = foreign_row(**fields)
    Schedule.objects.filter(pk=scheduled.schedule_id).update(
        next_run=timezone.now() - timedelta(minutes=1)
    )

    scheduler()
    drain_queue()

    assert CALLS == []
    row.refresh_from_db()
    assert row.repeats == 0  # switched off, not deleted: staff see what was tried
    refusal = JobAction.objects.get(action="refuse_schedule")
    assert refusal.actor == "scheduler"
    assert AuditTrail.objects.filter(action="job.refuse_schedule").exists()
    # The job's own schedule ran at its slot in the same tick.
    assert JobRun.objects.filter(job="tests.guarded", status=RunStatus.SUCCEEDED).count() == 1

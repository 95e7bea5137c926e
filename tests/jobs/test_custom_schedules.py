"""Staff's own schedules: own cron and time zone (DST-correct), tenant,
parameters checked by the registry, misfire policy, exactly once per slot."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from jobs.custom_schedules import fire_due, first_next_run
from jobs.models import JobAction, JobRun, RunStatus
from jobs.runner import execute_queued, run_scheduled
from jobs.schedule_models import CustomSchedule
from jobs.schedules import sync_schedules
from tests.factories import OrganizationFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]


def make_schedule(**fields) -> CustomSchedule:
    fields.setdefault("name", "own")
    schedule = CustomSchedule(**fields)
    schedule.next_run = first_next_run(schedule)
    schedule.save()
    return schedule


def fire_and_work() -> list[int]:
    made = fire_due()
    for run_id in made:
        execute_queued(run_id)
    return made


@pytest.fixture
def reminders(register_job):
    seen = []

    @register_job("tests.reminders", schedule="0 8 * * *")
    def send_reminders(ctx, *, days: int = 7):
        seen.append((ctx.slot, ctx.tenant_key, days))

    return seen


def test_slots_across_a_dst_change_run_once_each_at_the_right_utc_instants(reminders, time_machine):
    OrganizationFactory(key="org_acme")
    time_machine.move_to(datetime(2027, 3, 26, 12, tzinfo=UTC), tick=False)
    schedule = make_schedule(
        job="tests.reminders",
        cron="0 6 * * *",
        time_zone="Europe/Berlin",
        tenant="org_acme",
        params={"days": 14},
    )
    # 06:00 in Berlin: 05:00 UTC before the change (CET), 04:00 UTC after (CEST).
    expected = [
        datetime(2027, 3, 27, 5, tzinfo=UTC),
        datetime(2027, 3, 28, 4, tzinfo=UTC),
        datetime(2027, 3, 29, 4, tzinfo=UTC),
    ]
    assert schedule.next_run == expected[0]
    for slot in expected:
        time_machine.move_to(slot - timedelta(seconds=1), tick=False)
        assert fire_due() == []  # not yet
        time_machine.move_to(slot, tick=False)
        assert len(fire_and_work()) == 1
        assert fire_due() == []  # once
        time_machine.move_to(slot + timedelta(seconds=5), tick=False)
        assert fire_due() == []
    assert reminders == [(slot, "org_acme", 14) for slot in expected]
    runs = JobRun.objects.filter(job="tests.reminders").order_by("slot")
    assert [r.slot for r in runs] == expected
    assert {r.schedule_key for r in runs} == {f"custom:{schedule.pk}"}
    assert all(r.status == RunStatus.SUCCEEDED and r.attempts == 1 for r in runs)


def test_the_autumn_change_too(reminders, time_machine):
    time_machine.move_to(datetime(2027, 10, 30, 12, tzinfo=UTC), tick=False)
    schedule = make_schedule(job="tests.reminders", cron="30 1 * * *", time_zone="Europe/Berlin")
    assert schedule.next_run == datetime(2027, 10, 30, 23, 30, tzinfo=UTC)  # 01:30 CEST
    time_machine.move_to(schedule.next_run, tick=False)
    fire_and_work()
    schedule.refresh_from_db()
    assert schedule.next_run == datetime(2027, 11, 1, 0, 30, tzinfo=UTC)  # 01:30 CET


def test_the_schedule_is_part_of_the_slots_identity(reminders, time_machine):
    slot = datetime(2027, 5, 3, 8, tzinfo=UTC)
    time_machine.move_to(slot - timedelta(hours=1), tick=False)
    make_schedule(job="tests.reminders", cron="0 8 * * *", time_zone="UTC")
    time_machine.move_to(slot, tick=False)
    run_scheduled("tests.reminders", slot=slot.isoformat())  # the default schedule
    fire_and_work()
    fire_due()
    assert len(reminders) == 2
    keys = sorted(JobRun.objects.filter(slot=slot).values_list("schedule_key", flat=True))
    assert keys[0] == "" and keys[1].startswith("custom:") and len(keys) == 2


@pytest.mark.parametrize(
    ("policy", "expected_hours"),
    [("skip", []), ("once", [5]), ("each", [3, 4, 5])],
)
def test_missed_slots_follow_the_misfire_policy(reminders, time_machine, policy, expected_hours):
    start = datetime(2027, 6, 1, 0, 0, tzinfo=UTC)
    time_machine.move_to(start - timedelta(minutes=1), tick=False)
    schedule = make_schedule(
        job="tests.reminders", cron="0 * * * *", time_zone="UTC", misfire=policy, misfire_max=3
    )
    time_machine.move_to(start + timedelta(hours=5, minutes=10), tick=False)  # clusters were down
    fire_and_work()
    assert [slot for slot, _, _ in reminders] == [
        start + timedelta(hours=h) for h in expected_hours
    ]
    schedule.refresh_from_db()
    assert schedule.next_run == start + timedelta(hours=6)
    if policy != "each":
        assert JobAction.objects.filter(action="misfire").exists()


def test_a_paused_schedule_fires_nothing_and_resumes_without_a_burst(
    reminders, time_machine, client
):
    start = datetime(2027, 6, 1, 0, 0, tzinfo=UTC)
    time_machine.move_to(start - timedelta(minutes=1), tick=False)
    schedule = make_schedule(job="tests.reminders", cron="0 * * * *", time_zone="UTC")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:jobs_customschedule_change", args=[schedule.pk])
    form = {
        "name": "own",
        "job": "tests.reminders",
        "cron": "0 * * * *",
        "time_zone": "UTC",
        "tenant": "",
        "misfire": "once",
        "misfire_max": "3",
        "params_text": "{}",
    }
    response = client.post(url, {**form, "paused": "on", "pause_reason": ""})
    assert "A reason is required" in response.content.decode()
    assert (
        client.post(url, {**form, "paused": "on", "pause_reason": "tenant on hold"}).status_code
        == 302
    )
    time_machine.move_to(start + timedelta(hours=3), tick=False)
    assert fire_due() == []
    assert client.post(url, form).status_code == 302  # resume
    schedule.refresh_from_db()
    assert (schedule.paused, schedule.next_run) == (False, start + timedelta(hours=4))
    assert fire_due() == []


def test_staff_add_a_tenants_schedule_with_params_checked_by_the_registry(
    reminders, client, time_machine
):
    time_machine.move_to(datetime(2027, 6, 1, 12, tzinfo=UTC), tick=False)
    OrganizationFactory(key="org_acme")
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:jobs_customschedule_add")
    form = {
        "name": "acme reminders",
        "job": "tests.reminders",
        "cron": "0 0 6 5 * *",
        "time_zone": "Europe/Berlin",
        "tenant": "org_acme",
        "misfire": "once",
        "misfire_max": "3",
    }
    for bad, message in [
        ({"params_text": '{"days": "soon"}'}, "must be an integer"),
        ({"params_text": '{"weeks": 2}'}, "unknown parameter"),
        ({"params_text": "{days"}, "not JSON"),
        ({"params_text": "{}", "time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"params_text": "{}", "tenant": "org_nobody"}, "org_nobody"),
        ({"params_text": "{}", "cron": "61 * * * *"}, "invalid cron"),
    ]:
        response = client.post(url, {**form, **bad})
        assert response.status_code == 200, bad
        assert message in response.content.decode(), bad
    assert not CustomSchedule.objects.exists()
    response = client.post(url, {**form, "params_text": '{"days": 14}'})
    assert response.status_code == 302
    schedule = CustomSchedule.objects.get()
    assert (schedule.cron, schedule.params) == ("0 6 5 * *", {"days": 14})
    assert schedule.next_run == datetime(2027, 6, 5, 4, tzinfo=UTC)  # 06:00 CEST
    listing = client.get(reverse("admin:jobs_customschedule_changelist")).content.decode()
    assert "2027-06-05 06:00 CEST / 04:00 UTC" in listing
    overview = client.get("/admin/jobs/overview/").content.decode()
    assert "Own schedules" in overview
    assert "acme reminders" in overview and "org_acme" in overview
    assert "2027-06-05 06:00:00 Europe/Berlin" in overview  # its next run, in its zone


def test_the_jobs_parameters_are_the_typed_fields_of_run_now(reminders, client, time_machine):
    time_machine.move_to(datetime(2027, 6, 1, 12, tzinfo=UTC), tick=False)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    url = reverse("admin:jobs_customschedule_add") + "?job=tests.reminders"
    start = client.get(reverse("jobs_start", args=["tests.reminders"])).content.decode()
    assert 'href="/admin/jobs/customschedule/add/?job=tests.reminders"' in start
    page = client.get(url).content.decode()
    assert 'name="param_days"' in page and 'name="params_text"' not in page
    form = {
        "name": "weekly",
        "job": "tests.reminders",
        "cron": "0 8 * * 1",
        "time_zone": "UTC",
        "misfire": "skip",
        "misfire_max": "1",
    }

    refused = client.post(url, {**form, "param_days": "soon"})
    assert "param_days" in refused.context["adminform"].form.errors
    assert not CustomSchedule.objects.exists()

    assert client.post(url, {**form, "param_days": "14"}).status_code == 302
    schedule = CustomSchedule.objects.get()
    assert schedule.params == {"days": 14}
    change = client.get(reverse("admin:jobs_customschedule_change", args=[schedule.pk]))
    assert change.context["adminform"].form["param_days"].value() == 14


def test_a_tenant_with_its_own_schedule_is_left_out_of_the_default_run(register_job, time_machine):
    seen = {}

    @register_job("tests.invoices_excl", schedule="0 0 1 * *", tenant_schedules_exclude=True)
    def invoices_excl(ctx):
        seen[ctx.tenant_key or "default"] = set(ctx.excluded_tenants)

    @register_job("tests.no_excl", schedule="0 0 1 * *")
    def no_excl(ctx):
        seen["other"] = set(ctx.excluded_tenants)

    OrganizationFactory(key="org_acme")
    time_machine.move_to(datetime(2027, 6, 1, tzinfo=UTC), tick=False)
    make_schedule(job="tests.invoices_excl", cron="0 6 5 * *", tenant="org_acme")
    make_schedule(name="other", job="tests.no_excl", cron="0 6 5 * *", tenant="org_acme")
    sync_schedules()
    run_scheduled("tests.invoices_excl", slot=datetime(2027, 6, 1, tzinfo=UTC).isoformat())
    run_scheduled("tests.no_excl", slot=datetime(2027, 6, 1, tzinfo=UTC).isoformat())
    assert seen == {"default": {"org_acme"}, "other": set()}

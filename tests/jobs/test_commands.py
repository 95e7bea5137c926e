import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_q.models import Schedule

from jobs.models import JobRun, RunStatus, Trigger

pytestmark = pytest.mark.django_db


def call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def counter(register_job):
    @register_job("tests.counter", schedule="0 0 */6 * * *", queue="low")
    def counter(ctx, *, n: int = 1, fail_on: str = ""):
        """Counts to n, failing the item named fail_on."""
        for i in range(n):
            ctx.progress(i + 1, n)
            if str(i) == fail_on:
                ctx.item_failed(i, "nope")
            else:
                ctx.count(processed=1, succeeded=1)
        return {"counted": n}

    return counter


def test_jobs_lists_the_catalogue(counter):
    out = call("jobs")
    assert "tests.counter" in out
    assert "0 */6 * * *" in out
    assert "n: int = 1" in out
    assert "Counts to n" in out


def test_jobs_json_is_machine_readable(counter):
    catalogue = {j["name"]: j for j in json.loads(call("jobs", "--json"))}
    job = catalogue["tests.counter"]
    assert job["queue"] == "low"
    assert job["params"][0] == {"name": "n", "type": "int", "required": False, "default": 1}


def test_runjob_runs_in_process_and_prints_the_summary(counter):
    out = call("runjob", "tests.counter", "--param", "n=3")
    run = JobRun.objects.get()
    assert (run.trigger, run.status, run.succeeded) == (Trigger.CLI, RunStatus.SUCCEEDED, 3)
    assert f"run #{run.pk} tests.counter: succeeded" in out
    assert "counted: 3" in out


def test_runjob_json_reports_failures(counter):
    data = json.loads(
        call("runjob", "tests.counter", "--param", "n=3", "--param", "fail_on=1", "--json")
    )
    assert data["status"] == "partial"
    assert data["counts"] == {"processed": 2, "succeeded": 2, "failed": 1, "skipped": 0}
    assert data["failures"] == [{"item": "1", "error": "nope"}]


def test_runjob_dry_run_and_slot_are_recorded(counter):
    call("runjob", "tests.counter", "--dry-run", "--slot", "2026-11-01T06:00Z")
    run = JobRun.objects.get()
    assert run.dry_run is True
    assert run.slot == datetime(2026, 11, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tests.nope"], "unknown job 'tests.nope'"),
        (["tests.counter", "--param", "n=abc"], "parameter 'n' must be an integer"),
        (["tests.counter", "--param", "colour=red"], "unknown parameter 'colour'"),
        (["tests.counter", "--param", "n"], "--param expects name=value"),
        (["tests.counter", "--param", "n=1", "--param", "n=2"], "given twice"),
        (["tests.counter", "--slot", "yesterday"], "--slot must be an ISO 8601"),
        (["tests.counter", "--tenant", "org_missing"], "unknown tenant 'org_missing'"),
    ],
)
def test_runjob_bad_arguments_are_a_command_error_and_record_nothing(counter, args, message):
    with pytest.raises(CommandError, match=message):
        call("runjob", *args)
    assert not JobRun.objects.exists()


def test_runjob_of_a_failing_job_records_the_run_and_exits_non_zero(register_job):
    @register_job("tests.broken")
    def broken(ctx):
        raise RuntimeError("upstream down")

    with pytest.raises(CommandError, match=r"failed: RuntimeError: upstream down"):
        call("runjob", "tests.broken")
    assert JobRun.objects.get().status == RunStatus.FAILED


def test_sync_schedules_reports_what_it_did(counter):
    assert "created   tests.counter (0 */6 * * *)" in call("sync_schedules")
    assert "unchanged tests.counter" in call("sync_schedules")
    assert Schedule.objects.filter(name="tests.counter").count() == 1


def test_ensure_admin_creates_the_superuser_once(monkeypatch):
    from django.contrib.auth import get_user_model

    monkeypatch.setenv("ADMIN_PASSWORD", "s3cret-pass")
    assert "created admin user: admin / s3cret-pass" in call("ensure_admin")
    assert "admin user: admin / s3cret-pass" in call("ensure_admin")
    assert get_user_model().objects.get(username="admin").is_superuser


class FakeTerminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_runjob_writes_log_lines_above_its_progress_bar_not_through_it(register_job, monkeypatch):
    import logging
    import sys

    @register_job("tests.logs_while_counting")
    def logs_while_counting(ctx):
        for i in range(5):
            ctx.progress(i + 1, 5)
            ctx.log.warning("line %s of the run", i)
        ctx.count(processed=5, succeeded=5)

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    console = next(h for h in logging.getLogger().handlers if h.name == "console")
    monkeypatch.setattr(console, "stream", terminal)
    call("runjob", "tests.logs_while_counting")

    screen = terminal.getvalue()
    assert "it/s" in screen or "item/s" in screen or "5/5" in screen  # the bar was drawn
    for i in range(5):
        at = screen.index(f"line {i} of the run")
        line_start = screen.rindex("\n", 0, at) if "\n" in screen[:at] else -1
        line_start = max(line_start, screen.rfind("\r", 0, at))
        before = screen[line_start + 1 : at]
        assert "|" not in before and "%" not in before, repr(screen[line_start : at + 20])

"""The operations console in a real browser: start billing.regenerate_invoice
with parameters and confirm it; cancel a running fanned-out job and see it
end canceled; watch a run's progress update without reloading; read the
overview after failing dry runs.

The jobs run in the test's own thread (the live server answers the browser
from its thread meanwhile); a job drives the browser between its items, so
the page is read while the run is really running.
"""

from __future__ import annotations

import logging
import re

import pytest
from django.test import override_settings
from django.urls import reverse

from jobs import context as job_context
from jobs.models import JobAction, JobRun, RunStatus
from jobs.runner import run_job
from jobs.schedules import pause, sync_schedules
from tests.browser.conftest import log_in, needs_chromium
from tests.conftest import run_queued_tasks
from tests.factories import JobRunFactory, OrganizationFactory

pytestmark = [pytest.mark.browser, needs_chromium]
expect = pytest.importorskip("playwright.sync_api").expect

FAN = "tests.console_browser_fan"
SLOW = "tests.console_browser_slow"
DRY = "tests.console_browser_dry"
BROWSER: dict = {}  # the page a job drives while it runs


@pytest.fixture(autouse=True)
def immediate_reports(monkeypatch):
    """Progress written and cancellation looked up on every call; no heartbeat
    thread (a second connection to the in-memory test database)."""
    monkeypatch.setattr(job_context, "PROGRESS_WRITE_INTERVAL", 0)
    monkeypatch.setattr(job_context, "CANCEL_CHECK_INTERVAL", 0)
    with override_settings(JOBS_HEARTBEAT_SECONDS=0):
        yield
    BROWSER.clear()


def run_url(run_id: int) -> str:
    return reverse("admin:jobs_jobrun_change", args=[run_id])


def test_start_regenerate_invoice_with_parameters_and_confirm_with_a_reason(
    page, operator, broker, screenshot_dir
):
    OrganizationFactory(key="org_acme", name="Acme Corp")
    OrganizationFactory(key="org_other", name="Other")
    start = reverse("jobs_start", args=["billing.regenerate_invoice"])
    log_in(page, "operator", next_path=start)

    page.locator("#id_tenant").press_sequentially("Acme", delay=50)
    page.wait_for_selector("#tenant-choices[data-loaded='1']", state="attached")
    assert page.locator("#tenant-choices option").first.get_attribute("value") == "org_acme"
    page.fill("#id_tenant", "org_acme")
    page.get_by_role("button", name="Preview (dry run first)").click()  # no month yet
    assert "This field is required." in page.locator(".field-param_month").inner_text()
    assert JobRun.objects.count() == 0  # a form error; nothing recorded

    page.fill("#id_param_month", "2026-01")
    page.screenshot(path=screenshot_dir / "console-start-form.png", full_page=True)
    page.get_by_role("button", name="Preview (dry run first)").click()
    page.wait_for_url(re.compile(r"/confirm/$"))
    preview = JobRun.objects.get(dry_run=True)
    assert page.locator("#preview-waiting").is_visible()

    assert run_queued_tasks() == 1  # the dry run, on "the cluster"
    sentence = page.locator("#preview-sentence")
    sentence.wait_for()  # the page reloads itself once the dry run ended
    assert "org_acme" in sentence.inner_text() and "2026-01" in sentence.inner_text()
    page.screenshot(path=screenshot_dir / "console-confirm.png", full_page=True)

    page.fill("#id_reason", "customer disputed the usage")
    page.get_by_role("button", name="Start for real").click()

    assert "started for real as run #" in page.locator(".messagelist").inner_text()
    real = JobRun.objects.get(dry_run=False)
    assert real.tenant == "org_acme" and real.trigger == "admin"
    assert real.params == {"month": "2026-01", "reason": "customer disputed the usage"}
    confirmed = JobAction.objects.get(action="confirmed", run=real)
    assert (confirmed.actor, confirmed.detail["preview_run"]) == ("operator", preview.pk)


def chunk_driving_the_browser(ctx, items):
    """Fan-out target: during the first chunk, staff cancel the run in the browser."""
    page = BROWSER["page"]
    if ctx.index == 0:
        page.goto(run_url(ctx.run.pk))
        assert page.locator("#live-status").inner_text() == "Running"
        page.get_by_role("link", name="Cancel…").click()
        page.fill("#id_reason", "wrong parameters, stop it")
        page.get_by_role("button", name="Cancel the run").click()
        assert "asked to stop" in page.locator(".messagelist").inner_text()
        BROWSER["asked"] = True
    ctx.count(processed=len(items), succeeded=len(items))
    return {}


def test_cancel_a_running_fanned_out_job_and_see_it_end_canceled(
    page, operator, register_job, screenshot_dir
):
    @register_job(FAN)
    def fan(ctx):
        result = ctx.fan_out(
            "tests.browser.test_console_browser.chunk_driving_the_browser",
            items=list(range(12)),
            chunk_size=3,
            enqueue=False,
        )
        return {"chunks": result.chunks}

    log_in(page, "operator")
    BROWSER["page"] = page
    run = run_job(FAN)

    assert BROWSER.get("asked") and run.status == RunStatus.CANCELED
    assert run.processed == 3  # the first chunk; the other three never started
    # The page it was left on sees the end by itself, without a reload.
    page.evaluate("window.__stillTheSamePage = true")
    expect(page.locator("#live-status")).to_have_text("Canceled", timeout=15_000)
    assert page.evaluate("window.__stillTheSamePage") is True
    assert "wrong parameters, stop it" in page.locator("#run-live").inner_text()
    page.screenshot(path=screenshot_dir / "console-canceled-run.png", full_page=True)


def test_a_running_runs_progress_updates_without_reloading(
    page, operator, register_job, screenshot_dir
):
    @register_job(SLOW)
    def slow(ctx):
        page = BROWSER["page"]
        for done in range(1, 7):
            logging.getLogger("tests.console").info("working on item %s", done)
            ctx.count(processed=1)
            ctx.progress(done, 6)
            if done == 1:
                page.goto(run_url(ctx.run.pk))
                assert "1 / 6" in page.locator("#live-progress").inner_text()
                page.evaluate("window.__stillTheSamePage = true")
            if done == 4:
                expect(page.locator("#live-progress")).to_contain_text("4 / 6", timeout=15_000)
                assert page.evaluate("window.__stillTheSamePage") is True
                assert "items/s" in page.locator("#run-live").inner_text()
                assert "ETA" in page.locator("#run-live").inner_text()
                assert "processed 4" in page.locator("#run-live").inner_text()
                expect(page.locator("#run-log")).to_contain_text("working on item 1")
                page.screenshot(path=screenshot_dir / "console-live-progress.png", full_page=True)
        return {"done": 6}

    log_in(page, "operator")
    BROWSER["page"] = page
    run = run_job(SLOW)

    assert run.status == RunStatus.SUCCEEDED
    expect(page.locator("#live-status")).to_have_text("Succeeded", timeout=15_000)
    assert page.evaluate("window.__stillTheSamePage") is True


def test_the_overview_after_failing_dry_runs(page, operator, register_job, screenshot_dir):
    @register_job(DRY, schedule="0 * * * *")
    def dry(ctx):
        return {}

    sync_schedules()
    for _ in range(3):
        JobRunFactory(job=DRY, status=RunStatus.FAILED, dry_run=True, error="boom")
    JobRunFactory(job="maintenance.cleanup", status=RunStatus.SUCCEEDED)
    pause("maintenance.cleanup", actor="alice", reason="disk migration")

    log_in(page, "operator")

    row = page.locator(f"#job-{DRY.replace('.', '')}")
    assert row.locator(".job-health").inner_text() == "never run"
    assert row.locator(".job-failing").count() == 0
    assert "(dry run)" in row.inner_text()
    cleanup = page.locator("#job-maintenancecleanup")
    assert cleanup.locator(".job-health").inner_text() == "paused"
    assert int(page.locator("#count-paused strong").inner_text()) >= 1
    assert int(page.locator("#count-failing strong").inner_text()) == 0
    page.screenshot(path=screenshot_dir / "console-overview.png", full_page=True)

    # Resume from the overview itself.
    cleanup.get_by_role("button", name="Resume").click()
    assert "resumed" in page.locator(".messagelist").inner_text()
    assert page.locator("#job-maintenancecleanup .job-health").inner_text() == "healthy"


def test_the_runs_list_fits_a_1366_pixel_screen(page, operator, screenshot_dir):
    for n in range(30):
        JobRunFactory(
            job="billing.generate_monthly_invoices",
            tenant=f"org_{n:05d}",
            status=RunStatus.PARTIAL,
            triggered_by="a-rather-long-operator-name",
            processed=123456,
            succeeded=123000,
            failed=456,
        )
    page.set_viewport_size({"width": 1366, "height": 768})
    log_in(page, "operator", next_path=reverse("admin:jobs_jobrun_changelist"))

    for header in ("Created", "Duration", "Counts"):
        box = page.get_by_role("columnheader", name=header).bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1366, header
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    page.screenshot(path=screenshot_dir / "console-runs-list-1366.png", full_page=True)

"""The jobs admin in a real browser, as staff use it: log in, read each job's
health, pause with a reason, run now and watch the run finish, rerun a failed
run's failed items, open an invoice PDF; and without `jobs.run_job`, no action
buttons and 403 on every action URL."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django_q.models import Schedule

from jobs.models import JobAction, JobRun, RunStatus, ScheduleState, Trigger
from jobs.runner import run_job
from jobs.schedules import sync_schedules
from tests.browser.conftest import log_in, needs_chromium, wait_for_run_status
from tests.conftest import run_queued_tasks
from tests.factories import JobRunFactory

pytestmark = [pytest.mark.browser, needs_chromium]

COUNTED = "tests.browser_counted"
FLAKY = "tests.browser_flaky"
HEALTHY = "tests.browser_healthy"
FAILING = "tests.browser_failing"
OVERDUE = "tests.browser_overdue"

ITEMS = ["a", "b", "c", "d", "e"]
BROKEN: set[str] = set()  # items the flaky job cannot process until "fixed"


@pytest.fixture
def jobs(register_job, transactional_db):
    """Throwaway jobs: one that counts, one whose broken items fail the run,
    and three whose history makes them healthy, failing and overdue."""

    @register_job(COUNTED, schedule="*/5 * * * *")
    def counted(ctx, *, n: int = 3):
        """Counts n items."""
        ctx.progress(n, n)
        ctx.count(processed=n, succeeded=n)
        return {"counted": n}

    @register_job(FLAKY, supports_item_rerun=True)
    def flaky(ctx):
        """Processes items a-e; broken ones fail, and then the run fails."""
        for key in ITEMS:
            if not ctx.should_process(key):
                continue
            ctx.count(processed=1)
            if key in BROKEN:
                ctx.item_failed(key, f"item {key}: upstream refused")
            else:
                ctx.count(succeeded=1)
        if ctx.counts["failed"]:
            raise RuntimeError(f"{ctx.counts['failed']} items failed")
        return {"items": ctx.counts["processed"]}

    for name in (HEALTHY, FAILING, OVERDUE):
        register_job(name, schedule="0 * * * *")(lambda ctx: {})

    sync_schedules()
    JobRunFactory(job=HEALTHY, status=RunStatus.SUCCEEDED)
    JobRunFactory(job=FAILING, status=RunStatus.FAILED, error="RuntimeError: boom")
    Schedule.objects.filter(name=OVERDUE).update(next_run=timezone.now() - timedelta(hours=3))
    assert Schedule.objects.get(name=OVERDUE).next_run < timezone.now()  # name is the job's
    BROKEN.clear()
    yield
    BROKEN.clear()


def row(page, job: str):
    return page.locator(f"#job-{slugify(job)}")


def run_page_url(run: JobRun) -> str:
    return reverse("admin:jobs_jobrun_change", args=[run.pk])


def test_staff_log_in_and_see_each_jobs_health(page, operator, jobs, screenshot_dir):
    log_in(page, "operator")

    assert page.locator("h1").inner_text() == "Jobs overview"
    assert row(page, HEALTHY).locator(".job-healthy").inner_text() == "healthy"
    assert row(page, FAILING).locator(".job-failing").first.inner_text() == "failing"
    assert row(page, OVERDUE).locator(".job-overdue").first.inner_text() == "overdue"
    assert row(page, FAILING).locator(".job-healthy").count() == 0
    assert row(page, OVERDUE).locator(".job-healthy").count() == 0
    assert int(page.locator("#count-failing strong").inner_text()) >= 1
    assert int(page.locator("#count-overdue strong").inner_text()) >= 1
    assert row(page, COUNTED).get_by_role("link", name="Run now…").is_visible()
    page.screenshot(path=screenshot_dir / "overview.png", full_page=True)


def test_pausing_a_schedule_asks_for_a_reason_and_shows_it_paused(page, operator, jobs):
    log_in(page, "operator")
    row(page, COUNTED).get_by_role("link", name=COUNTED).click()
    page.get_by_role("link", name="Pause", exact=True).click()
    page.wait_for_url(re.compile(r"/pause/"))

    submit = page.locator("input[type=submit][value=Pause]")
    submit.click()  # no reason: the browser refuses to send the form
    assert page.locator("#id_reason").evaluate("el => el.validity.valueMissing")
    page.fill("#id_reason", "   ")
    submit.click()  # a blank reason: the server refuses it
    assert "This field is required." in page.locator(".errorlist").inner_text()
    assert not ScheduleState.objects.get(job=COUNTED).paused

    page.fill("#id_reason", "provider maintenance until 18:00")
    submit.click()

    assert "paused. It will not run at its slots" in page.locator(".messagelist").inner_text()
    pause_state = page.locator(".field-pause_state .readonly").inner_text()
    assert "paused by operator" in pause_state
    assert "provider maintenance until 18:00" in pause_state
    assert page.get_by_role("button", name="Resume").is_visible()
    state = ScheduleState.objects.get(job=COUNTED)
    assert (state.paused, state.paused_by) == (True, "operator")

    page.goto(reverse("jobs_overview"))
    assert "paused by operator: provider maintenance until 18:00" in row(page, COUNTED).inner_text()


def test_run_now_reaches_succeeded_with_its_counts(page, operator, jobs, broker, screenshot_dir):
    log_in(page, "operator")
    row(page, COUNTED).get_by_role("link", name="Run now…").click()
    page.get_by_role("button", name="Start").click()

    message = page.locator(".messagelist")
    assert f"Run of {COUNTED} queued as run #" in message.inner_text()
    run = JobRun.objects.get(job=COUNTED)
    assert (run.trigger, run.triggered_by, run.status) == (Trigger.ADMIN, "operator", "queued")
    message.get_by_role("link", name=f"run #{run.pk}").click()
    page.wait_for_url(re.compile(re.escape(run_page_url(run)) + "$"))
    assert page.locator(".field-status_badge .readonly").inner_text().strip() == "queued"

    assert run_queued_tasks() == 1  # the cluster's worker, in this process

    wait_for_run_status(page, "succeeded")
    counts = page.locator(".field-counts_display .readonly").inner_text()
    assert counts == "processed 3 · succeeded 3 · failed 0 · skipped 0"
    summary = page.locator(".field-summary_display .readonly")
    assert summary.locator("tr", has_text="Counted").locator("td").inner_text() == "3"
    summary.get_by_text("Raw JSON").click()
    assert '"counted": 3' in summary.inner_text()
    page.screenshot(path=screenshot_dir / "run-detail.png", full_page=True)


def test_a_failed_runs_failed_items_are_rerun_alone(page, operator, jobs, broker, screenshot_dir):
    BROKEN.update({"b", "d"})
    failed = run_job(FLAKY, trigger=Trigger.CLI, triggered_by="cron-host")
    assert failed.status == RunStatus.FAILED and failed.failed == 2

    log_in(page, "operator")
    assert row(page, FLAKY).locator(".job-failing").first.is_visible()
    row(page, FLAKY).get_by_role("link", name=f"#{failed.pk}", exact=True).first.click()
    page.wait_for_url(re.compile(re.escape(run_page_url(failed)) + "$"))
    assert page.locator(".field-status_badge .readonly").inner_text().strip() == "failed"
    failures = page.locator(".inline-group").inner_text()
    assert "item b: upstream refused" in failures and "item d: upstream refused" in failures
    page.screenshot(path=screenshot_dir / "run-with-failed-items.png", full_page=True)

    page.get_by_role("button", name="Rerun failed items").click()
    rerun = JobRun.objects.get(rerun_of=failed)
    page.wait_for_url(re.compile(re.escape(run_page_url(rerun)) + "$"))
    assert (
        f"Failed items of run #{failed.pk} queued again"
        in page.locator(".messagelist").inner_text()
    )
    assert sorted(rerun.only_items) == ["b", "d"]

    BROKEN.clear()  # the upstream is fixed
    assert run_queued_tasks() == 1

    wait_for_run_status(page, "succeeded")
    counts = page.locator(".field-counts_display .readonly").inner_text()
    assert counts == "processed 2 · succeeded 2 · failed 0 · skipped 0"
    assert f"#{failed.pk}" in page.locator(".field-rerun_of_link .readonly").inner_text()
    assert JobAction.objects.filter(actor="operator", action="rerun_failed_items").count() == 1


def test_staff_without_run_job_see_no_actions_and_get_403(new_page, viewer, operator, jobs, broker):
    failed = run_job(FAILING, trigger=Trigger.CLI)  # a run to try rerunning
    JobRun.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    state = ScheduleState.objects.get(job=COUNTED)
    page = new_page()
    log_in(page, "viewer")

    assert row(page, COUNTED).is_visible()
    assert page.locator(".jobs-overview button, .jobs-overview form").count() == 0
    assert page.get_by_role("button", name=re.compile("Run now|Dry run")).count() == 0
    assert page.get_by_role("columnheader", name="Actions").count() == 0
    page.goto(reverse("admin:jobs_schedulestate_change", args=[state.pk]))
    assert page.locator(".object-tools button, .object-tools a:text('Pause')").count() == 0
    page.goto(run_page_url(failed))
    assert page.locator(".field-status_badge").is_visible()
    assert page.get_by_role("button", name=re.compile("Rerun")).count() == 0

    action_urls = [
        reverse("jobs_run_now", args=[COUNTED]),
        reverse("jobs_dry_run", args=[COUNTED]),
        reverse("jobs_pause", args=[COUNTED]),
        reverse("jobs_resume", args=[COUNTED]),
        reverse("jobs_rerun", args=[failed.pk]),
        reverse("jobs_rerun_failed_items", args=[failed.pk]),
    ]
    runs_before = JobRun.objects.count()
    for url in action_urls:
        response = post_as(page, url, {"reason": "not allowed"})
        assert response.status == 403, (url, response.status)
        assert "CSRF" not in response.text()  # refused for the permission, not the token
    assert page.request.get(reverse("jobs_pause", args=[COUNTED])).status == 403
    assert JobRun.objects.count() == runs_before
    assert broker.queue_size() == 0
    assert not ScheduleState.objects.get(job=COUNTED).paused
    assert not JobAction.objects.filter(actor="viewer").exists()

    # The same request from an operator is allowed: the 403s above were the permission's.
    operator_page = new_page()
    log_in(operator_page, "operator")
    allowed = post_as(operator_page, reverse("jobs_dry_run", args=[COUNTED]), {})
    assert allowed.status == 200 and allowed.url.endswith(
        reverse("admin:jobs_schedulestate_change", args=[state.pk])
    )
    assert JobRun.objects.count() == runs_before + 1


def post_as(page, url: str, form: dict[str, str]):
    """A form POST with the session's CSRF token, as the admin's own forms send."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    return page.request.post(
        url, form={**form, "csrfmiddlewaretoken": token}, headers={"Referer": page.url}
    )


def test_an_invoice_pdf_opens_from_the_invoice_list(page, operator, settings, tmp_path):
    """Against billing's admin contract: a "PDF" link on the invoice list,
    served by `admin:billing_invoice_pdf` as application/pdf."""
    from weasyprint import HTML

    from billing.models import Invoice
    from subscriptions.models import Organization

    settings.MEDIA_ROOT = str(tmp_path)
    operator.user_permissions.add(
        Permission.objects.get(content_type__app_label="billing", codename="view_invoice")
    )
    org = Organization.objects.create(
        key="pdf_org", name="PDF Org", billing_email="billing@pdf.example"
    )
    invoice = Invoice.objects.create(
        organization=org,
        period_start=date(2026, 1, 1),
        period_end=date(2026, 2, 1),
        number="2026-000042",
        status="finalized",
        currency="EUR",
        subtotal_minor=4200,
        total_minor=4200,
        finalized_at=timezone.now(),
    )
    pdf = HTML(string="<h1>Invoice 2026-000042</h1><p>42.00 EUR</p>").write_pdf()
    invoice.pdf.save("2026-000042.pdf", ContentFile(pdf))

    log_in(page, "operator", next_path=reverse("admin:billing_invoice_changelist"))
    link = page.get_by_role("link", name="PDF", exact=True)
    expected_url = reverse("admin:billing_invoice_pdf", args=[invoice.pk])
    assert link.get_attribute("href") == expected_url
    with (
        page.context.expect_page() as new_tab,
        page.context.expect_event(
            "response", predicate=lambda r: r.url.endswith(expected_url)
        ) as answer,
    ):
        link.click()  # target=_blank: the PDF opens in a new tab
    response = answer.value
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    tab = new_tab.value
    tab.wait_for_load_state()
    assert tab.url.endswith(expected_url)
    # Chromium shows it in its PDF viewer, whose page stands in for the body;
    # the bytes themselves, fetched with the same session:
    assert tab.request.get(expected_url).body() == pdf and pdf.startswith(b"%PDF")

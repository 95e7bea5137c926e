"""A real headless Chromium (Debian's package) against a live test server.

The tests skip, with the reason, when Chromium is not installed; `.ci/run`
installs it, so CI always runs them. Playwright's sync API keeps an asyncio
loop running in this thread while it is started, and Django refuses ORM calls
from a thread with a running loop, so DJANGO_ALLOW_ASYNC_UNSAFE is set only
while the browser fixture is alive (one module at a time).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django_q.brokers import get_broker

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "test-output" / "screenshots"
PASSWORD = "browser-pass-1"

VIEW_PERMISSIONS = ["view_jobrun", "view_schedulestate", "view_jobaction", "view_jobitemfailure"]
OPERATOR_PERMISSIONS = [*VIEW_PERMISSIONS, "change_schedulestate", "run_job"]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        playwright = sync_api.sync_playwright().start()
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()
        finally:
            playwright.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so a fixture can see a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def new_page(request, browser, live_server):
    """Pages in fresh browser contexts (own cookies), one per user. A failing
    test leaves a screenshot of each page it had open."""
    contexts = []

    def _new_page():
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1400, "height": 900}
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield _new_page
    call = getattr(request.node, "report_call", None)
    for n, context in enumerate(contexts):
        if call is not None and call.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for m, open_page in enumerate(context.pages):
                name = f"failed-{request.node.name}-{n}-{m}.png"
                open_page.screenshot(path=SCREENSHOTS / name, full_page=True)
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def broker(transactional_db):
    """The Redis broker outlives the test database: start and end empty."""
    queue = get_broker()
    queue.purge_queue()
    yield queue
    queue.purge_queue()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def make_staff(username: str, codenames: list[str]):
    from tests.factories import UserFactory

    user = UserFactory(username=username, is_staff=True, password=PASSWORD)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames)
    )
    return user


@pytest.fixture
def operator(transactional_db):
    return make_staff("operator", OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer(transactional_db):
    return make_staff("viewer", VIEW_PERMISSIONS)


def log_in(page, username: str, *, next_path: str = "/admin/jobs/overview/") -> None:
    """Through the admin's own login form, as a person does."""
    page.goto(f"/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path) + "$"))


def wait_for_run_status(page, status: str, *, timeout: float = 15.0) -> str:
    """Reload the run page until its status reads `status` (what a person does)."""
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = page.locator(".field-status_badge .readonly").inner_text().strip()
        if shown == status:
            return shown
        time.sleep(0.2)
        page.reload()
    raise AssertionError(f"run page still shows {shown!r}, not {status!r}, after {timeout} s")

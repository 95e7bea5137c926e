"""The admin under the production Content-Security-Policy, and two-factor login,
in a real headless Chromium."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.browser.conftest import PASSWORD, log_in, needs_chromium
from tests.factories import JobRunFactory, OrganizationFactory, UserFactory

pytestmark = [pytest.mark.browser, needs_chromium]

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' '
  + (e.sourceFile || '') + ':' + e.lineNumber));
"""


@pytest.fixture
def superuser(transactional_db):
    return UserFactory(username="root", is_staff=True, is_superuser=True, password=PASSWORD)


def admin_pages(run_id: int) -> list[str]:
    from billing.models import DailyMetrics

    org = OrganizationFactory(key="org_csp")
    for i in range(3):
        DailyMetrics.objects.create(
            organization=org,
            day=date(2026, 11, 1) - timedelta(days=i),
            currency="EUR",
            revenue_minor=1000 * (i + 1),
            mrr_minor=29_000,
            usage={"api_calls": 10 * i},
        )
    return [
        reverse("admin:index"),
        reverse("jobs_overview"),
        reverse("admin:jobs_schedulestate_changelist"),
        reverse("admin:jobs_jobrun_changelist") + "?status__exact=succeeded",
        reverse("admin:jobs_jobrun_change", args=[run_id]),
        reverse("admin:jobs_apikey_add"),
        reverse("admin:subscriptions_subscription_changelist"),
        reverse("admin:billing_dailymetrics_changelist"),
        reverse("admin:billing_dailymetrics_chart") + "?organization=org_csp&end=2026-11-01",
        reverse("admin:auth_user_changelist"),
        reverse("admin:django_q_schedule_changelist"),
    ]


def test_the_admin_works_under_the_content_security_policy(page, superuser, transactional_db):
    run = JobRunFactory(job="tests.csp", summary={"ok": True})
    pages = admin_pages(run.pk)
    page.add_init_script(RECORD_VIOLATIONS)
    log_in(page, "root", next_path="/admin/")

    for path in pages:
        response = page.goto(path)
        assert response.status == 200, path
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        page.wait_for_load_state("load")
        assert page.evaluate("window.__csp") == [], path

    # The chart page's own <style> block (nonce) applied: its table is laid out by it.
    page.goto(pages[-3])
    assert page.locator("svg.billing-chart").count() > 0
    # Django's own admin scripts run: the changelist's "select all" box (actions.js).
    page.goto(reverse("admin:auth_user_changelist"))
    page.check("#action-toggle")
    assert page.locator("input.action-select").first.is_checked()


def test_an_injected_inline_script_is_blocked(page, superuser, transactional_db):
    page.add_init_script(RECORD_VIOLATIONS)
    log_in(page, "root", next_path="/admin/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__pwned = 1';"
        " document.body.appendChild(s); }"
    )
    assert page.evaluate("window.__pwned") is None
    assert any("script-src" in v for v in page.evaluate("window.__csp"))


@pytest.fixture
def staff_with_totp(transactional_db):
    user = UserFactory(username="otpstaff", is_staff=True, password=PASSWORD)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__startswith="view_")
    )
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return user, device


def current_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def test_staff_with_a_device_log_in_with_a_generated_totp_code(page, staff_with_totp, settings):
    settings.ADMIN_REQUIRE_2FA = True
    _, device = staff_with_totp
    page.goto("/admin/login/?next=/admin/jobs/overview/")
    page.fill("#id_username", "otpstaff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    assert page.locator(".errornote").count() > 0  # the code is required
    assert "/admin/login/" in page.url

    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", "000000" if current_code(device) != "000000" else "111111")
    page.click("input[type=submit]")
    assert "/admin/login/" in page.url  # a wrong code is refused

    time.sleep(1.2)  # django-otp throttles a device for 1 s after a wrong code
    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", current_code(device))
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"^http://[^/]+/admin/jobs/overview/$"))
    assert "Jobs overview" in page.content()


def test_with_2fa_required_staff_without_a_device_cannot_enter(page, operator, settings):
    settings.ADMIN_REQUIRE_2FA = True
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    assert "/admin/login/" in page.url
    assert page.goto("/admin/").url.endswith("/admin/login/?next=/admin/")


def test_without_2fa_required_staff_without_a_device_log_in_with_the_password(page, operator):
    log_in(page, "operator")
    assert "Jobs overview" in page.content()

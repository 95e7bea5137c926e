"""Production security settings, staff login hardening and audited admin edits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from audit.models import AuditTrail
from tests.factories import PaymentFactory, PlanFactory, SubscriptionFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]

# The production environment the README's "Security" section shows.
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "x7Kq2v9Zr4Lm8Np1Ws6Tb3Yc5Hd0Fg7Jk2Qa9Ue4Ro1Ix6Vz8Mb3Nc5Pl0Ot7Sy2",
    "FIELD_ENCRYPTION_KEY": "bmV3LXByb2R1Y3Rpb24tZmllbGQta2V5LTMyLWJ5dGU=",
    "ALLOWED_HOSTS": "jobs.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://jobs.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "JOBS_SCHEDULER_POLL_SECONDS": "1",
    "METRICS_TOKEN": "scrape-token",
    "AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:ses-feedback",
    "ADMIN_REQUIRE_2FA": "true",
}


def run_python(code: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "FIELD_", "METRICS_", "PYTEST"))
        and k not in {"DEBUG", "SECRET_KEY"}
    }
    base.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ENV_FILE="",
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
        **env,
    )
    return subprocess.run(
        [sys.executable, *code.split("\0")]
        if code.startswith("manage.py")
        else [sys.executable, "-c", code],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path):
    result = run_python(
        "manage.py\0check\0--deploy\0--fail-level\0WARNING", PRODUCTION_ENV, tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_turn_on_https_hsts_secure_cookies_and_proxy_header(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER, s.CSRF_TRUSTED_ORIGINS)"
    )
    result = run_python(code, PRODUCTION_ENV, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') ['https://jobs.example.com']"
    )


def test_without_a_field_encryption_key_the_process_stops_at_settings(tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "FIELD_ENCRYPTION_KEY"}

    result = run_python("import django; django.setup(); print('started')", env, tmp_path)

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY is not set" in result.stderr
    assert "started" not in result.stdout


def test_the_proxy_header_is_trusted_only_when_configured(tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECURE_PROXY_SSL_HEADER"}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_PROXY_SSL_HEADER)"
    )

    result = run_python(code, env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


# --- in this process (DEBUG off, as in production; HTTPS redirect off for tests) ----


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True)
def test_plain_http_is_redirected_but_probes_and_scrapers_are_not(client):
    assert client.get("/admin/").status_code == 301
    assert client.get("/admin/")["Location"].startswith("https://")
    assert client.get("/health/live").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_https_responses_carry_hsts_csp_and_frame_denial(client):
    response = client.get("/admin/login/", secure=True)

    assert "max-age=31536000" in response["Strict-Transport-Security"]
    assert "includeSubDomains" in response["Strict-Transport-Security"]
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert response["X-Frame-Options"] == "DENY"


def test_django_password_validators_refuse_weak_passwords():
    for weak in ("password", "12345678", "short"):
        with pytest.raises(ValidationError):
            validate_password(weak)
    validate_password("correct-horse-battery-staple-42")


@pytest.mark.django_db
def test_repeated_failed_logins_lock_the_account_out_even_with_the_right_password(client):
    UserFactory(username="staffer", is_staff=True, password="the-real-passw0rd")
    url = reverse("admin:login")
    for _ in range(5):
        client.post(url, {"username": "staffer", "password": "guess", "next": "/admin/"})

    response = client.post(
        url, {"username": "staffer", "password": "the-real-passw0rd", "next": "/admin/"}
    )

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
@override_settings(ADMIN_REQUIRE_2FA=True)
def test_with_2fa_required_a_password_only_session_does_not_reach_the_admin(client):
    client.force_login(UserFactory(username="no-device", is_staff=True, is_superuser=True))

    response = client.get("/admin/")

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- money and status edits in the admin are audited or read-only ------------------------


def post_data(form) -> dict:
    """The change form as a browser would post it back unchanged."""
    from datetime import datetime

    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None:
            continue
        if isinstance(value, datetime):
            data[f"{name}_0"], data[f"{name}_1"] = f"{value:%Y-%m-%d}", f"{value:%H:%M:%S}"
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = value
    return data


@pytest.mark.django_db
def test_a_subscription_status_edit_in_the_admin_is_audited(admin_client):
    subscription = SubscriptionFactory(status="active")
    url = reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
    data = post_data(admin_client.get(url).context["adminform"].form)
    data["status"] = "past_due"

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    record = AuditTrail.objects.get(action="admin.change")
    assert record.actor == "user:admin"
    assert (record.object_type, record.object_id) == (
        "subscriptions.subscription",
        str(subscription.pk),
    )
    assert record.changes["status"] == ["active", "past_due"]
    assert record.tenant == subscription.organization.key


@pytest.mark.django_db
def test_a_plan_price_edit_in_the_admin_is_audited(admin_client):
    plan = PlanFactory(price_minor=1000)
    url = reverse("admin:subscriptions_plan_change", args=[plan.pk])
    data = post_data(admin_client.get(url).context["adminform"].form)
    data["price_minor"] = 1

    assert admin_client.post(url, data).status_code == 302
    assert AuditTrail.objects.get(action="admin.change").changes["price_minor"] == [1000, 1]


@pytest.mark.django_db
def test_a_recorded_payments_amount_currency_and_status_are_read_only(admin_client):
    payment = PaymentFactory()
    url = reverse("admin:payments_payment_change", args=[payment.pk])

    form = admin_client.get(url).context["adminform"].form

    assert not {"amount_minor", "currency", "status"} & set(form.fields)

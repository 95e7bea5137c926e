"""The invoices admin: find invoices, open the PDF, regenerate, resend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from billing.models import Invoice
from jobs.models import JobRun, Trigger
from jobs.runner import run_job
from notifications.models import OutboundEmail
from tests.factories import (
    InvoiceFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = True


@pytest.fixture
def invoice():
    org = OrganizationFactory(key="org_admin", name="Admin Test Org")
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=4200),
        current_period_start=datetime(2026, 1, 5, tzinfo=UTC),
        current_period_end=datetime(2026, 1, 5, tzinfo=UTC) + timedelta(days=31),
    )
    run_job("billing.generate_monthly_invoices", slot=SLOT)
    return Invoice.objects.get()


def staff(username: str, *perms: tuple[str, str]):
    user = UserFactory(username=username, is_staff=True)
    for app, codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return user


def test_the_list_filters_searches_and_links_the_pdf(admin_client, invoice):
    InvoiceFactory(currency="USD", period_start="2025-12-01", period_end="2026-01-01")
    url = reverse("admin:billing_invoice_changelist")

    page = admin_client.get(url)
    assert page.status_code == 200
    assert reverse("admin:billing_invoice_pdf", args=[invoice.pk]) in page.content.decode()
    assert admin_client.get(url, {"status__exact": "sent"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"period": "2025-12"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"currency": "USD"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": invoice.number}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "org_admin"}).context["cl"].result_count == 1


def test_the_detail_page_shows_the_lines_read_only(admin_client, invoice):
    page = admin_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert invoice.number in body and "42.00 EUR" in body
    assert 'name="_save"' not in body


def test_the_pdf_is_one_click_away_for_those_who_may_view_invoices(client, invoice):
    url = reverse("admin:billing_invoice_pdf", args=[invoice.pk])
    assert url.endswith(f"/{invoice.pk}/pdf/")

    client.force_login(staff("nobody"))
    assert client.get(url).status_code == 403

    client.force_login(staff("viewer", ("billing", "view_invoice")))
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")


def test_an_invoice_without_a_pdf_answers_404(admin_client):
    draft = InvoiceFactory()
    assert (
        admin_client.get(reverse("admin:billing_invoice_pdf", args=[draft.pk])).status_code == 404
    )


def test_regenerate_enqueues_the_job_with_the_admin_as_trigger(
    client, invoice, drain_queue, django_capture_on_commit_callbacks
):
    user = staff("operator", ("billing", "view_invoice"), ("jobs", "run_job"))
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:billing_invoice_changelist"),
            {"action": "regenerate", "_selected_action": [invoice.pk]},
            follow=True,
        )
    assert response.status_code == 200
    run = JobRun.objects.get(job="billing.regenerate_invoice")
    assert run.params == {"organization": "org_admin", "month": "2026-01"}
    assert (run.trigger, run.triggered_by, run.tenant) == (Trigger.ADMIN, "operator", "org_admin")
    drain_queue()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert Invoice.objects.filter(status="void").count() == 1


def test_regenerate_needs_the_run_job_permission(client, invoice):
    client.force_login(staff("viewer", ("billing", "view_invoice")))
    client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": "regenerate", "_selected_action": [invoice.pk]},
    )
    assert not JobRun.objects.filter(job="billing.regenerate_invoice").exists()


def test_resend_queues_a_new_email(client, invoice):
    client.force_login(staff("clerk", ("billing", "view_invoice"), ("billing", "change_invoice")))
    client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": "resend", "_selected_action": [invoice.pk]},
    )
    assert OutboundEmail.objects.filter(kind="billing.invoice").count() == 2
    invoice.refresh_from_db()
    assert ":resend:" in OutboundEmail.objects.get(pk=invoice.email_id).dedupe_key

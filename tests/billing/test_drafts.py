"""Grace period: drafts, billing.finalize_invoices, and what staff do to a draft."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from audit.selectors import audit_of_object
from billing.models import Invoice, InvoiceLine, InvoiceStatus
from billing.services import drafts
from billing.services import invoices as service
from billing.services.usage import UsageEventIn, record_usage_events
from jobs.enqueue import rerun
from jobs.models import JobItemFailure, RunStatus
from jobs.registry import get_job
from jobs.runner import run_job
from notifications.models import OutboundEmail
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    PlanMetricPriceFactory,
    SubscriptionFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
FINALIZE = "billing.finalize_invoices"


@pytest.fixture(autouse=True)
def grace(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = True
    settings.INVOICE_TAX_RATE_BPS = 1000
    settings.INVOICE_GRACE_HOURS = 48
    return settings


@pytest.fixture
def org():
    plan = PlanFactory(price_minor=2000)
    PlanMetricPriceFactory(
        plan=plan,
        metric=BillableMetricFactory(code="api_calls", name="API calls", unit="calls"),
        unit_price_minor=1,
    )
    org = OrganizationFactory(key="org_grace")
    SubscriptionFactory(
        organization=org,
        plan=plan,
        created_at=JAN - timedelta(days=30),
        current_period_start=JAN - timedelta(days=5),
        current_period_end=JAN + timedelta(days=25),
    )
    return org


def calls(org, at, quantity, key):
    record_usage_events(
        events=[
            UsageEventIn(
                organization_id=org.pk,
                metric="api_calls",
                occurred_at=at,
                quantity=quantity,
                idempotency_key=key,
            )
        ]
    )


def staff(username, *perms):
    user = UserFactory(username=username, is_staff=True)
    for app, codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return user


def test_with_a_grace_period_the_run_makes_drafts_that_are_numbered_and_sent_after_it(org):
    calls(org, JAN + timedelta(days=4), 100, "jan")
    run = run_job("billing.generate_monthly_invoices", slot=FEB)

    draft = Invoice.objects.get()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert (draft.status, draft.number, draft.pdf.name, draft.email_id) == ("draft", None, "", None)
    assert draft.grace_until == FEB + timedelta(hours=48)
    assert draft.total_minor == 2310  # (2000 + 100) + 10% tax
    assert run.summary["drafts_created"] == 1 and run.summary["invoices_created"] == 0
    assert not OutboundEmail.objects.exists()

    # Usage of January that arrives during the grace period counts.
    calls(org, FEB - timedelta(minutes=3), 50, "late-in-grace")
    early = run_job(FINALIZE, slot=FEB + timedelta(hours=47))
    assert early.summary["invoices"] == 0
    assert Invoice.objects.get().status == InvoiceStatus.DRAFT

    done = run_job(FINALIZE, slot=FEB + timedelta(hours=48))

    invoice = Invoice.objects.get()
    assert done.status == RunStatus.SUCCEEDED, done.error
    assert invoice.status == InvoiceStatus.SENT and invoice.number == "INV-2026-000001"
    assert invoice.subtotal_minor == 2150 and invoice.total_minor == 2365
    assert invoice.pdf and invoice.email_id
    assert done.summary["finalized"] == 1 and done.summary["periods"] == ["2026-01"]
    assert done.summary["usage"]["2026-01"]["late_hours_rebuilt"] == 1  # the last hour, again
    assert invoice.issued_on == invoice.finalized_at.date()
    assert invoice.due_on == invoice.issued_on + timedelta(days=14)

    again = run_job(FINALIZE, slot=FEB + timedelta(hours=49))
    assert again.summary["invoices"] == 0
    assert OutboundEmail.objects.count() == 1


def test_a_finalize_run_that_failed_is_completed_by_a_rerun_of_its_failed_items(
    org, monkeypatch, drain_queue, django_capture_on_commit_callbacks
):
    run_job("billing.generate_monthly_invoices", slot=FEB)
    real = service.render_many
    monkeypatch.setattr(
        service, "render_many", lambda docs: ({}, {d.key: OSError("no fonts") for d in docs})
    )
    failed = run_job(FINALIZE, slot=FEB + timedelta(hours=48))
    assert failed.status == RunStatus.PARTIAL
    assert JobItemFailure.objects.get(run=failed).item_key == "org_grace:2026-01"
    invoice = Invoice.objects.get()
    assert invoice.status == InvoiceStatus.FINALIZED and not invoice.pdf

    monkeypatch.setattr(service, "render_many", real)
    with django_capture_on_commit_callbacks(execute=True):
        again = rerun(failed, actor="test", trigger="admin", failed_items_only=True)
    drain_queue()
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED, again.error
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.SENT and invoice.pdf


def test_staff_add_and_remove_manual_lines_on_a_draft_with_a_reason_audited(org):
    run_job("billing.generate_monthly_invoices", slot=FEB)
    draft = Invoice.objects.get()

    with pytest.raises(ValueError, match="needs a reason"):
        drafts.add_manual_line(
            invoice=draft, description="Onboarding", amount_minor=5000, reason=" ", actor="user:a"
        )
    assert draft.lines.count() == 1
    line = drafts.add_manual_line(
        invoice=draft,
        description="Onboarding workshop",
        amount_minor=5000,
        reason="agreed in the contract",
        actor="user:alice",
    )
    draft.refresh_from_db()
    assert draft.total_minor == (2000 + 5000) * 11 // 10
    records = audit_of_object(object_type="billing.invoice", object_id=draft.pk)
    assert records.filter(action="invoice.manual_line_added", actor="user:alice").exists()

    done = run_job(FINALIZE, slot=FEB + timedelta(days=3))
    invoice = Invoice.objects.get()
    assert done.status == RunStatus.SUCCEEDED
    assert invoice.lines.filter(kind="manual", description="Onboarding workshop").exists()
    assert invoice.subtotal_minor == 7000  # the manual line survived the recompute
    with pytest.raises(ValueError, match="not a draft"):
        drafts.remove_manual_line(line=InvoiceLine.objects.get(pk=line.pk), reason="x", actor="a")


def test_removing_a_manual_line_needs_a_reason_and_computed_lines_stay(org):
    run_job("billing.generate_monthly_invoices", slot=FEB)
    draft = Invoice.objects.get()
    line = drafts.add_manual_line(
        invoice=draft, description="Discount", amount_minor=-500, reason="goodwill", actor="user:a"
    )
    with pytest.raises(ValueError, match="needs a reason"):
        drafts.remove_manual_line(line=line, reason="", actor="user:a")
    with pytest.raises(ValueError, match="only manual lines"):
        drafts.remove_manual_line(line=draft.lines.get(kind="plan"), reason="no", actor="user:a")
    drafts.remove_manual_line(line=line, reason="entered twice", actor="user:b")
    draft.refresh_from_db()
    assert draft.subtotal_minor == 2000 and draft.lines.count() == 1
    assert audit_of_object(object_type="billing.invoice", object_id=draft.pk).filter(
        action="invoice.manual_line_removed", actor="user:b"
    )


def test_the_admin_opens_a_draft_adds_a_line_and_finalizes_it_early(client, org):
    run_job("billing.generate_monthly_invoices", slot=FEB)
    draft = Invoice.objects.get()
    change = reverse("admin:billing_invoice_change", args=[draft.pk])
    add = reverse("admin:billing_invoice_add_line", args=[draft.pk])
    finalize = reverse("admin:billing_invoice_finalize", args=[draft.pk])

    client.force_login(staff("viewer", ("billing", "view_invoice")))
    page = client.get(change).content.decode()
    assert "Plan" in page and "20.00 EUR" in page  # the draft and its lines, read-only
    assert add not in page  # no button without the permission ...
    assert (
        client.post(
            add, {"description": "x", "amount": "1", "quantity": 1, "reason": "r"}
        ).status_code
        == 403
    )
    assert client.post(finalize).status_code == 403  # ... and no way round it
    assert Invoice.objects.get().status == InvoiceStatus.DRAFT and draft.lines.count() == 1

    client.force_login(staff("clerk", ("billing", "view_invoice"), ("billing", "change_invoice")))
    assert add in client.get(change).content.decode()
    refused = client.post(
        add, {"description": "Setup", "amount": "12.50", "quantity": 1, "reason": ""}
    )
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    too_precise = client.post(
        add, {"description": "Setup", "amount": "12.505", "quantity": 1, "reason": "r"}
    )
    assert too_precise.status_code == 200
    assert draft.lines.count() == 1
    added = client.post(
        add, {"description": "Setup", "amount": "12.50", "quantity": 1, "reason": "one-off setup"}
    )
    assert added.status_code == 302
    assert draft.lines.get(kind="manual").amount_minor == 1250

    remove = reverse(
        "admin:billing_invoice_remove_line", args=[draft.pk, draft.lines.get(kind="manual").pk]
    )
    assert remove in client.get(change).content.decode()

    done = client.post(finalize, follow=True)
    assert done.status_code == 200
    invoice = Invoice.objects.get()
    assert invoice.status == InvoiceStatus.SENT and invoice.number == "INV-2026-000001"
    assert invoice.subtotal_minor == 2000 + 1250
    assert "finalized" in done.content.decode()


def test_finalize_invoices_is_scheduled_hourly_and_runs_from_the_cli(org):
    spec = get_job(FINALIZE)
    assert spec.schedule == "0 * * * *" and spec.supports_item_rerun  # hourly
    run_job("billing.generate_monthly_invoices", slot=FEB)
    Invoice.objects.update(grace_until=FEB)  # as if the grace were over
    out = StringIO()
    call_command("runjob", FINALIZE, stdout=out)
    assert Invoice.objects.get().status == InvoiceStatus.SENT
    assert '"finalized": 1' in out.getvalue() or "finalized" in out.getvalue()


def test_invoices_the_monthly_run_finalized_at_once_are_left_to_it(org, grace, monkeypatch):
    """Without a grace period the monthly run completes its own invoices (a
    rerun of it does); the hourly finalize job never renders them beside it."""
    grace.INVOICE_GRACE_HOURS = 0
    monkeypatch.setattr(
        service, "render_many", lambda docs: ({}, {d.key: OSError("no fonts") for d in docs})
    )
    run_job("billing.generate_monthly_invoices", slot=FEB)
    assert Invoice.objects.get().status == InvoiceStatus.FINALIZED

    run = run_job(FINALIZE, slot=FEB + timedelta(hours=1))

    assert run.summary["invoices"] == 0

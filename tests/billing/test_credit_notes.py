"""Credit notes: regenerate and void credit the invoice in full, staff credit
part of one; their own gapless series, PDF, email, audit, and Stripe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import storages
from django.urls import reverse

from audit.selectors import audit_of_object
from billing.models import CreditNote, Invoice, InvoiceStatus, NumberSequence
from billing.services.credit_notes import complete_credit_notes, credit_invoice, void_invoice
from billing.services.invoices import StepReport
from jobs.models import RunStatus
from jobs.runner import run_job
from notifications.models import OutboundEmail
from payments.gateway import gateway_for
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

JOB = "billing.generate_monthly_invoices"
JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path, time_machine):
    # Credit notes are numbered in the year they are issued: pin it.
    time_machine.move_to(datetime(2026, 2, 3, 10, tzinfo=UTC), tick=True)
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = True
    settings.INVOICE_TAX_RATE_BPS = 2000
    settings.INVOICE_GRACE_HOURS = 0
    return settings


def customer(org=None, *, price=10_000):
    org = org or OrganizationFactory()
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=price),
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    return org


def invoiced(org=None, *, price=10_000) -> Invoice:
    org = customer(org, price=price)
    run_job(JOB, slot=FEB, tenant=org.key)
    return Invoice.objects.get(organization=org)


def stored(name: str) -> bytes:
    with storages["invoices"].open(name, "rb") as handle:
        return handle.read()


def test_regenerating_credits_the_replaced_invoice_with_a_numbered_emailed_credit_note():
    old = invoiced(OrganizationFactory(key="org_regen"))
    run = run_job(
        "billing.regenerate_invoice",
        params={"organization": "org_regen", "month": "2026-01", "reason": "wrong plan"},
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    old.refresh_from_db()
    note = CreditNote.objects.get()
    assert old.status == InvoiceStatus.VOID
    assert (note.number, note.kind, note.invoice_id) == ("CN-2026-000001", "full", old.pk)
    assert (note.subtotal_minor, note.tax_minor, note.total_minor) == (10_000, 2_000, 12_000)
    assert note.reason == "wrong plan" and note.issued_by.startswith("job:billing.regenerate")
    assert list(note.lines.values_list("amount_minor", flat=True)) == [10_000]
    assert note.pdf.name == "invoices/2026/CN-2026-000001.pdf"
    assert stored(note.pdf.name).startswith(b"%PDF")
    email = OutboundEmail.objects.get(pk=note.email_id)
    assert (email.kind, email.dedupe_key) == ("billing.credit_note", f"credit_note:{note.pk}")
    assert "CN-2026-000001" in email.subject and old.number in email.subject
    assert email.attachments.get().filename == "CN-2026-000001.pdf"
    assert note.status == "sent" and run.summary["credit_note"] == note.number
    assert audit_of_object(object_type="billing.creditnote", object_id=note.pk).filter(
        action="credit_note.issued"
    )
    assert audit_of_object(object_type="billing.invoice", object_id=old.pk).filter(
        action="invoice.credited"
    )
    # Invoices keep their own series.
    assert NumberSequence.objects.get(series="INV", year=2026).last_number == 2
    assert NumberSequence.objects.get(series="CN", year=2026).last_number == 1


def test_credit_notes_are_numbered_gaplessly_in_their_own_series():
    first, second = invoiced(), invoiced()
    void_invoice(invoice=first, reason="duplicate customer", actor="user:alice")
    with pytest.raises(ValueError, match="needs a reason"):
        void_invoice(invoice=second, reason="  ", actor="user:alice")
    with pytest.raises(ValueError, match="only finalized or sent"):
        void_invoice(invoice=Invoice.objects.get(pk=first.pk), reason="again", actor="user:a")
    credit_invoice(invoice=second, amount_minor=100, reason="late delivery", actor="user:bob")
    assert sorted(CreditNote.objects.values_list("number", flat=True)) == [
        "CN-2026-000001",
        "CN-2026-000002",
    ]


def test_a_line_or_an_amount_is_credited_with_tax_at_the_invoices_rate():
    invoice = invoiced(price=10_000)
    line = invoice.lines.get()

    part, _ = credit_invoice(invoice=invoice, amount_minor=2_500, reason="outage", actor="user:a")
    assert (part.kind, part.subtotal_minor, part.tax_minor, part.total_minor) == (
        "amount",
        2_500,
        500,
        3_000,
    )
    with pytest.raises(ValueError, match="more than is left"):
        credit_invoice(invoice=invoice, line=line, reason="whole plan", actor="user:a")
    rest, _ = credit_invoice(invoice=invoice, amount_minor=7_500, reason="outage", actor="user:a")
    assert rest.total_minor == 9_000
    with pytest.raises(ValueError, match="more than is left"):
        credit_invoice(invoice=invoice, amount_minor=1, reason="one cent", actor="user:a")
    assert CreditNote.objects.count() == 2


def test_crediting_one_line_once_and_a_void_credits_only_what_is_left():
    org = customer()
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=500),
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    run_job(JOB, slot=FEB)
    invoice = Invoice.objects.get()
    cheap = invoice.lines.get(amount_minor=500)

    note, _ = credit_invoice(invoice=invoice, line=cheap, reason="never used", actor="user:a")
    assert (note.kind, note.total_minor) == ("line", 600)
    assert note.lines.get().invoice_line_id == cheap.pk
    with pytest.raises(ValueError, match="already credited"):
        credit_invoice(invoice=invoice, line=cheap, reason="twice", actor="user:a")

    full, _ = void_invoice(invoice=invoice, reason="customer left", actor="user:a")
    assert full.total_minor == invoice.total_minor - note.total_minor
    assert full.lines.filter(description=f"Credited before by {note.number}").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount_minor": 100, "reason": ""}, "needs a reason"),
        ({"reason": "r"}, "either one line or an amount"),
        ({"amount_minor": 0, "reason": "r"}, "only a positive amount"),
        ({"amount_minor": -5, "reason": "r"}, "only a positive amount"),
        ({"amount_minor": "12.50", "reason": "r"}, "whole number"),
    ],
)
def test_bad_credits_write_nothing(kwargs, message):
    invoice = invoiced()
    with pytest.raises(ValueError, match=message):
        credit_invoice(invoice=invoice, actor="user:a", **kwargs)
    assert not CreditNote.objects.exists()
    assert not NumberSequence.objects.filter(series="CN").exclude(last_number=0).exists()


def staff(username, *perms):
    user = UserFactory(username=username, is_staff=True)
    for app, codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    return user


def test_the_admin_credits_and_voids_with_a_reason_behind_the_change_permission(client):
    invoice = invoiced()
    credit = reverse("admin:billing_invoice_credit", args=[invoice.pk])
    void = reverse("admin:billing_invoice_void", args=[invoice.pk])
    change = reverse("admin:billing_invoice_change", args=[invoice.pk])

    client.force_login(staff("viewer", ("billing", "view_invoice")))
    assert credit not in client.get(change).content.decode()
    assert client.post(credit, {"amount": "10", "reason": "x"}).status_code == 403
    assert client.post(void, {"reason": "x"}).status_code == 403

    client.force_login(
        staff(
            "clerk",
            ("billing", "view_invoice"),
            ("billing", "change_invoice"),
            ("billing", "view_creditnote"),
        )
    )
    page = client.get(change).content.decode()
    assert credit in page and void in page
    both = client.post(credit, {"line": invoice.lines.get().pk, "amount": "10", "reason": "double"})
    assert both.status_code == 200 and "one of them" in both.content.decode()
    no_reason = client.post(credit, {"amount": "10"})
    assert no_reason.status_code == 200 and "This field is required" in no_reason.content.decode()
    too_much = client.post(credit, {"amount": "1000", "reason": "oops"})
    assert too_much.status_code == 200 and "more than is left" in too_much.content.decode()
    assert not CreditNote.objects.exists()

    ok = client.post(credit, {"amount": "12.50", "reason": "service credit"}, follow=True)
    assert ok.status_code == 200 and "CN-2026-000001 issued: 15.00 EUR" in ok.content.decode()
    assert client.post(void, {"reason": "wrong customer"}).status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.VOID
    notes = client.get(reverse("admin:billing_creditnote_changelist")).content.decode()
    assert "CN-2026-000002" in notes and "105.00 EUR" in notes  # 120.00 less 15.00 credited
    pdf = client.get(
        reverse("admin:billing_creditnote_pdf", args=[CreditNote.objects.get(kind="full").pk])
    )
    assert pdf.status_code == 200 and b"".join(pdf.streaming_content).startswith(b"%PDF")


# --- the Stripe side, against localstripe -----------------------------------------------


@pytest.fixture
def stripe_invoice(stripe_org, invoice_settings):
    invoice_settings.INVOICE_ENABLE_STRIPE = True
    invoice = invoiced(stripe_org)
    assert invoice.stripe_invoice_id.startswith("in_")
    return invoice


def stripe(of: Invoice, method: str, path: str, **params) -> dict:
    """A raw Stripe call with the invoice's tenant key (what a person does in Stripe)."""
    client = gateway_for(of.organization).client
    return client.raw_request(method, path, **params).data


def test_voiding_deletes_the_stripe_draft(stripe_invoice, localstripe):
    stripe_id = stripe_invoice.stripe_invoice_id
    note, report = void_invoice(invoice=stripe_invoice, reason="duplicate", actor="user:a")
    assert not report.errors and note.stripe_result == "deleted"
    deletes = [w["path"] for w in localstripe.writes() if w["method"] == "DELETE"]
    assert deletes == [f"/v1/invoices/{stripe_id}"]


def test_a_full_credit_follows_the_stripe_invoices_state(stripe_invoice, localstripe):
    stripe_id = stripe_invoice.stripe_invoice_id
    assert stripe(stripe_invoice, "post", f"/v1/invoices/{stripe_id}/finalize")["status"] == "open"
    note, report = void_invoice(invoice=stripe_invoice, reason="duplicate", actor="user:a")
    assert not report.errors, report.errors
    assert note.stripe_result == "voided"
    assert stripe(stripe_invoice, "get", f"/v1/invoices/{stripe_id}")["status"] == "void"


def test_regenerating_a_paid_stripe_invoice_credits_it_with_a_stripe_credit_note(
    stripe_invoice, localstripe
):
    stripe_id = stripe_invoice.stripe_invoice_id
    paid = stripe(stripe_invoice, "post", f"/v1/invoices/{stripe_id}/pay", paid_out_of_band="true")
    assert paid["status"] == "paid"
    run = run_job(
        "billing.regenerate_invoice",
        params={"organization": stripe_invoice.organization.key, "month": "2026-01"},
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    note = CreditNote.objects.get()
    assert note.stripe_result.startswith("credit note cn_")
    assert run.summary["old_stripe_invoice"] == note.stripe_result
    listed = stripe(stripe_invoice, "get", "/v1/credit_notes", invoice=stripe_id)["data"]
    assert [(n["amount"], n["credit_amount"], n["type"]) for n in listed] == [
        (12_000, 12_000, "post_payment")
    ]
    assert note.number in listed[0]["memo"]
    new = Invoice.objects.exclude(pk=stripe_invoice.pk).get()
    assert new.stripe_invoice_id and new.stripe_invoice_id != stripe_id


def test_a_partial_credit_is_a_negative_item_on_a_stripe_draft_and_a_credit_note_once_open(
    stripe_invoice, localstripe
):
    stripe_id = stripe_invoice.stripe_invoice_id
    first, report = credit_invoice(
        invoice=stripe_invoice, amount_minor=1_000, reason="outage", actor="user:a"
    )
    assert not report.errors and first.stripe_result.startswith("credit item ii_")
    lines = stripe(stripe_invoice, "get", f"/v1/invoices/{stripe_id}/lines")["data"]
    assert sorted(line["amount"] for line in lines) == [-1_200, 2_000, 10_000]

    stripe(stripe_invoice, "post", f"/v1/invoices/{stripe_id}/finalize")
    second, report = credit_invoice(
        invoice=stripe_invoice, amount_minor=500, reason="goodwill", actor="user:a"
    )
    assert not report.errors and second.stripe_result.startswith("credit note cn_")
    listed = stripe(stripe_invoice, "get", "/v1/credit_notes", invoice=stripe_id)["data"]
    assert [(n["amount"], n["type"]) for n in listed] == [(600, "pre_payment")]
    # Idempotent: completing the credit note again calls Stripe no second time.
    localstripe.clear_requests()
    complete_credit_notes([second], actor="user:a", job_run_id=None, report=StepReport())
    assert not [r for r in localstripe.requests() if r["path"] == "/v1/credit_notes"]

"""billing.generate_monthly_invoices and billing.regenerate_invoice, as specifications."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.files.storage import storages
from django.db import connection

from audit.models import AuditTrail
from audit.selectors import audit_of_object
from billing.models import CreditNote, Invoice, InvoiceLine, InvoiceStatus, NumberSequence
from billing.selectors import invoice_pdf_names
from billing.services import invoices as service
from billing.services.invoices import InvoiceDraft, LineDraft, Period, finalize
from jobs.models import JobChunk, JobItemFailure, RunStatus
from jobs.runner import run_job
from notifications.models import OutboundEmail
from subscriptions.models import Organization, OrganizationStatus
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    PlanMetricPriceFactory,
    SubscriptionFactory,
    UsageAggregateFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

JOB = "billing.generate_monthly_invoices"
SLOT = datetime(2026, 2, 1, tzinfo=UTC)  # bills January 2026
JAN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_EMAIL = True
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_TAX_RATE_BPS = 0
    settings.NOTIFY_ON_COMPLETION = False
    return settings


@pytest.fixture
def pro():
    plan = PlanFactory(name="Pro", price_minor=2900, currency="EUR")
    PlanMetricPriceFactory(
        plan=plan,
        metric=BillableMetricFactory(code="api_calls", name="API calls", unit="calls"),
        unit_price_minor=2,
    )
    return plan


def customer(plan, *, key=None, status="active", start=JAN - timedelta(days=5), **extra):
    """An organization subscribed to `plan` since `start` (default: before
    January, so its monthly fee is January's in full)."""
    org = OrganizationFactory(**({"key": key} if key else {}))
    SubscriptionFactory(
        organization=org,
        plan=plan,
        status=status,
        current_period_start=start,
        current_period_end=start + timedelta(days=31),
        **extra,
    )
    return org


def usage(org, metric, total, *, at=JAN + timedelta(days=3)):
    return UsageAggregateFactory(organization=org, metric=metric, hour=at, total=total)


def stored(name: str) -> bytes:
    with storages["invoices"].open(name, "rb") as handle:
        return handle.read()


def test_the_run_bills_last_month_with_plan_fee_and_priced_usage(pro):
    org = customer(pro, key="org_acme")
    usage(org, "api_calls", 1000)
    usage(org, "api_calls", 500, at=JAN + timedelta(days=20))
    usage(org, "api_calls", 999, at=SLOT)  # February: not this invoice
    usage(org, "unpriced_metric", 7)

    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED, run.error
    invoice = Invoice.objects.get()
    assert (invoice.period_start, invoice.period_end) == (date(2026, 1, 1), date(2026, 2, 1))
    assert invoice.number == "INV-2026-000001"
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (5900, 0, 5900)
    lines = list(invoice.lines.values_list("kind", "quantity", "unit_price_minor", "amount_minor"))
    assert lines == [("plan", 1, 2900, 2900), ("usage", 1500, 2, 3000)]
    assert invoice.status == InvoiceStatus.SENT and invoice.sent_at
    assert invoice.pdf.name == "invoices/2026/INV-2026-000001.pdf"
    assert stored(invoice.pdf.name).startswith(b"%PDF")
    email = OutboundEmail.objects.get(pk=invoice.email_id)
    assert email.dedupe_key == f"invoice:{invoice.pk}"
    assert email.to == org.billing_email and "INV-2026-000001" in email.subject
    attachment = email.attachments.get()
    assert (attachment.filename, attachment.mimetype) == ("INV-2026-000001.pdf", "application/pdf")
    assert run.summary["period"] == "2026-01"
    assert run.summary["organizations_processed"] == 1
    assert run.summary["invoices_created"] == 1
    assert run.summary["revenue_minor"] == {"EUR": 5900}
    assert run.summary["errors"] == dict.fromkeys(service.COMPONENTS, 0)
    assert run.summary["duration_seconds"] >= 0
    assert (run.processed, run.succeeded) == (1, 1)


def test_what_is_billed_trials_closed_organizations_and_yearly_plans(pro):
    yearly = PlanFactory(name="Pro yearly", price_minor=29000, currency="EUR", interval="year")
    billed = customer(pro)
    customer(pro, status="trialing")
    closed = customer(pro)
    closed.status = OrganizationStatus.CLOSED
    closed.save()
    yearly_started_in_jan = customer(yearly, start=JAN + timedelta(days=2))
    customer(yearly, start=JAN - timedelta(days=40))  # billed in its own start month
    OrganizationFactory()  # no subscription at all

    run = run_job(JOB, slot=SLOT)

    assert set(Invoice.objects.values_list("organization_id", "total_minor")) == {
        (billed.pk, 2900),
        (yearly_started_in_jan.pk, 29000),
    }
    assert run.summary["nothing_to_bill"] == 3
    assert (run.processed, run.succeeded, run.skipped) == (5, 2, 3)


def test_tax_is_added_in_basis_points_rounded_half_up(pro, settings):
    settings.INVOICE_TAX_RATE_BPS = 1950  # 19.5%: 2900 * 0.195 = 565.5 -> 566
    customer(pro)
    run_job(JOB, slot=SLOT)
    invoice = Invoice.objects.get()
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (2900, 566, 3466)


def test_numbers_are_consecutive_per_year_across_chunks(pro):
    for _ in range(7):
        customer(pro)
    NumberSequence.objects.create(series="INV", year=2026, last_number=41)

    run = run_job(JOB, slot=SLOT, params={"chunk_size": 3})

    assert run.summary["chunks"] == 3
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{n:06d}" for n in range(42, 49)]
    assert NumberSequence.objects.get(series="INV", year=2026).last_number == 48


def test_december_is_numbered_in_the_year_it_is_issued(pro):
    customer(pro, start=datetime(2026, 12, 5, tzinfo=UTC))
    run_job(JOB, slot=datetime(2027, 1, 1, tzinfo=UTC))
    assert Invoice.objects.get().number == "INV-2027-000001"


def test_rerunning_the_month_creates_no_second_invoice_pdf_or_email(pro, tmp_path):
    for _ in range(3):
        customer(pro)
    first = run_job(JOB, slot=SLOT)
    second = run_job(JOB, params={"process_month": "2026-01"})

    assert second.status == RunStatus.SUCCEEDED
    assert Invoice.objects.count() == 3
    assert OutboundEmail.objects.count() == 3
    assert len(list((tmp_path / "invoices" / "2026").iterdir())) == 3
    assert second.summary["invoices_created"] == 0
    assert second.summary["invoices_existing"] == 3
    assert second.summary["emails_queued"] == 0
    assert second.summary["revenue_minor"] == first.summary["revenue_minor"] == {"EUR": 8700}


def test_a_run_redone_after_a_crash_finishes_what_was_left(pro, tmp_path):
    """A worker died after finalizing (no PDF, no email) for one organization,
    and after storing the PDF but before recording it for another."""
    a, b, c = customer(pro), customer(pro), customer(pro)
    period = Period.of_month(date(2026, 1, 1))
    drafts, _ = service.build_drafts(organizations=[a, b], period=period)
    made = finalize(drafts=list(drafts.values()), actor="test")
    orphan = service.store_pdf(number=made[1].number, content=b"%PDF-stale")

    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.SUCCEEDED
    assert Invoice.objects.count() == 3
    assert sorted(Invoice.objects.values_list("number", flat=True)) == [
        "INV-2026-000001",
        "INV-2026-000002",
        "INV-2026-000003",
    ]
    assert Invoice.objects.get(organization=c).number == "INV-2026-000003"
    assert set(Invoice.objects.values_list("status", flat=True)) == {InvoiceStatus.SENT}
    assert stored(orphan).startswith(b"%PDF-1")  # overwritten, not duplicated
    assert len(list((tmp_path / "invoices" / "2026").iterdir())) == 3
    assert OutboundEmail.objects.count() == 3
    assert run.summary["invoices_created"] == 1 and run.summary["invoices_existing"] == 2


def test_a_killed_chunk_is_redone_by_the_continued_run_without_duplicates(pro):
    """The run's own chunks survive; the chunk whose worker died is reclaimed
    after its lease and finds its invoices already made."""
    orgs = [customer(pro) for _ in range(4)]
    run = run_job(JOB, slot=SLOT, params={"chunk_size": 2})
    emails = OutboundEmail.objects.count()
    JobChunk.objects.filter(run=run, index=1).update(
        status="running", lease_until=datetime(2026, 1, 1, tzinfo=UTC)
    )
    from jobs.fanout import run_chunks

    run.status = RunStatus.RUNNING
    run.save(update_fields=["status"])
    assert run_chunks(run.pk, "billing.jobs.invoices.process_chunk") == 1
    assert Invoice.objects.count() == len(orgs)
    assert OutboundEmail.objects.count() == emails


def test_a_pdf_failure_is_recorded_and_the_others_go_on(pro, monkeypatch):
    good, bad = customer(pro, key="org_good"), customer(pro, key="org_bad")
    real = service.render_many

    def render_many(invoices):
        pdfs, errors = real([i for i in invoices if i.organization_key != "org_bad"])
        for i in invoices:
            if i.organization_key == "org_bad":
                errors[i.key] = RuntimeError("font missing")
        return pdfs, errors

    monkeypatch.setattr(service, "render_many", render_many)
    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.PARTIAL
    assert run.summary["errors"]["pdf"] == 1
    failure = JobItemFailure.objects.get(run=run)
    assert (failure.item_key, failure.error) == ("org_bad", "pdf: font missing")
    assert Invoice.objects.get(organization=good).status == InvoiceStatus.SENT
    broken = Invoice.objects.get(organization=bad)
    assert broken.status == InvoiceStatus.FINALIZED and not broken.pdf and not broken.email_id

    monkeypatch.setattr(service, "render_many", real)
    rerun = run_job(JOB, params={"process_month": "2026-01"})
    assert rerun.status == RunStatus.SUCCEEDED
    broken.refresh_from_db()
    assert broken.status == InvoiceStatus.SENT and broken.pdf
    assert rerun.summary["pdfs_rendered"] == 1 and rerun.summary["emails_queued"] == 1


def test_storage_and_email_failures_are_counted_per_component(pro, monkeypatch):
    customer(pro, key="org_ok")
    customer(pro, key="org_disk")
    no_mail = customer(pro, key="org_nomail")
    no_mail.billing_email = ""
    no_mail.save()
    real = service.store_pdf

    def store_pdf(*, number, content):
        if number == "INV-2026-000002":
            raise OSError("disk full")
        return real(number=number, content=content)

    monkeypatch.setattr(service, "store_pdf", store_pdf)
    run = run_job(JOB, slot=SLOT)

    assert run.summary["errors"]["storage"] == 1
    assert run.summary["errors"]["email"] == 1
    assert dict(JobItemFailure.objects.values_list("item_key", "error")) == {
        "org_disk": "storage: disk full",
        "org_nomail": "email: organization has no billing email",
    }
    assert (run.processed, run.succeeded, run.failed) == (3, 1, 2)


def test_a_dry_run_builds_in_memory_and_reports_what_it_would_bill(pro, tmp_path):
    org = customer(pro)
    usage(org, "api_calls", 100)
    customer(pro)

    run = run_job(JOB, slot=SLOT, dry_run=True)

    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["would_create"] == 2
    assert run.summary["would_bill_minor"] == {"EUR": 2900 + 200 + 2900}
    assert not Invoice.objects.exists()
    assert not OutboundEmail.objects.exists()
    assert not NumberSequence.objects.exists()
    assert not JobChunk.objects.exists()
    assert not (tmp_path / "invoices").exists()


def test_a_tenant_run_bills_only_that_organization(pro):
    one = customer(pro, key="org_one")
    customer(pro, key="org_two")
    run_job(JOB, slot=SLOT, tenant="org_one")
    assert list(Invoice.objects.values_list("organization_id", flat=True)) == [one.pk]


@pytest.mark.parametrize(
    ("month", "message"),
    [("2026-13", "YYYY-MM"), ("January", "YYYY-MM"), ("2026-02", "not over")],
)
def test_a_bad_or_unfinished_month_is_refused(pro, month, message):
    customer(pro)
    run = run_job(JOB, slot=SLOT, params={"process_month": month})
    assert run.status == RunStatus.FAILED and message in run.error
    assert not Invoice.objects.exists()


def test_subscriptions_in_two_currencies_are_an_error_for_that_organization(pro):
    org = customer(pro, key="org_mixed")
    usd = PlanFactory(name="Team", price_minor=9900, currency="USD")
    SubscriptionFactory(
        organization=org,
        plan=usd,
        current_period_start=JAN,
        current_period_end=JAN + timedelta(days=31),
    )
    customer(pro)
    run = run_job(JOB, slot=SLOT)
    assert run.summary["errors"]["build"] == 1
    assert "several currencies" in JobItemFailure.objects.get(run=run).error
    assert Invoice.objects.count() == 1


def test_status_changes_are_audited(pro):
    org = customer(pro, key="org_audit")
    run = run_job(JOB, slot=SLOT)
    invoice = Invoice.objects.get()
    records = audit_of_object(object_type="billing.invoice", object_id=invoice.pk, tenant=org.key)
    assert sorted(records.values_list("action", flat=True)) == ["invoice.finalized", "invoice.sent"]
    assert {r.tenant for r in records} == {org.key}
    assert {r.actor for r in records} == {f"job:{JOB}#{run.pk}"}


def test_without_email_enabled_invoices_stay_finalized(pro, settings):
    settings.INVOICE_ENABLE_EMAIL = False
    customer(pro)
    run = run_job(JOB, slot=SLOT)
    invoice = Invoice.objects.get()
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.pdf and not invoice.email_id
    assert not OutboundEmail.objects.exists()
    assert run.summary["emails_queued"] == 0


def test_the_summary_is_emailed_when_notify_on_completion_is_set(pro, settings):
    settings.NOTIFY_ON_COMPLETION = True
    settings.NOTIFY_EMAIL = "finance@example.com"
    customer(pro)
    run = run_job(JOB, slot=SLOT)
    email = OutboundEmail.objects.get(kind="billing.invoice_run_summary")
    assert email.to == "finance@example.com"
    assert email.dedupe_key == f"billing.invoice_run:{run.pk}"
    assert "2026-01" in email.subject and "succeeded" in email.subject
    assert "Invoices created: 1" in email.body_text and "29.00 EUR" in email.body_text


def test_regenerate_voids_the_invoice_and_issues_a_new_number_pdf_and_email(pro):
    org = customer(pro, key="org_fix")
    run_job(JOB, slot=SLOT)
    old = Invoice.objects.get()
    usage(org, "api_calls", 50)  # late usage the first invoice missed

    run = run_job(
        "billing.regenerate_invoice",
        params={"organization": "org_fix", "month": "2026-01", "reason": "late usage"},
    )

    assert run.status == RunStatus.SUCCEEDED, run.error
    old.refresh_from_db()
    assert old.status == InvoiceStatus.VOID and old.voided_at and old.void_reason == "late usage"
    new = Invoice.objects.exclude(pk=old.pk).get()
    assert new.number == "INV-2026-000002" and new.total_minor == 2900 + 100
    assert new.status == InvoiceStatus.SENT
    assert OutboundEmail.objects.get(pk=new.email_id).dedupe_key == f"invoice:{new.pk}"
    assert stored(old.pdf.name) and stored(new.pdf.name)  # the voided PDF stays as history
    assert run.summary["voided"] == old.number and run.summary["invoice"] == new.number
    assert AuditTrail.objects.filter(action="invoice.voided", object_id=str(old.pk)).exists()
    note = CreditNote.objects.get(invoice=old)
    assert run.summary["credit_note"] == note.number == f"CN-{note.issued_at.year}-000001"
    assert invoice_pdf_names() == {old.pdf.name, new.pdf.name, note.pdf.name}


def test_regenerate_refuses_what_it_cannot_do_and_changes_nothing(pro):
    OrganizationFactory(key="org_nosub")
    bad = run_job(
        "billing.regenerate_invoice", params={"organization": "org_nope", "month": "2026-01"}
    )
    assert bad.status == RunStatus.FAILED and "unknown organization" in bad.error
    empty = run_job(
        "billing.regenerate_invoice", params={"organization": "org_nosub", "month": "2026-01"}
    )
    assert empty.status == RunStatus.FAILED and "no billable subscription" in empty.error
    assert not Invoice.objects.exists()


def test_regenerate_runs_per_tenant_and_refuses_another_organization(pro):
    customer(pro, key="org_t1")
    customer(pro, key="org_t2")
    run_job(JOB, slot=SLOT)
    run = run_job("billing.regenerate_invoice", tenant="org_t1", params={"month": "2026-01"})
    assert run.status == RunStatus.SUCCEEDED and run.summary["organization"] == "org_t1"
    other = run_job(
        "billing.regenerate_invoice",
        tenant="org_t1",
        params={"month": "2026-01", "organization": "org_t2"},
    )
    assert other.status == RunStatus.FAILED and "not the run's tenant" in other.error
    assert Invoice.objects.filter(status=InvoiceStatus.VOID).count() == 1


def test_regenerate_dry_run_voids_nothing(pro):
    customer(pro, key="org_dry")
    run_job(JOB, slot=SLOT)
    run = run_job(
        "billing.regenerate_invoice",
        params={"organization": "org_dry", "month": "2026-01"},
        dry_run=True,
    )
    assert run.summary["would_bill_minor"] == {"EUR": 2900}
    assert Invoice.objects.get().status == InvoiceStatus.SENT


def test_resend_queues_the_email_again_with_its_pdf(pro):
    customer(pro)
    run_job(JOB, slot=SLOT)
    invoice = Invoice.objects.get()
    first = invoice.email_id
    email_id = service.resend_invoice(invoice=invoice, actor="user:alice")
    assert email_id != first
    again = OutboundEmail.objects.get(pk=email_id)
    assert again.dedupe_key.startswith(f"invoice:{invoice.pk}:resend:")
    assert again.attachments.get().filename == f"{invoice.number}.pdf"
    invoice.refresh_from_db()
    assert invoice.email_id == email_id
    assert AuditTrail.objects.filter(action="invoice.resent", actor="user:alice").exists()


def test_the_database_refuses_a_second_live_invoice_for_a_period(pro):
    org = customer(pro)
    draft = InvoiceDraft(
        organization_id=org.pk,
        organization_key=org.key,
        period=Period.of_month(date(2026, 1, 1)),
        currency="EUR",
        lines=[
            LineDraft(kind="plan", description="x", quantity=1, unit_price_minor=1, amount_minor=1)
        ],
    )
    assert len(finalize(drafts=[draft], actor="test")) == 1
    assert finalize(drafts=[draft], actor="test") == []  # skipped, no number consumed
    assert NumberSequence.objects.get(series="INV", year=2026).last_number == 1
    assert InvoiceLine.objects.count() == 1


def test_the_cleanup_keeps_invoice_pdfs_by_default(pro, settings):
    from django.conf import settings as live

    assert live.INVOICE_REFERENCED_FILES_PROVIDER == "billing.selectors.invoice_pdf_names"
    customer(pro)
    run_job(JOB, slot=SLOT)
    assert invoice_pdf_names() == {Invoice.objects.get().pdf.name}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_finalizers_give_gapless_unique_numbers(pro):
    orgs = [customer(pro) for _ in range(40)]
    period = Period.of_month(date(2026, 1, 1))
    drafts, _ = service.build_drafts(organizations=orgs, period=period)
    parts = [list(drafts.values())[i::4] for i in range(4)]
    # Every finalizer also tries the first organization: only one invoice results.
    errors: list[Exception] = []

    def finalize_part(part):
        try:
            for i in range(0, len(part), 3):
                finalize(drafts=[*part[i : i + 3], drafts[orgs[0].pk]], actor="test")
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize_part, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 41)]
    assert Invoice.objects.filter(organization=orgs[0]).count() == 1


def test_one_bad_email_costs_only_its_own_email(pro, monkeypatch):
    customer(pro, key="org_fine")
    customer(pro, key="org_broken")
    real = service.invoice_email_context

    def context(invoice):
        if invoice.organization.key == "org_broken":
            raise ValueError("template exploded")
        return real(invoice)

    monkeypatch.setattr(service, "invoice_email_context", context)
    run = run_job(JOB, slot=SLOT)

    assert run.summary["errors"]["email"] == 1 and run.summary["emails_queued"] == 1
    assert JobItemFailure.objects.get(run=run).item_key == "org_broken"
    assert OutboundEmail.objects.get().organization.key == "org_fine"
    assert set(Invoice.objects.values_list("organization__key", "status")) == {
        ("org_fine", InvoiceStatus.SENT),
        ("org_broken", InvoiceStatus.FINALIZED),
    }


KILLED_WORKER = """
import os, sys
import django
django.setup()
from billing.jobs import invoices as invoice_jobs
from billing.services import invoices
from jobs.fanout import claim_chunk, process_chunk

def die(*args, **kwargs):
    os._exit(9)  # killed after the chunk's invoices were finalized, before PDFs and emails

invoices.complete_invoices = die
chunk, worker = claim_chunk(int(sys.argv[1]), lease_seconds=600)
process_chunk(chunk, worker=worker, func=invoice_jobs.process_chunk, lease_seconds=600)
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_killed_mid_chunk_leaves_nothing_twice(pro, settings):
    """A real worker process dies after numbering its chunk's invoices; once its
    lease runs out the chunk is redone: no second invoice, number, PDF or email."""
    import os
    import subprocess
    import sys

    from django.utils import timezone

    from jobs.fanout import run_chunks
    from jobs.models import JobRun

    for _ in range(3):
        customer(pro)
    run = JobRun.objects.create(
        job=JOB, trigger="schedule", slot=SLOT, status=RunStatus.RUNNING, params={}
    )
    ids = sorted(Organization.objects.values_list("pk", flat=True))
    JobChunk.objects.create(run=run, index=0, items=ids)
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}"
            f":{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "MEDIA_ROOT": settings.MEDIA_ROOT,
    }
    died = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(run.pk)], env=env, check=False)

    assert died.returncode == 9
    assert Invoice.objects.count() == 3 and not OutboundEmail.objects.exists()
    assert run_chunks(run.pk, "billing.jobs.invoices.process_chunk") == 0  # leased
    JobChunk.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    assert run_chunks(run.pk, "billing.jobs.invoices.process_chunk") == 1

    assert sorted(Invoice.objects.values_list("number", flat=True)) == [
        "INV-2026-000001",
        "INV-2026-000002",
        "INV-2026-000003",
    ]
    assert set(Invoice.objects.values_list("status", flat=True)) == {InvoiceStatus.SENT}
    assert OutboundEmail.objects.count() == 3
    chunk = JobChunk.objects.get()
    assert (chunk.status, chunk.attempts, chunk.processed) == ("done", 2, 3)

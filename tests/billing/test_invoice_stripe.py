"""The Stripe step of the invoice run, against localstripe (tests.fakes.fake_stripe)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing.models import Invoice, InvoiceStatus
from jobs.models import JobItemFailure, RunStatus
from jobs.runner import run_job
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

JOB = "billing.generate_monthly_invoices"
SLOT = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = True
    settings.INVOICE_ENABLE_EMAIL = True


def subscribe(org):
    start = datetime(2026, 1, 3, tzinfo=UTC)
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=2900),
        current_period_start=start,
        current_period_end=start + timedelta(days=31),
    )
    return org


def invoice_writes(localstripe) -> list[dict]:
    return [w for w in localstripe.writes() if w["path"] == "/v1/invoices"]


def test_a_tenant_with_stripe_gets_a_stripe_invoice_once(stripe_org, localstripe):
    subscribe(stripe_org)
    run = run_job(JOB, slot=SLOT)

    invoice = Invoice.objects.get()
    assert invoice.stripe_invoice_id.startswith("in_")
    assert run.summary["stripe_invoices_created"] == 1
    writes = invoice_writes(localstripe)
    assert len(writes) == 1

    # A worker died after Stripe answered, before the id was saved: the rerun's
    # call replays the same idempotency key and Stripe creates nothing new.
    Invoice.objects.update(stripe_invoice_id="")
    rerun = run_job(JOB, params={"process_month": "2026-01"})
    assert rerun.status == RunStatus.SUCCEEDED
    assert Invoice.objects.get().stripe_invoice_id == invoice.stripe_invoice_id
    assert len(invoice_writes(localstripe)) == 1
    keys = {r.get("idempotency_key") for r in localstripe.requests() if r["path"] == "/v1/invoices"}
    assert keys == {f"org:{stripe_org.pk}:invoice:2026-01:invoice"}


def test_tenants_without_stripe_are_skipped(stripe_settings):
    subscribe(OrganizationFactory())
    run = run_job(JOB, slot=SLOT)
    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["stripe_skipped"] == 1
    assert Invoice.objects.get().stripe_invoice_id == ""


def test_a_stripe_failure_is_recorded_and_the_invoice_is_still_sent(stripe_org, localstripe):
    subscribe(stripe_org)
    localstripe.add_fault(status=500, times=10, path="^/v1/invoices$", method="POST")
    run = run_job(JOB, slot=SLOT)

    assert run.status == RunStatus.PARTIAL
    assert run.summary["errors"]["stripe"] == 1
    assert JobItemFailure.objects.get(run=run).error.startswith("stripe: ")
    invoice = Invoice.objects.get()
    assert invoice.status == InvoiceStatus.SENT and not invoice.stripe_invoice_id

    localstripe.clear_faults()
    from payments.gateway import reset_gateways

    reset_gateways()  # the tenant's breaker opened
    rerun = run_job(JOB, params={"process_month": "2026-01"})
    assert rerun.status == RunStatus.SUCCEEDED
    assert Invoice.objects.get().stripe_invoice_id.startswith("in_")


def test_a_regenerated_invoice_gets_its_own_stripe_invoice(stripe_org, localstripe):
    subscribe(stripe_org)
    run_job(JOB, slot=SLOT)
    first = Invoice.objects.get()
    run = run_job(
        "billing.regenerate_invoice",
        params={"organization": stripe_org.key, "month": "2026-01"},
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    new = Invoice.objects.exclude(pk=first.pk).get()
    assert new.stripe_invoice_id and new.stripe_invoice_id != first.stripe_invoice_id
    assert len(invoice_writes(localstripe)) == 2
    # The voided invoice's Stripe draft is withdrawn, not left to be paid.
    assert run.summary["old_stripe_invoice"] == "deleted"
    deletes = [w for w in localstripe.writes() if w["method"] == "DELETE"]
    assert [w["path"] for w in deletes] == [f"/v1/invoices/{first.stripe_invoice_id}"]

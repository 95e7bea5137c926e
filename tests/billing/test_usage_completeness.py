"""An invoice never misses usage of its period, and late usage is billed exactly once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from billing.models import (
    BilledUsage,
    Invoice,
    InvoiceStatus,
    UsageHour,
    UsageLateHour,
    UsageRevision,
)
from billing.selectors import billed_usage
from billing.services.build import Period, build_drafts
from billing.services.invoices import finalize
from billing.services.usage import UsageEventIn, aggregate_hour, record_usage_events
from jobs.models import RunStatus
from jobs.runner import run_job
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    PlanMetricPriceFactory,
    SubscriptionFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

JOB = "billing.generate_monthly_invoices"
JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)
JANUARY = Period.of_month(date(2026, 1, 1))


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_TAX_RATE_BPS = 0
    settings.INVOICE_GRACE_HOURS = 0


@pytest.fixture
def org():
    plan = PlanFactory(price_minor=1000)
    PlanMetricPriceFactory(
        plan=plan,
        metric=BillableMetricFactory(code="api_calls", name="API calls", unit="calls"),
        unit_price_minor=3,
    )
    org = OrganizationFactory(key="org_usage")
    SubscriptionFactory(
        organization=org,
        plan=plan,
        created_at=JAN - timedelta(days=40),
        current_period_start=JAN - timedelta(days=10),
        current_period_end=JAN + timedelta(days=20),
    )
    return org


def calls(org, at: datetime, quantity: int, key: str) -> int:
    return record_usage_events(
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


def usage_lines(invoice: Invoice) -> list[tuple[str, int, int]]:
    return list(
        invoice.lines.exclude(kind="plan")
        .order_by("id")
        .values_list("kind", "quantity", "amount_minor")
    )


def test_usage_in_the_last_minutes_of_the_month_not_yet_aggregated_is_on_the_invoice(org):
    calls(org, JAN + timedelta(days=10, hours=3), 100, "early")
    aggregate_hour(hour=JAN + timedelta(days=10, hours=3))  # the hourly job did this one
    calls(org, FEB - timedelta(minutes=20), 7, "at-23:40")  # the last hour: not aggregated yet

    run = run_job(JOB, slot=FEB)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert usage_lines(Invoice.objects.get()) == [("usage", 107, 321)]
    assert run.summary["usage"]["missing_hours_aggregated"] == 743
    assert run.summary["usage"]["late_hours_rebuilt"] == 0
    assert UsageHour.objects.filter(hour__gte=JAN, hour__lt=FEB).count() == 744


def test_an_hour_with_late_events_is_rebuilt_before_billing(org):
    hour = JAN + timedelta(days=15, hours=10)
    calls(org, hour + timedelta(minutes=5), 10, "first")
    aggregate_hour(hour=hour)
    calls(org, hour + timedelta(minutes=50), 5, "late")
    assert UsageLateHour.objects.filter(hour=hour).exists()

    run = run_job(JOB, slot=FEB)

    assert usage_lines(Invoice.objects.get()) == [("usage", 15, 45)]
    assert run.summary["usage"]["late_hours_rebuilt"] == 1
    assert run.summary["usage"]["late"] == [hour.isoformat()]
    assert not UsageLateHour.objects.exists()


def test_an_event_after_finalization_is_billed_exactly_once_on_the_next_invoice(org, admin_client):
    calls(org, JAN + timedelta(days=3), 100, "jan-1")
    run_job(JOB, slot=FEB)
    january = Invoice.objects.get(period_start=JAN.date())
    assert usage_lines(january) == [("usage", 100, 300)]

    # Usage of 20 January reported on 1 February, after January was invoiced;
    # the hourly job rebuilds its hour and marks the month for recheck.
    calls(org, JAN + timedelta(days=19, hours=8), 40, "jan-late")
    hourly = run_job("billing.aggregate_usage", slot=FEB + timedelta(hours=2))
    assert hourly.summary["late_hours"] == [(JAN + timedelta(days=19, hours=8)).isoformat()]
    assert UsageRevision.objects.filter(organization=org, period_start=JAN.date()).exists()
    calls(org, FEB + timedelta(days=5), 10, "feb-1")

    run = run_job(JOB, slot=MAR)

    february = Invoice.objects.get(period_start=FEB.date())
    lines = list(
        february.lines.exclude(kind="plan").values_list(
            "kind", "description", "quantity", "amount_minor", "adjusts_period_start"
        )
    )
    assert lines == [
        ("usage", "API calls \u2014 per unit", 10, 30, None),
        (
            "adjustment",
            "Late usage of January 2026: API calls \u2014 per unit",
            40,
            120,
            JAN.date(),
        ),
    ]
    assert run.summary["late_usage_lines"] == 1
    assert not UsageRevision.objects.exists()
    january_billed = billed_usage(organization_ids=[org.pk], periods=[JAN.date()])
    assert january_billed == {(org.pk, JAN.date(), "api_calls"): (140, 420)}

    # Rerunning, and the next month, bill it no second time.
    run_job(JOB, params={"process_month": "2026-02"})
    run_job(JOB, slot=APR)
    march = Invoice.objects.get(period_start=MAR.date())
    assert not march.lines.filter(kind="adjustment").exists()
    assert billed_usage(organization_ids=[org.pk], periods=[JAN.date()]) == january_billed

    # Regenerating February bills January's late usage again on the new
    # February invoice (the old one is void), so still once in all.
    regen = run_job(
        "billing.regenerate_invoice", params={"organization": org.key, "month": "2026-02"}
    )
    assert regen.status == RunStatus.SUCCEEDED, regen.error
    new_feb = Invoice.objects.exclude(status=InvoiceStatus.VOID).get(period_start=FEB.date())
    assert new_feb.pk != february.pk
    assert new_feb.lines.filter(kind="adjustment", quantity=40, amount_minor=120).exists()
    assert billed_usage(organization_ids=[org.pk], periods=[JAN.date()]) == january_billed

    # The admin shows the adjustment and the month it bills.
    page = admin_client.get(reverse("admin:billing_invoice_change", args=[new_feb.pk]))
    assert "Late usage of January 2026" in page.content.decode()
    assert "January 2026" in page.content.decode()


def test_a_rebuild_racing_the_invoice_leaves_its_mark_for_the_next_one(org):
    calls(org, JAN + timedelta(days=3), 100, "jan-1")
    aggregate_hour(hour=JAN + timedelta(days=3))
    calls(org, JAN + timedelta(days=3, minutes=30), 1, "jan-2")
    aggregate_hour(hour=JAN + timedelta(days=3))  # a rebuild: revision v1
    drafts, _ = build_drafts(organizations=[org], period=JANUARY)
    assert drafts[org.pk].revisions == {JAN.date(): 1}
    # Another rebuild lands after the draft read the usage, before it is finalized.
    calls(org, JAN + timedelta(days=3, minutes=40), 1, "jan-3")
    aggregate_hour(hour=JAN + timedelta(days=3))

    finalize(drafts=list(drafts.values()), actor="test")

    assert UsageRevision.objects.get(organization=org).version == 2  # kept for the next invoice


def test_the_usage_ledger_refuses_a_second_billing_of_the_same_revision(org):
    run_job(JOB, slot=FEB)
    invoice = Invoice.objects.get()
    BilledUsage.objects.create(
        organization=org,
        period_start=JAN.date(),
        metric="api_calls",
        revision=0,
        quantity=1,
        amount_minor=3,
        invoice=invoice,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        BilledUsage.objects.create(
            organization=org,
            period_start=JAN.date(),
            metric="api_calls",
            revision=0,
            quantity=1,
            amount_minor=3,
            invoice=invoice,
        )


def test_a_period_whose_late_hour_is_past_retention_is_not_invoiced(org, settings):
    settings.USAGE_EVENT_RETENTION_DAYS = 20
    UsageHour.objects.create(hour=JAN + timedelta(hours=5))
    UsageLateHour.objects.create(hour=JAN + timedelta(hours=5))

    run = run_job(JOB, slot=FEB)

    assert run.status == RunStatus.FAILED
    assert "usage of 2026-01 is incomplete" in run.error and "retention" in run.error
    assert not Invoice.objects.exists()


def test_a_dry_run_says_which_hours_it_would_aggregate_and_aggregates_none(org):
    calls(org, FEB - timedelta(minutes=5), 3, "last")
    run = run_job(JOB, slot=FEB, dry_run=True)
    assert run.summary["usage"]["missing_hours_would_aggregate"] == 744
    assert not UsageHour.objects.exists() and not Invoice.objects.exists()

"""Tax per organization, its name on the invoice, and the reverse charge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from audit.selectors import audit_of_object
from billing.models import Invoice
from jobs.runner import run_job
from subscriptions.models import Organization
from subscriptions.services.organizations import update_billing_details
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 2, 1, tzinfo=UTC)
JAN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def invoice_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_TAX_RATE_BPS = 2000
    settings.INVOICE_TAX_NAME = "VAT"
    settings.INVOICE_SELLER_COUNTRY = "DE"
    return settings


def billed(**org_fields) -> Organization:
    org = OrganizationFactory(**org_fields)
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=10_000),
        current_period_start=JAN - timedelta(days=2),
        current_period_end=JAN + timedelta(days=29),
    )
    return org


def invoice_of(org) -> Invoice:
    return Invoice.objects.get(organization=org)


def test_the_default_rate_applies_unless_the_organization_has_its_own():
    default = billed(key="org_default")
    own = billed(key="org_own", tax_rate_bps=700, tax_name="MwSt reduced")
    exempt = billed(key="org_exempt", tax_rate_bps=0)

    run_job("billing.generate_monthly_invoices", slot=SLOT)

    a, b, c = invoice_of(default), invoice_of(own), invoice_of(exempt)
    assert (a.tax_minor, a.tax_rate_bps, a.tax_name, a.total_minor) == (2000, 2000, "VAT", 12_000)
    assert (b.tax_minor, b.tax_rate_bps, b.tax_name) == (700, 700, "MwSt reduced")
    assert (c.tax_minor, c.total_minor) == (0, 10_000)
    assert not any(i.reverse_charge for i in (a, b, c))


def test_a_buyer_with_a_tax_id_in_another_country_is_reverse_charged():
    foreign = billed(key="org_fr", country="FR", tax_id="FR40303265045")
    domestic = billed(key="org_de", country="DE", tax_id="DE123456789")
    no_tax_id = billed(key="org_fr_consumer", country="FR")

    run_job("billing.generate_monthly_invoices", slot=SLOT)

    reverse_charged = invoice_of(foreign)
    assert reverse_charged.reverse_charge and reverse_charged.tax_minor == 0
    assert reverse_charged.total_minor == 10_000
    assert invoice_of(domestic).tax_minor == 2000 and not invoice_of(domestic).reverse_charge
    assert invoice_of(no_tax_id).tax_minor == 2000


def test_no_reverse_charge_without_a_seller_country(invoice_settings):
    invoice_settings.INVOICE_SELLER_COUNTRY = ""
    foreign = billed(country="FR", tax_id="FR40303265045")
    run_job("billing.generate_monthly_invoices", slot=SLOT)
    assert invoice_of(foreign).tax_minor == 2000


def test_billing_details_are_set_through_the_service_and_audited():
    org = OrganizationFactory()
    update_billing_details(
        organization=org,
        actor="user:alice",
        legal_name="Acme Corporation GmbH",
        billing_address="Hauptstr. 1\n10115 Berlin",
        country="DE",
        tax_id="DE123456789",
        tax_rate_bps=1900,
    )
    org.refresh_from_db()
    assert (org.legal_name, org.country, org.tax_rate_bps) == ("Acme Corporation GmbH", "DE", 1900)
    record = audit_of_object(
        object_type="subscriptions.organization", object_id=org.pk, tenant=org.key
    ).get()
    assert record.changes["tax_rate_bps"] == [None, 1900] and record.actor == "user:alice"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tax_rate_bps": 10_001}, "at most 100%"),
        ({"tax_rate_bps": -1}, "tax_rate_bps"),
        ({"tax_rate_bps": "20%"}, "whole number"),
        ({"country": "Germany"}, "country"),
        ({"plan": "free"}, "not a billing detail"),
    ],
)
def test_bad_billing_details_are_a_value_error_and_nothing_is_written(changes, message):
    org = OrganizationFactory(tax_rate_bps=500)
    with pytest.raises(ValueError, match=message):
        update_billing_details(organization=org, actor="user:alice", **changes)
    org.refresh_from_db()
    assert org.tax_rate_bps == 500 and org.country == ""


def test_the_organization_admin_edits_billing_details_and_refuses_a_tax_over_100_percent(
    admin_client,
):
    org = OrganizationFactory(key="org_taxed", billing_email="billing@taxed.example")
    url = reverse("admin:subscriptions_organization_change", args=[org.pk])
    form = admin_client.get(url).content.decode()
    for field in ("legal_name", "billing_address", "country", "tax_id", "tax_rate_bps"):
        assert f'name="{field}"' in form
    data = {
        "key": org.key,
        "name": org.name,
        "billing_email": org.billing_email,
        "status": "active",
        "timezone": "UTC",
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
        "legal_name": "Taxed Ltd",
        "billing_address": "1 High St",
        "country": "GB",
        "tax_id": "GB123",
        "tax_rate_bps": "12000",
        "tax_name": "",
    }
    refused = admin_client.post(url, data)
    assert refused.status_code == 200 and "at most 100%" in refused.content.decode()
    org.refresh_from_db()
    assert org.tax_rate_bps is None and org.legal_name == ""
    saved = admin_client.post(url, {**data, "tax_rate_bps": "2000"})
    assert saved.status_code == 302
    org.refresh_from_db()
    assert (org.tax_rate_bps, org.legal_name, org.country) == (2000, "Taxed Ltd", "GB")

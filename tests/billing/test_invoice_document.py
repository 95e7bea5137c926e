"""The invoice PDF an accounts-payable clerk accepts: every field there, read
back with poppler (pdftotext, pdfinfo, pdftoppm; Debian's poppler-utils, which
.ci/run installs when missing)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.storage import storages
from PIL import Image

from billing.models import Invoice, InvoiceLineKind
from billing.services.build import InvoiceDraft, LineDraft, Period
from billing.services.invoices import StepReport, complete_invoices, finalize, live_invoices
from jobs.runner import run_job
from tests.factories import (
    BillableMetricFactory,
    OrganizationFactory,
    PlanFactory,
    PlanMetricPriceFactory,
    SubscriptionFactory,
    UsageAggregateFactory,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("empty_broker"),
    pytest.mark.skipif(
        not (shutil.which("pdftotext") and shutil.which("pdftoppm") and shutil.which("pdfinfo")),
        reason="needs poppler-utils (pdftotext, pdfinfo, pdftoppm); .ci/run installs it",
    ),
]

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def logo(tmp_path) -> Path:
    path = tmp_path / "logo.png"
    image = Image.new("RGB", (120, 40), (32, 84, 147))
    image.save(path)
    return path


@pytest.fixture(autouse=True)
def seller(settings, tmp_path, logo, time_machine):
    time_machine.move_to(datetime(2026, 2, 1, 0, 30, tzinfo=UTC), tick=True)
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = False
    settings.INVOICE_GRACE_HOURS = 0
    settings.INVOICE_TAX_RATE_BPS = 2000
    settings.INVOICE_TAX_NAME = "VAT"
    settings.INVOICE_PAYMENT_TERMS_DAYS = 30
    settings.INVOICE_SELLER_NAME = "Back-office SaaS GmbH"
    settings.INVOICE_SELLER_ADDRESS = "Torstrasse 1\n10119 Berlin"
    settings.INVOICE_SELLER_TAX_ID = "DE999999999"
    settings.INVOICE_SELLER_EMAIL = "billing@backoffice.example"
    settings.INVOICE_SELLER_COUNTRY = "DE"
    settings.INVOICE_SELLER_LOGO = str(logo)
    return settings


def pdf_of(invoice: Invoice, tmp_path: Path) -> Path:
    path = tmp_path / f"{invoice.number}.pdf"
    with storages["invoices"].open(invoice.pdf.name, "rb") as handle:
        path.write_bytes(handle.read())
    return path


def text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def info(path: Path) -> dict[str, str]:
    out = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True)
    return {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in out.stdout.splitlines())
    }


def buyer(**extra):
    return OrganizationFactory(
        key="org_clerk",
        name="Acme",
        legal_name="Acme Industries S.A.R.L.",
        billing_address="12 rue de la Paix\n75002 Paris",
        billing_email="ap@acme.example",
        tax_id="FR40303265045",
        country="FR",
        **extra,
    )


def test_the_pdf_carries_every_field_a_clerk_checks(tmp_path):
    org = buyer(tax_rate_bps=2000)  # no reverse charge: FR buyer with its own rate here
    org.tax_id = ""
    org.save()
    plan = PlanFactory(name="Pro", price_minor=2900)
    PlanMetricPriceFactory(
        plan=plan,
        metric=BillableMetricFactory(code="api_calls", name="API calls", unit="calls"),
        unit_price_minor=2,
    )
    SubscriptionFactory(
        organization=org,
        plan=plan,
        created_at=JAN - timedelta(days=60),
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    UsageAggregateFactory(
        organization=org, metric="api_calls", hour=JAN + timedelta(days=2), total=1_500
    )

    run_job("billing.generate_monthly_invoices", slot=FEB)

    invoice = Invoice.objects.get()
    path = pdf_of(invoice, tmp_path)
    body = " ".join(text(path).split())
    expected = [
        # seller
        "Back-office SaaS GmbH",
        "Torstrasse 1",
        "10119 Berlin",
        "Tax id DE999999999",
        "billing@backoffice.example",
        # buyer
        "Billed to",
        "Acme Industries S.A.R.L.",
        "12 rue de la Paix",
        "75002 Paris",
        "FR",
        "ap@acme.example",
        # the document
        f"Invoice {invoice.number}",
        "Issue date 2026-02-01",
        "Due date 2026-03-03",
        "Payment terms: net 30 days; please pay by 03 March 2026.",
        "Period 01 Jan 2026 to 31 Jan 2026",
        # lines: quantity, unit, unit price, amount
        "Description Quantity Unit price Amount",
        "Pro plan (monthly), January 2026 1 month 29.00 EUR 29.00 EUR",
        "API calls \u2014 per unit 1,500 calls 0.02 EUR 30.00 EUR",
        # sums
        "Subtotal 59.00 EUR",
        "VAT 20% 11.80 EUR",
        "Total due 70.80 EUR",
    ]
    missing = [field for field in expected if field not in body]
    assert not missing, f"not in the PDF: {missing}\n{body}"
    assert "Page 1 of" not in body  # one page: no page numbers
    meta = info(path)
    assert meta["Title"] == invoice.number
    assert meta["Pages"] == "1"


def test_a_reverse_charged_invoice_says_so(tmp_path):
    org = buyer()
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=10_000),
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    run_job("billing.generate_monthly_invoices", slot=FEB)
    body = " ".join(text(pdf_of(Invoice.objects.get(), tmp_path)).split())
    assert "Tax id FR40303265045" in body
    assert "VAT (reverse charge) 0.00 EUR" in body
    assert (
        "Reverse charge: no VAT is charged; the recipient (FR40303265045) accounts for it." in body
    )
    assert "Total due 100.00 EUR" in body


def test_a_long_invoice_gets_page_numbers_and_its_neighbour_in_the_chunk_does_not(tmp_path):
    """300 lines run over several pages; rendered in one document with a
    one-page invoice, each still gets its own pages, title and numbering."""
    period = Period.of_month(date(2026, 1, 1))
    big, small = OrganizationFactory(key="org_big"), OrganizationFactory(key="org_small")

    def draft(org, n):
        return InvoiceDraft(
            organization_id=org.pk,
            organization_key=org.key,
            period=period,
            currency="EUR",
            lines=[
                LineDraft(
                    kind=InvoiceLineKind.USAGE,
                    description=f"Line {i + 1:03d} of usage",
                    quantity=i + 1,
                    unit="calls",
                    unit_price_minor=2,
                    amount_minor=2 * (i + 1),
                )
                for i in range(n)
            ],
        )

    finalize(drafts=[draft(big, 300), draft(small, 2)], actor="test")
    invoices = live_invoices(organization_ids=[big.pk, small.pk], period=period)
    complete_invoices(invoices, actor="test", job_run_id=None, report=StepReport())

    long_pdf = pdf_of(Invoice.objects.get(organization=big), tmp_path)
    short_pdf = pdf_of(Invoice.objects.get(organization=small), tmp_path)
    pages = int(info(long_pdf)["Pages"])
    assert pages > 1
    long_text = " ".join(text(long_pdf).split())
    assert f"Page 1 of {pages}" in long_text and f"Page {pages} of {pages}" in long_text
    assert "Line 300 of usage" in long_text and "Total due" in long_text
    assert info(long_pdf)["Title"] == Invoice.objects.get(organization=big).number
    assert info(short_pdf)["Pages"] == "1"
    assert info(short_pdf)["Title"] == Invoice.objects.get(organization=small).number
    assert "Page 1 of" not in text(short_pdf)


def test_page_one_renders_to_a_picture_that_is_not_blank(tmp_path):
    org = buyer()
    SubscriptionFactory(
        organization=org,
        plan=PlanFactory(price_minor=10_000),
        current_period_start=JAN - timedelta(days=3),
        current_period_end=JAN + timedelta(days=28),
    )
    run_job("billing.generate_monthly_invoices", slot=FEB)
    path = pdf_of(Invoice.objects.get(), tmp_path)
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "50",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(path),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    image = Image.open(tmp_path / "page.png").convert("L")
    width, height = image.size
    assert width > 300 and height > 400  # an A4 page at 50 dpi: 413 x 585
    dark = sum(image.histogram()[:200])  # pixels darker than light grey
    assert dark > 0.01 * width * height, "page 1 is (nearly) blank"
    logo_corner = image.crop((width // 2, 0, width, height // 6))  # the seller's logo, top right
    assert logo_corner.getextrema()[0] < 150

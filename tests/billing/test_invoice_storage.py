"""Invoice PDFs on S3 (django-storages against the moto server)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.urls import reverse

from billing.models import Invoice
from jobs.runner import run_job
from tests.factories import OrganizationFactory, PlanFactory, SubscriptionFactory
from tests.fixtures_moto import REGION

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

SLOT = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def bucket(settings, tmp_path, moto_server_url):
    name = f"invoices-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server_url)
    s3.create_bucket(Bucket=name)
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.STORAGES = {
        **settings.STORAGES,
        "invoices": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": name,
                "region_name": REGION,
                "endpoint_url": moto_server_url,
                "default_acl": None,
                "file_overwrite": True,
            },
        },
    }
    return s3, name


def keys(s3, name: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", []))


def customers(n: int) -> None:
    plan = PlanFactory()
    start = datetime(2026, 1, 3, tzinfo=UTC)
    for _ in range(n):
        SubscriptionFactory(
            organization=OrganizationFactory(),
            plan=plan,
            current_period_start=start,
            current_period_end=start + timedelta(days=31),
        )


def test_pdfs_go_to_the_bucket_under_their_number_and_a_rerun_overwrites(bucket):
    s3, name = bucket
    customers(2)
    run_job("billing.generate_monthly_invoices", slot=SLOT)
    expected = ["invoices/2026/INV-2026-000001.pdf", "invoices/2026/INV-2026-000002.pdf"]
    assert keys(s3, name) == expected
    body = s3.get_object(Bucket=name, Key=expected[0])["Body"].read()
    assert body.startswith(b"%PDF")

    Invoice.objects.update(pdf="")  # as if a worker died before recording them
    run = run_job("billing.generate_monthly_invoices", params={"process_month": "2026-01"})
    assert run.summary["pdfs_rendered"] == 2
    assert keys(s3, name) == expected


def test_the_admin_serves_the_pdf_from_the_bucket(bucket, admin_client):
    customers(1)
    run_job("billing.generate_monthly_invoices", slot=SLOT)
    invoice = Invoice.objects.get()
    response = admin_client.get(reverse("admin:billing_invoice_pdf", args=[invoice.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"%PDF")


def test_the_cleanup_removes_only_unreferenced_pdfs_from_the_bucket(bucket, settings):
    s3, name = bucket
    settings.INVOICE_PDF_ORPHAN_MIN_AGE_HOURS = 0
    customers(1)
    run_job("billing.generate_monthly_invoices", slot=SLOT)
    storages["invoices"].save("invoices/2026/orphan.pdf", ContentFile(b"%PDF-orphan"))

    run = run_job("maintenance.cleanup", slot=datetime.now(UTC) + timedelta(hours=1))

    assert run.summary["categories"]["invoice_pdfs"]["removed"] == 1
    assert keys(s3, name) == ["invoices/2026/INV-2026-000001.pdf"]

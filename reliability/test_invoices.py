"""The monthly invoice run, killed half done, then rerun: every organization
ends with one invoice, one stored PDF (S3 on the moto server), one Stripe
invoice (localstripe) and one email (SES on the moto server)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import boto3
import stripe

from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import EMAIL_KIND
from jobs.enqueue import enqueue_run, rerun
from jobs.models import JobRun, RunStatus, Trigger
from jobs.runner import stale_cutoff
from jobs.schedules import pause
from notifications.models import EmailStatus, OutboundEmail
from reliability.conftest import REGION, create_schedule, next_slot, report, ses_env, wait_for
from reliability.test_crash import kill_worker
from tests.factories import (
    OrganizationFactory,
    PaymentProviderConfigFactory,
    PlanFactory,
    SubscriptionFactory,
)

INVOICES = "billing.generate_monthly_invoices"
SEND = "notifications.send_pending"
MONTH = "2026-01"
PERIOD_START = datetime(2026, 1, 1, tzinfo=UTC)
ORGS = 60


def billable_organizations(n: int) -> list:
    """`n` organizations with a subscription billed for January 2026 and a
    Stripe config on localstripe (a key of their own)."""
    plan = PlanFactory(price_minor=2900)
    start = datetime(2026, 1, 3, tzinfo=UTC)
    orgs = []
    for i in range(n):
        org = OrganizationFactory(key=f"inv-{i:03d}", billing_email=f"billing@inv-{i}.example")
        SubscriptionFactory(
            organization=org,
            plan=plan,
            current_period_start=start,
            current_period_end=start + timedelta(days=31),
        )
        PaymentProviderConfigFactory(
            organization=org, secret_key=f"sk_test_{uuid.uuid4().hex[:16]}{i:04d}"
        )
        orgs.append(org)
    return orgs


def invoice_env(moto_url: str, stripe_url: str, bucket: str, media_root: str) -> dict:
    return ses_env(
        moto_url,
        AWS_SES_RATE_LIMIT_PER_SECOND=50,
        MEDIA_ROOT=media_root,
        INVOICE_ENABLE_S3="true",
        INVOICE_S3_BUCKET=bucket,
        INVOICE_S3_REGION=REGION,
        AWS_S3_ENDPOINT_URL=moto_url,
        INVOICE_ENABLE_STRIPE="true",
        INVOICE_ENABLE_EMAIL="true",
        STRIPE_API_BASE=stripe_url,
        STRIPE_RETRY_INITIAL_DELAY_SECONDS=0.05,
        STRIPE_RETRY_MAX_DELAY_SECONDS=0.2,
        STRIPE_RATE_LIMIT_PER_SECOND=1000,
    )


def stripe_invoice_count(stripe_url: str, api_key: str) -> int:
    """Invoices localstripe holds, listed with the Stripe SDK."""
    client = stripe.StripeClient(api_key, base_addresses={"api": stripe_url})
    return sum(1 for _ in client.v1.invoices.list({"limit": 100}).auto_paging_iter())


def test_invoice_run_killed_half_done_then_rerun_bills_each_organization_once(
    clusters, inbox, moto_url, localstripe, tmp_path, settings
):
    localstripe.flush()
    localstripe.clear_requests()
    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket=bucket)
    orgs = billable_organizations(ORGS)
    cluster = clusters.start(
        1,
        Q_WORKERS=1,
        **invoice_env(moto_url, localstripe.url, bucket, str(tmp_path)),
    )[0]
    settings.MEDIA_ROOT = str(tmp_path)

    first, _ = enqueue_run(
        INVOICES,
        params={"process_month": MONTH, "chunk_size": 5},
        trigger=Trigger.API,
        triggered_by="reliability",
    )
    live = Invoice.objects.filter(period_start=PERIOD_START).exclude(status=InvoiceStatus.VOID)
    wait_for(lambda: live.count() >= ORGS // 3, timeout=120, what="a third of the invoices")
    at_kill = {
        "invoices": live.count(),
        "pdfs": live.exclude(pdf="").count(),
        "stripe": live.exclude(stripe_invoice_id="").count(),
        "emails": live.filter(email_id__isnull=False).count(),
    }
    kill_worker(cluster, first)
    wait_for(
        lambda: JobRun.objects.filter(pk=first.pk, heartbeat_at__lt=stale_cutoff()).exists(),
        timeout=30,
        what="the killed run's heartbeat to go stale",
    )
    second = rerun(first, actor="reliability", trigger=Trigger.ADMIN)
    wait_for(lambda: JobRun.objects.get(pk=second.pk).is_finished, timeout=240, what="the rerun")
    second.refresh_from_db()
    first.refresh_from_db()

    create_schedule(SEND, "*/2 * * * * *", first_slot=next_slot("*/2 * * * * *", after_seconds=1))
    invoice_emails = OutboundEmail.objects.filter(kind=EMAIL_KIND)
    wait_for(
        lambda: invoice_emails.filter(status=EmailStatus.SENT).count() >= ORGS,
        timeout=120,
        what="the invoice emails to be sent",
    )
    pause(SEND, actor="reliability", reason="drill over")

    per_org = Counter(live.values_list("organization_id", flat=True))
    pdf_keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]
    stripe_writes = [
        w for w in localstripe.writes() if w["path"] == "/v1/invoices" and w["method"] == "POST"
    ]
    stripe_keys = Counter(w.get("idempotency_key") for w in stripe_writes)
    listed = stripe_invoice_count(localstripe.url, "sk_test_drill_listing_0000")
    emails_per_org = Counter(invoice_emails.values_list("organization_id", flat=True))
    received = inbox.per_recipient()
    expected_to = {org.billing_email for org in orgs}
    report(
        f"drill crash_invoices: organizations {ORGS}; worker killed at {at_kill['invoices']} "
        f"invoices ({at_kill['pdfs']} PDFs, {at_kill['stripe']} Stripe, {at_kill['emails']} "
        f"emails) (run #{first.pk} -> {first.status}); rerun #{second.pk} -> {second.status}; "
        f"invoices {live.count()} (max per org {max(per_org.values())}), PDFs in S3 "
        f"{len(pdf_keys)}, Stripe invoices created {len(stripe_writes)} (listed {listed}, "
        f"max per key {max(stripe_keys.values()) if stripe_keys else 0}), emails queued "
        f"{invoice_emails.count()} (max per org {max(emails_per_org.values())}), moto received "
        f"{sum(received[to] for to in expected_to)} for {len(set(received) & expected_to)} "
        f"organizations (max per org {max(received[to] for to in expected_to)})"
    )
    assert first.status == RunStatus.FAILED and "abandoned" in first.error
    assert second.status == RunStatus.SUCCEEDED, (second.error, second.summary)
    assert len(per_org) == ORGS and set(per_org.values()) == {1}
    assert sorted(pdf_keys) == sorted(live.values_list("pdf", flat=True))
    assert len(stripe_writes) == ORGS and set(stripe_keys.values()) == {1}
    assert listed == ORGS
    assert len(live.exclude(stripe_invoice_id="").values("stripe_invoice_id").distinct()) == ORGS
    assert len(emails_per_org) == ORGS and set(emails_per_org.values()) == {1}
    assert {to: received[to] for to in expected_to} == dict.fromkeys(expected_to, 1)


def test_stripe_faults_end_the_run_partial_and_a_rerun_of_failed_items_completes_it(
    clusters, inbox, moto_url, localstripe, fault_proxy, tmp_path, settings
):
    localstripe.flush()
    localstripe.clear_requests()
    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=REGION, endpoint_url=moto_url).create_bucket(Bucket=bucket)
    orgs = billable_organizations(30)
    faulted = orgs[::3]  # 10 tenants whose Stripe account misbehaves
    for org in faulted:
        PaymentProviderConfigFactory._meta.model.objects.filter(organization=org).delete()
        PaymentProviderConfigFactory(
            organization=org, secret_key=f"sk_test_fault{uuid.uuid4().hex[:12]}abcd"
        )
    proxy = fault_proxy(
        localstripe.url,
        hang_seconds=2.5,
        match=lambda method, path, headers, body: (
            method == "POST"
            and path == "/v1/invoices"
            and "sk_test_fault" in headers.get("Authorization", "")
        ),
    )
    # 500s, 429s, and answers that come after the client gave up (Stripe did
    # the write; only the idempotency key keeps the retry from writing again).
    proxy.set_mode("mixed", cycle=("500", "429", "slow"))
    env = invoice_env(moto_url, proxy.url, bucket, str(tmp_path))
    clusters.start(1, Q_WORKERS=2, STRIPE_TIMEOUT_SECONDS=1, **env)
    settings.MEDIA_ROOT = str(tmp_path)

    first, _ = enqueue_run(
        INVOICES,
        params={"process_month": MONTH, "chunk_size": 5},
        trigger=Trigger.API,
        triggered_by="reliability",
    )
    wait_for(lambda: JobRun.objects.get(pk=first.pk).is_finished, timeout=240, what="the run")
    first.refresh_from_db()
    live = Invoice.objects.filter(period_start=PERIOD_START).exclude(status=InvoiceStatus.VOID)
    failed_keys = set(first.failures.values_list("item_key", flat=True))
    stripe_errors = first.failures.filter(error__startswith="stripe").count()
    healthy = [org for org in orgs if org not in faulted]
    healthy_done = (
        live.filter(organization__in=healthy)
        .exclude(stripe_invoice_id="")
        .exclude(pdf="")
        .filter(email_id__isnull=False)
        .count()
    )
    faults = dict(proxy.counts)

    proxy.set_mode("pass")  # the fault clears
    second = rerun(first, actor="reliability", trigger=Trigger.ADMIN, failed_items_only=True)
    wait_for(lambda: JobRun.objects.get(pk=second.pk).is_finished, timeout=240, what="rerun")
    second.refresh_from_db()

    writes = [
        w for w in localstripe.writes() if w["path"] == "/v1/invoices" and w["method"] == "POST"
    ]
    per_key = Counter(w.get("idempotency_key") for w in writes)
    replays = sum(
        1
        for r in localstripe.requests()
        if r["path"] == "/v1/invoices" and r["method"] == "POST" and r["replayed"]
    )
    per_org = Counter(live.values_list("organization_id", flat=True))
    emails = OutboundEmail.objects.filter(kind=EMAIL_KIND)
    report(
        f"drill faults_stripe: 10 of 30 tenants' Stripe invoice writes faulted ("
        f"{faults.get('500', 0)} x 500, {faults.get('429', 0)} x 429, "
        f"{faults.get('slow', 0)} x answer after the client's timeout); "
        f"run #{first.pk} {first.status} with {len(failed_keys)} failures recorded "
        f"({stripe_errors} stripe), other tenants {healthy_done}/20 complete; after the fault: "
        f"rerun of failed items #{second.pk} -> {second.status}; Stripe invoices "
        f"{len(writes)} (max per key {max(per_key.values()) if per_key else 0}, replays "
        f"{replays}), invoices {live.count()} (max per org {max(per_org.values())}), "
        f"PDFs {live.exclude(pdf='').count()}, emails queued {emails.count()}"
    )
    assert first.status == RunStatus.PARTIAL
    assert failed_keys == {org.key for org in faulted}
    assert stripe_errors == len(faulted)
    assert healthy_done == len(healthy)
    assert second.status == RunStatus.SUCCEEDED, (second.error, second.summary)
    assert len(per_org) == 30 and set(per_org.values()) == {1}
    assert len(writes) == 30 and set(per_key.values()) == {1}
    # Writes Stripe did while the client had given up were replayed, not redone.
    assert faults.get("slow", 0) > 0 and replays >= 1
    assert live.exclude(stripe_invoice_id="").count() == 30
    assert live.exclude(pdf="").count() == 30
    assert emails.count() == 30 and len(set(emails.values_list("organization_id", flat=True))) == 30

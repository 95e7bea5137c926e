"""Clean shutdown: SIGTERM to a cluster in the middle of a long fanned-out run
(what `docker stop`, systemd and Kubernetes send). Every process of the
cluster is gone within Q_SHUTDOWN_GRACE_SECONDS, the run is recorded
`interrupted` (not left `running`), and a fresh cluster continues it from its
chunks: every organization ends with one invoice, one Stripe invoice and one
queued email, none twice."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter

import boto3

from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import EMAIL_KIND
from jobs.enqueue import enqueue_run
from jobs.models import ChunkStatus, JobAction, JobChunk, JobRun, RunStatus, Trigger
from notifications.models import OutboundEmail
from reliability.conftest import REGION, alive, process_tree, report, wait_for
from reliability.test_invoices import (
    INVOICES,
    MONTH,
    PERIOD_START,
    billable_organizations,
    invoice_env,
)

ORGS = 80
GRACE = 8
STRIPE_LATENCY = 0.4  # seconds: 64 invoices left / 2 workers take ~13 s > GRACE


def test_sigterm_stops_the_cluster_within_the_grace_and_a_fresh_cluster_finishes_the_run(
    clusters, moto_url, localstripe, fault_proxy, tmp_path, settings
):
    localstripe.flush()
    localstripe.clear_requests()
    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=REGION, endpoint_url=moto_url).create_bucket(Bucket=bucket)
    billable_organizations(ORGS)
    # Each Stripe invoice answers STRIPE_LATENCY late (well inside the client's
    # timeout), so the invoices left at SIGTERM take longer than the grace on
    # any machine: the drill always meets a job still running when it is up.
    stripe = fault_proxy(
        localstripe.url,
        hang_seconds=STRIPE_LATENCY,
        match=lambda method, path, headers, body: method == "POST" and path == "/v1/invoices",
    )
    stripe.set_mode("slow")
    env = {
        **invoice_env(moto_url, stripe.url, bucket, str(tmp_path)),
        "Q_SHUTDOWN_GRACE_SECONDS": GRACE,
        "JOBS_CHUNK_LEASE_SECONDS": 600,  # a chunk left behind would stall the drill
    }
    first = clusters.start(1, Q_WORKERS=2, **env)[0]
    settings.MEDIA_ROOT = str(tmp_path)
    run, _ = enqueue_run(
        INVOICES,
        params={"process_month": MONTH, "chunk_size": 4},
        trigger=Trigger.API,
        triggered_by="reliability",
    )
    live = Invoice.objects.filter(period_start=PERIOD_START).exclude(status=InvoiceStatus.VOID)
    wait_for(lambda: live.count() >= ORGS // 5, timeout=120, what="a fifth of the invoices")
    pids = process_tree(first.process.pid)
    at_term = live.count()

    began = time.monotonic()
    os.kill(first.process.pid, signal.SIGTERM)
    wait_for(
        lambda: not process_tree(first.process.pid),
        timeout=GRACE + 20,
        interval=0.1,
        what="the cluster's processes to exit",
    )
    stopped_in = time.monotonic() - began
    left = [pid for pid in pids if alive(pid)]
    run.refresh_from_db()
    at_stop = {
        "status": run.status,
        "invoices": live.count(),
        "chunks_done": JobChunk.objects.filter(run=run, status=ChunkStatus.DONE).count(),
        "chunks": JobChunk.objects.filter(run=run).count(),
        "running_chunks": JobChunk.objects.filter(run=run, status=ChunkStatus.RUNNING).count(),
    }

    clusters.start(1, Q_WORKERS=2, **env)
    wait_for(lambda: JobRun.objects.get(pk=run.pk).is_finished, timeout=240, what="the run")
    run.refresh_from_db()
    per_org = Counter(live.values_list("organization_id", flat=True))
    writes = [
        w for w in localstripe.writes() if w["path"] == "/v1/invoices" and w["method"] == "POST"
    ]
    per_key = Counter(w.get("idempotency_key") for w in writes)
    emails = Counter(
        OutboundEmail.objects.filter(kind=EMAIL_KIND).values_list("organization_id", flat=True)
    )
    actions = list(JobAction.objects.filter(run=run).values_list("action", flat=True))
    report(
        f"drill graceful_shutdown: SIGTERM with {at_term} of {ORGS} invoices done; "
        f"{len(pids)} processes gone in {stopped_in:.1f} s (grace {GRACE} s); run #{run.pk} "
        f"-> {at_stop['status']} ({at_stop['chunks_done']}/{at_stop['chunks']} chunks done, "
        f"{at_stop['running_chunks']} left running, {at_stop['invoices']} invoices); fresh "
        f"cluster -> {run.status} after {run.attempts} attempts; invoices {len(per_org)} "
        f"(max per org {max(per_org.values())}), Stripe invoices {len(writes)} (max per key "
        f"{max(per_key.values()) if per_key else 0}), emails {sum(emails.values())} (max per "
        f"org {max(emails.values())}); actions {', '.join(actions)}"
    )
    assert not left, f"still alive after the stop: {left}"
    assert stopped_in <= GRACE + 1  # + the drill's own polling
    assert at_stop["status"] == RunStatus.INTERRUPTED
    assert at_stop["running_chunks"] == 0  # released, not left to their lease
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.summary)
    assert run.attempts == 2
    assert "interrupted" in actions
    assert len(per_org) == ORGS and set(per_org.values()) == {1}
    assert len(writes) == ORGS and set(per_key.values()) == {1}
    assert len(emails) == ORGS and set(emails.values()) == {1}

"""Accepted work is never lost when a part restarts.

* `broker_restart`: 20 runs enqueued through the API, then the broker (a
  private redis-server without persistence, as .ci/run starts one) restarts
  before any cluster took them. A cluster started afterwards finds them
  `queued` with no task anywhere: the platform sends them again after
  JOBS_QUEUED_LOST_AFTER_SECONDS, once each, and all 20 run once.
* `database_restart`: a private PostgreSQL restarts (fast shutdown: every
  connection cut) while a fanned-out invoice run works; the run ends failed
  or continues, a rerun finishes it, nothing is billed twice, and the same
  cluster, never restarted, goes on serving new runs.

Both use servers of their own on free ports, never the shared ones.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import boto3
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django_q.conf import Conf

from billing.models import Invoice, InvoiceStatus
from billing.services.invoices import EMAIL_KIND
from jobs.enqueue import enqueue_run, rerun
from jobs.models import JobAction, JobRun, RunStatus, Trigger
from jobs.runner import stale_cutoff
from notifications.models import OutboundEmail
from reliability.conftest import (
    REGION,
    PrivatePostgres,
    PrivateRedis,
    on_database,
    report,
    wait_for,
)
from reliability.test_invoices import INVOICES, MONTH, PERIOD_START, billable_organizations
from reliability.test_invoices import invoice_env as invoices_env
from tests.factories import OrganizationFactory

SEND = "notifications.send_pending"
RUNS = 20
LOST_AFTER = 4


def api_post(client: Client, job: str, body: dict) -> tuple[int, dict]:
    """POST a run through the JSON API, authenticated as the API documents."""
    response = client.post(
        f"/api/jobs/{job}/runs",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {settings.JOBS_API_TOKEN}",
    )
    return response.status_code, response.json()


@pytest.fixture
def private_redis():
    redis = PrivateRedis().start()
    yield redis
    redis.stop()


def test_runs_enqueued_before_a_broker_restart_all_run_once(clusters, private_redis, monkeypatch):
    monkeypatch.setattr(Conf, "REDIS", private_redis.url)  # this process enqueues there too
    orgs = [OrganizationFactory(key=f"broker-{i:02d}") for i in range(RUNS)]
    client = Client()
    accepted = []
    for i, org in enumerate(orgs):
        status, body = api_post(
            client, SEND, {"tenant": org.key, "idempotency_key": f"broker-drill-{i}"}
        )
        assert status == 202, body
        accepted.append(body["run_id"])
    from django_q.brokers import get_broker

    in_broker = get_broker().queue_size()
    private_redis.restart()  # no persistence: every task is gone
    after_restart = get_broker().queue_size()

    clusters.start(
        1, Q_WORKERS=2, REDIS_URL=private_redis.url, JOBS_QUEUED_LOST_AFTER_SECONDS=LOST_AFTER
    )
    runs = JobRun.objects.filter(pk__in=accepted)
    wait_for(
        lambda: runs.filter(status=RunStatus.SUCCEEDED).count() == RUNS,
        timeout=90,
        what="all 20 runs to succeed",
    )
    status, replay = api_post(
        client, SEND, {"tenant": orgs[0].key, "idempotency_key": "broker-drill-0"}
    )
    requeued = Counter(
        JobAction.objects.filter(run__in=runs, action="re-enqueued").values_list("run", flat=True)
    )
    attempts = Counter(runs.values_list("attempts", flat=True))
    report(
        f"drill broker_restart: {RUNS} runs accepted through the API (202, {in_broker} tasks in "
        f"Redis), Redis restarted without persistence ({after_restart} tasks left); a cluster "
        f"started after it: succeeded {runs.filter(status=RunStatus.SUCCEEDED).count()}/{RUNS}, "
        f"attempts {dict(attempts)}, re-enqueued {sum(requeued.values())} (max per run "
        f"{max(requeued.values(), default=0)}) after {LOST_AFTER} s; retried idempotency key -> "
        f"{status} {replay.get('status')}"
    )
    assert in_broker == RUNS and after_restart == 0
    assert attempts == {1: RUNS}  # each ran once
    assert set(requeued) == set(accepted) and set(requeued.values()) == {1}
    assert status == 200 and replay["run_id"] == accepted[0] and replay["status"] == "succeeded"


@pytest.fixture
def private_postgres():
    server = PrivatePostgres().start()
    try:
        with on_database(server.url):
            yield server
    finally:
        server.stop()


ORGS = 24


def test_a_database_restart_mid_run_loses_nothing_and_the_cluster_keeps_serving(
    clusters, private_postgres, moto_url, localstripe, tmp_path, settings
):
    localstripe.flush()
    localstripe.clear_requests()
    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=REGION, endpoint_url=moto_url).create_bucket(Bucket=bucket)
    billable_organizations(ORGS)
    env = {
        **invoices_env(moto_url, localstripe.url, bucket, str(tmp_path)),
        "DATABASE_URL": private_postgres.url,
        "JOBS_CHUNK_LEASE_SECONDS": 10,
    }
    cluster = clusters.start(1, Q_WORKERS=2, **env)[0]
    settings.MEDIA_ROOT = str(tmp_path)
    first, _ = enqueue_run(
        INVOICES,
        params={"process_month": MONTH, "chunk_size": 2},
        trigger=Trigger.API,
        triggered_by="reliability",
    )
    live = Invoice.objects.filter(period_start=PERIOD_START).exclude(status=InvoiceStatus.VOID)
    wait_for(lambda: live.count() >= ORGS // 4, timeout=120, what="a quarter of the invoices")
    at_restart = live.count()
    private_postgres.restart()
    connection.close()  # this process's own connection was cut too

    def settled() -> bool:
        run = JobRun.objects.get(pk=first.pk)
        return run.is_finished or (
            run.status == RunStatus.RUNNING and run.heartbeat_at < stale_cutoff()
        )

    wait_for(settled, timeout=120, interval=0.5, what="the first run to end or go stale")
    first.refresh_from_db()
    outcome = first.status
    finisher = first
    if first.status != RunStatus.SUCCEEDED:
        finisher = rerun(first, actor="reliability", trigger=Trigger.ADMIN)
        wait_for(lambda: JobRun.objects.get(pk=finisher.pk).is_finished, timeout=180, what="rerun")
        finisher.refresh_from_db()
    first.refresh_from_db()
    after, _ = enqueue_run(SEND, trigger=Trigger.API, triggered_by="reliability")
    wait_for(lambda: JobRun.objects.get(pk=after.pk).is_finished, timeout=60, what="a new run")
    after.refresh_from_db()

    per_org = Counter(live.values_list("organization_id", flat=True))
    writes = [
        w for w in localstripe.writes() if w["path"] == "/v1/invoices" and w["method"] == "POST"
    ]
    per_key = Counter(w.get("idempotency_key") for w in writes)
    emails = Counter(
        OutboundEmail.objects.filter(kind=EMAIL_KIND).values_list("organization_id", flat=True)
    )
    report(
        f"drill database_restart: PostgreSQL (private, port {private_postgres.port}) restarted "
        f"with {at_restart} of {ORGS} invoices done; run #{first.pk} -> {outcome}"
        f"{'' if finisher is first else f', rerun #{finisher.pk} -> {finisher.status}'}; "
        f"invoices {len(per_org)} (max per org {max(per_org.values())}), Stripe invoices "
        f"{len(writes)} (max per key {max(per_key.values()) if per_key else 0}), emails "
        f"{sum(emails.values())} (max per org {max(emails.values())}); the same cluster "
        f"(pid {cluster.process.pid}, alive {cluster.process.poll() is None}) then ran a new "
        f"run -> {after.status}"
    )
    assert finisher.status == RunStatus.SUCCEEDED, (finisher.error, finisher.summary)
    assert len(per_org) == ORGS and set(per_org.values()) == {1}
    assert len(writes) == ORGS and set(per_key.values()) == {1}
    assert len(emails) == ORGS and set(emails.values()) == {1}
    assert cluster.process.poll() is None
    assert after.status == RunStatus.SUCCEEDED, after.error

"""Faults outside: SES answering 500s, 429s and timeouts for a while.

A fault proxy sits between the clusters and the moto server and faults the
requests for half of the organizations (their recipients), in turn 500,
429 and a hang past the client's timeout (the request never reaches SES).
"""

from __future__ import annotations

from django.db.models import Count

from jobs.enqueue import rerun
from jobs.models import JobItemFailure, JobRun, RunStatus, Trigger
from jobs.schedules import pause
from notifications.models import EmailStatus, OutboundEmail
from notifications.services import EmailDraft, queue_bulk
from reliability.conftest import create_schedule, next_slot, report, ses_env, wait_for
from subscriptions.models import Organization

SEND = "notifications.send_pending"
ATTEMPTS = 3


def organizations(prefix: str, n: int) -> list[Organization]:
    return Organization.objects.bulk_create(
        Organization(
            key=f"{prefix}-{i:03d}", name=f"{prefix} {i}", billing_email=f"b@{prefix}-{i}.example"
        )
        for i in range(n)
    )


def test_ses_faults_end_runs_partial_and_a_rerun_of_failed_items_sends_the_rest(
    clusters, inbox, moto_url, fault_proxy
):
    faulted = organizations("fault", 20)
    healthy = organizations("ok", 20)
    queue_bulk(
        emails=[
            EmailDraft(
                to=org.billing_email,
                kind="reliability.fault",
                dedupe_key=f"reliability:fault:{org.key}",
                subject=f"Drill for {org.name}",
                body_text="Sent once, whatever SES answers meanwhile.",
                organization_id=org.pk,
            )
            for org in [*faulted, *healthy]
        ]
    )
    proxy = fault_proxy(
        moto_url, hang_seconds=2.5, match=lambda method, path, headers, body: b"fault-" in body
    )
    proxy.set_mode("mixed")
    clusters.start(
        1,
        **ses_env(
            proxy.url,
            AWS_SES_RATE_LIMIT_PER_SECOND=50,
            EMAIL_SEND_TIMEOUT_SECONDS=1,
            EMAIL_MAX_ATTEMPTS=ATTEMPTS,
            EMAIL_RETRY_BASE_SECONDS=1,
            EMAIL_RETRY_MAX_SECONDS=2,
            EMAIL_SEND_WORKERS=4,
        ),
    )
    create_schedule(SEND, "*/2 * * * * *", first_slot=next_slot("*/2 * * * * *", after_seconds=1))
    faulted_rows = OutboundEmail.objects.filter(organization__in=faulted)
    healthy_rows = OutboundEmail.objects.filter(organization__in=healthy)
    wait_for(
        lambda: faulted_rows.filter(status=EmailStatus.FAILED).count() == len(faulted),
        timeout=120,
        what="the faulted emails to give up",
    )
    healthy_sent = healthy_rows.filter(status=EmailStatus.SENT).count()
    received_during = len(inbox.messages)
    pause(SEND, actor="reliability", reason="fault drill: rerun failed items by hand")
    wait_for(
        lambda: not JobRun.objects.filter(job=SEND, status__in=["queued", "running"]).exists(),
        timeout=30,
        what="the scheduled runs to end",
    )
    partial = list(JobRun.objects.filter(job=SEND, status=RunStatus.PARTIAL).order_by("pk"))
    failures = JobItemFailure.objects.filter(run__in=partial)
    failed_keys = set(failures.values_list("item_key", flat=True))
    attempts = set(faulted_rows.values_list("attempts", flat=True))
    faults = dict(proxy.counts)

    proxy.set_mode("pass")  # the fault clears
    reruns = []
    for run in partial:
        again = rerun(run, actor="reliability", trigger=Trigger.ADMIN, failed_items_only=True)
        wait_for(
            lambda pk=again.pk: JobRun.objects.get(pk=pk).is_finished,
            timeout=60,
            what=f"the rerun of run #{run.pk}'s failed items",
        )
        reruns.append(JobRun.objects.get(pk=again.pk))

    per_recipient = inbox.per_recipient()
    expected = {org.billing_email for org in [*faulted, *healthy]}
    duplicates = sum(n - 1 for n in per_recipient.values() if n > 1)
    missing = expected - set(per_recipient)
    statuses = dict(OutboundEmail.objects.values_list("status").annotate(n=Count("id")).order_by())
    report(
        f"drill faults_ses: 20 of 40 organizations' sends faulted ("
        f"{faults.get('500', 0)} x 500, {faults.get('429', 0)} x 429, "
        f"{faults.get('timeout', 0)} x timeout); during the fault: other tenants sent "
        f"{healthy_sent}/20, faulted gave up after {ATTEMPTS} attempts 20/20, "
        f"runs partial {len(partial)} with {len(failed_keys)} item failures recorded; after: "
        f"{len(reruns)} reruns of failed items -> "
        f"{', '.join(sorted({r.status for r in reruns}))}, sent "
        f"{sum(r.summary.get('sent', 0) for r in reruns)}; moto received "
        f"{len(inbox.messages)}, duplicates {duplicates}, missing {len(missing)}, "
        f"outbox {statuses}"
    )
    assert healthy_sent == len(healthy)
    assert received_during == len(healthy)
    assert attempts == {ATTEMPTS}
    assert partial and failed_keys == {
        f"email:{pk}" for pk in faulted_rows.values_list("pk", flat=True)
    }
    assert {r.status for r in reruns} == {RunStatus.SUCCEEDED}
    assert statuses == {EmailStatus.SENT: 40}
    assert not missing and duplicates == 0
    assert proxy.counts["forwarded"] == 40  # every send that reached SES was a new email

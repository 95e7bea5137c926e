"""Crash mid-run: `kill -9` the worker of a half-done run, then let the
platform recover (the next slot, or a rerun) and count what happened.

The crashed clusters run one worker each, so the worker to kill is the one.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from audit.models import AuditTrail
from jobs.enqueue import enqueue_run, rerun
from jobs.models import JobRun, RunStatus, Trigger
from jobs.runner import stale_cutoff
from jobs.schedules import pause
from notifications.models import EmailStatus, OutboundEmail
from notifications.services import EmailDraft, queue_bulk
from reliability.conftest import create_schedule, next_slot, report, ses_env, wait_for
from subscriptions.models import Organization

SEND = "notifications.send_pending"
PURGE = "maintenance.purge_audit_trail"


def kill_worker(cluster, run: JobRun) -> int:
    """SIGKILL the cluster's worker while `run` is running; its pid."""
    pids = cluster.worker_pids()
    assert len(pids) == 1, f"expected one live worker, found {pids}"
    assert JobRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def running(job: str) -> JobRun | None:
    return JobRun.objects.filter(job=job, status=RunStatus.RUNNING).first()


def test_email_sender_killed_mid_batch_sends_every_email_once(clusters, inbox, moto_url):
    organizations = Organization.objects.bulk_create(
        Organization(key=f"crash-{i:03d}", name=f"Crash {i}", billing_email=f"billing@c{i}.example")
        for i in range(120)
    )
    queue_bulk(
        emails=[
            EmailDraft(
                to=org.billing_email,
                kind="reliability.crash",
                dedupe_key=f"reliability:crash:{org.key}",
                subject=f"Drill for {org.name}",
                body_text="One email per organization, whatever happens to the sender.",
                organization_id=org.pk,
            )
            for org in organizations
        ]
    )
    cluster = clusters.start(
        1,
        Q_WORKERS=1,
        **ses_env(
            moto_url,
            AWS_SES_RATE_LIMIT_PER_SECOND=20,
            EMAIL_BATCH_SIZE=10,
            EMAIL_LEASE_SECONDS=8,
            EMAIL_RETRY_BASE_SECONDS=1,
        ),
    )[0]
    create_schedule(SEND, "*/2 * * * * *", first_slot=next_slot("*/2 * * * * *", after_seconds=1))

    wait_for(lambda: len(inbox.messages) >= 35, timeout=60, what="35 emails sent")
    victim = wait_for(lambda: running(SEND), timeout=10, what="the sending run")
    sent_before = len(inbox.messages)
    kill_worker(cluster, victim)

    wait_for(
        lambda: OutboundEmail.objects.filter(status=EmailStatus.SENT).count() == 120,
        timeout=90,
        what="every email sent",
    )
    pause(SEND, actor="reliability", reason="drill over")
    wait_for(
        lambda: running(SEND) is None and not JobRun.objects.filter(job=SEND, status="queued"),
        timeout=30,
        what="the last run to end",
    )
    victim.refresh_from_db()
    per_recipient = inbox.per_recipient()
    expected = {org.billing_email for org in organizations}
    duplicates = sum(n - 1 for n in per_recipient.values() if n > 1)
    missing = expected - set(per_recipient)
    resent = sum(
        run.summary.get("resent_in_flight", 0)
        for run in JobRun.objects.filter(job=SEND).exclude(summary={})
    )
    statuses = Counter(OutboundEmail.objects.values_list("status", flat=True))
    report(
        f"drill crash_email_sender: emails 120 to 120 organizations; worker killed after "
        f"{sent_before} sent (run #{victim.pk} -> {victim.status}); after recovery: "
        f"sent {statuses[EmailStatus.SENT]}, moto received {len(inbox.messages)}, "
        f"recipients {len(per_recipient)}, duplicates {duplicates}, missing {len(missing)} "
        f"(in-flight resends flagged {resent})"
    )
    assert victim.status == RunStatus.FAILED and "abandoned" in victim.error
    assert statuses == {EmailStatus.SENT: 120}
    assert not missing
    assert set(per_recipient) == expected
    # The one email a killed sender may have had at SES when it died is sent
    # again, flagged (at least once, never lost); any other duplicate is a bug.
    assert duplicates <= resent <= 1


def seed_audit_trail(*, rows: int, young_every: int) -> tuple[int, int]:
    """`rows` audit records, every `young_every`-th inside the retention and
    the others past it, interleaved in id order; returns (old, young)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {AuditTrail._meta.db_table}
                (at, actor, tenant, action, object_type, object_id, object_ids, changes,
                 job_run_id, request_id)
            SELECT CASE WHEN g %% %s = 0 THEN now() - interval '1 day'
                        ELSE now() - interval '400 days' + g * interval '1 second' END,
                   'reliability', '', 'drill.changed', 'drill', g::text, '[]', '{{}}',
                   NULL, ''
            FROM generate_series(1, %s) AS g""",
            [young_every, rows],
        )
    young = rows // young_every
    return rows - young, young


def test_audit_purge_killed_mid_run_resumes_and_purges_each_row_once(clusters, settings):
    old, young = seed_audit_trail(rows=150_000, young_every=10)
    retention = timezone.now() - timezone.timedelta(days=settings.AUDIT_RETENTION_DAYS)
    cluster = clusters.start(1, Q_WORKERS=1)[0]
    first, _ = enqueue_run(
        PURGE,
        params={"batch_size": 3000, "batch_delay_ms": 40},
        trigger=Trigger.API,
        triggered_by="reliability",
    )
    wait_for(
        lambda: (JobRun.objects.get(pk=first.pk).checkpoint or {}).get("deleted", 0) >= old // 4,
        timeout=60,
        what="a quarter of the purge",
    )
    kill_worker(cluster, first)
    first.refresh_from_db()
    at_kill = dict(first.checkpoint)
    wait_for(
        lambda: JobRun.objects.filter(pk=first.pk, heartbeat_at__lt=stale_cutoff()).exists(),
        timeout=30,
        what="the killed run's heartbeat to go stale",
    )
    first.refresh_from_db()
    checkpointed = first.checkpoint["deleted"]  # what the killed run committed
    second = rerun(first, actor="reliability", trigger=Trigger.ADMIN)
    wait_for(lambda: JobRun.objects.get(pk=second.pk).is_finished, timeout=90, what="the rerun")
    first.refresh_from_db()
    second.refresh_from_db()

    seeded = AuditTrail.objects.filter(action="drill.changed")  # not the drill's own records
    old_left = seeded.filter(at__lt=retention).count()
    young_left = seeded.filter(at__gte=retention).count()
    counted = checkpointed + second.summary.get("deleted", 0)
    report(
        f"drill crash_audit_purge: rows {old + young} (old {old}, young {young}, "
        f"interleaved); worker killed at {at_kill['deleted']} deleted (run #{first.pk} -> "
        f"{first.status}); rerun #{second.pk} resumed from id "
        f"{second.summary.get('resumed_from_id')} and deleted {second.summary.get('deleted')}; "
        f"old left {old_left}, young left "
        f"{young_left}/{young}, deleted counted {counted} of {old} (each old row purged once)"
    )
    assert first.status == RunStatus.FAILED and "abandoned" in first.error
    assert second.status == RunStatus.SUCCEEDED, second.error
    assert second.summary["resumed_from_id"] == first.checkpoint["next_id"]
    assert old_left == 0
    assert young_left == young
    assert counted == old
    assert JobRun.objects.filter(job=PURGE).aggregate(n=Sum("attempts"))["n"] == 2

"""subscriptions.expire on 1,000,000 subscriptions, about half of them due.

Three timings on the same seeded state (reseeded before every timed phase;
raw and project alternate BENCH_ROUNDS times and their medians are compared):
* project: the job through jobs.runner.run_job (force=true), so the platform's
  JobRun bookkeeping counts, with its audit rows and digest emails;
* raw_sql: one UPDATE ... WHERE doing the same transitions, nothing else;
* naive_loop_scaled: a per-row ORM loop (save, audit row, rendered email per
  subscription) on a 20,000-row sample, scaled to the full set.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction

from bench.common import Result, log, seed_organizations, settle, table_names, timed

SUBSCRIPTIONS = int(os.environ.get("BENCH_SUBSCRIPTIONS", 1_000_000))
ORGANIZATIONS = int(os.environ.get("BENCH_ORGANIZATIONS", 10_000))
NAIVE_SAMPLE = int(os.environ.get("BENCH_NAIVE_SAMPLE", 20_000))
# Raw and project alternate this many times on freshly seeded data; the
# medians are compared (one pair of runs varies by a second on a shared VM).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
SLOT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
GRACE_DAYS = 7


def seed() -> None:
    """Set-based seed. Of every 100 subscriptions: 45 running and due (5
    trialing, 35 active, 5 past_due), 5 expired past grace, 5 expired in grace,
    40 running not due, 3 suspended, 2 canceled."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['sub']}, {t['audit']}, {t['outbox']}, {t['org']}, {t['plan']} "
            "RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = 'subscriptions.expire'")
        c.execute(
            f"""INSERT INTO {t["plan"]} (name, price_minor, currency, interval) VALUES
            ('Starter', 900, 'EUR', 'month'), ('Pro', 2900, 'EUR', 'month'),
            ('Team', 9900, 'USD', 'month'), ('Pro yearly', 29000, 'EUR', 'year'),
            ('Enterprise', 990000, 'USD', 'year')"""
        )
        seed_organizations(c, count=ORGANIZATIONS, created_at=SLOT)
        c.execute(
            f"""INSERT INTO {t["sub"]} (organization_id, plan_id, status, current_period_start,
                current_period_end, auto_renew, canceled_at, expired_at, suspended_at,
                created_at, updated_at)
            SELECT org, plan, status, period_end - interval '30 days', period_end,
                   status IN ('trialing', 'active', 'past_due') AND b %% 7 <> 0,
                   CASE WHEN status = 'canceled' THEN %(slot)s - interval '3 days' END,
                   CASE WHEN status IN ('expired', 'suspended') THEN expired_at END,
                   CASE WHEN status = 'suspended' THEN expired_at + interval '7 days' END,
                   %(slot)s - interval '400 days', %(slot)s - interval '1 day'
            FROM (
                SELECT g, b,
                       1 + ((g / 37) * 7919) %% %(orgs)s AS org,
                       1 + g %% 5 AS plan,
                       CASE WHEN b < 5 THEN 'trialing' WHEN b < 40 THEN 'active'
                            WHEN b < 45 THEN 'past_due' WHEN b < 55 THEN 'expired'
                            WHEN b < 75 THEN 'active' WHEN b < 85 THEN 'trialing'
                            WHEN b < 95 THEN 'past_due' WHEN b < 98 THEN 'suspended'
                            ELSE 'canceled' END AS status,
                       CASE WHEN b < 45 THEN %(slot)s - (g %% 2592000) * interval '1 second'
                            WHEN b < 55 THEN %(slot)s - interval '40 days'
                            WHEN b < 95 THEN %(slot)s + (1 + g %% 2592000) * interval '1 second'
                            ELSE %(slot)s - interval '60 days' END AS period_end,
                       CASE WHEN b < 50 THEN %(slot)s - interval '8 days'
                                             - (g %% 1900800) * interval '1 second'
                            WHEN b < 55 THEN %(slot)s - (g %% 518400) * interval '1 second'
                            ELSE %(slot)s - interval '50 days' END AS expired_at
                FROM (SELECT g, g %% 100 AS b FROM generate_series(1, %(n)s) g) s
            ) x
            ORDER BY g""",
            {"slot": SLOT, "orgs": ORGANIZATIONS, "n": SUBSCRIPTIONS},
        )
    settle(t["sub"], t["org"], t["plan"], t["audit"], t["outbox"], "jobs_jobrun")


def expected_transitions() -> tuple[int, int]:
    from subscriptions.models import Subscription
    from subscriptions.selectors import due_for_expiry, due_for_suspension

    cutoff = SLOT - timedelta(days=GRACE_DAYS)
    return (
        Subscription.objects.filter(due_for_expiry(slot=SLOT)).count(),
        Subscription.objects.filter(due_for_suspension(grace_cutoff=cutoff)).count(),
    )


def raw_update() -> int:
    """The floor: one UPDATE doing both transitions, no audit, no email."""
    t = table_names()
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            f"""UPDATE {t["sub"]} SET
                status = CASE WHEN status = 'expired' THEN 'suspended' ELSE 'expired' END,
                auto_renew = CASE WHEN status = 'expired' THEN auto_renew ELSE false END,
                expired_at = CASE WHEN status = 'expired' THEN expired_at ELSE %(slot)s END,
                suspended_at = CASE WHEN status = 'expired' THEN %(slot)s ELSE suspended_at END,
                updated_at = now()
            WHERE (status IN ('trialing', 'active', 'past_due') AND current_period_end <= %(slot)s)
               OR (status = 'expired' AND expired_at <= %(cutoff)s)""",
            {"slot": SLOT, "cutoff": SLOT - timedelta(days=GRACE_DAYS)},
        )
        return c.rowcount


def audited_subscriptions(run_id: int) -> int:
    """Subscriptions the run's audit records list: every change is on record."""
    with connection.cursor() as c:
        c.execute(
            "SELECT coalesce(sum(jsonb_array_length(object_ids)), 0) "
            f"FROM {table_names()['audit']} WHERE job_run_id = %s",
            [run_id],
        )
        return c.fetchone()[0]


def project_job():
    from jobs.runner import run_job

    run = run_job("subscriptions.expire", params={"force": True}, slot=SLOT)
    if run.status != "succeeded":
        raise SystemExit(f"bench: the job did not succeed: {run.status} {run.error}")
    return run


def naive_loop(sample: int) -> int:
    """What a hand-written job tends to be: load, change, save, audit, email, per row."""
    from django.db.models import Q

    from audit.models import AuditTrail
    from notifications.models import OutboundEmail
    from notifications.services import render_email
    from subscriptions.models import RUNNING_STATUSES, Subscription

    cutoff = SLOT - timedelta(days=GRACE_DAYS)
    due = Q(status__in=RUNNING_STATUSES, current_period_end__lte=SLOT) | Q(
        status="expired", expired_at__lte=cutoff
    )
    done = 0
    with transaction.atomic():
        for sub in Subscription.objects.filter(due).select_related("organization")[:sample]:
            before = {"status": sub.status, "auto_renew": sub.auto_renew}
            if sub.status == "expired":
                sub.status, sub.suspended_at = "suspended", SLOT
            else:
                sub.status, sub.auto_renew, sub.expired_at = "expired", False, SLOT
            sub.save()
            AuditTrail.objects.create(
                actor="job:naive",
                tenant=sub.organization.key,
                action=f"subscription.{sub.status}",
                object_type="subscriptions.subscription",
                object_id=str(sub.pk),
                changes={"before": before, "after": {"status": sub.status}},
            )
            rendered = render_email(
                template=f"subscriptions_{sub.status}",
                context={
                    "organization_name": sub.organization.name,
                    "count": 1,
                    "slot": f"{SLOT:%Y-%m-%d %H:%M}",
                    "grace_days": GRACE_DAYS,
                    "suspend_after": "",
                    "subscription_ids": f"#{sub.pk}",
                    "more": 0,
                },
            )
            OutboundEmail.objects.create(
                organization=sub.organization,
                to=sub.organization.billing_email,
                kind=f"subscriptions.{sub.status}",
                dedupe_key=f"naive:{sub.pk}:{sub.status}",
                subject=rendered.subject,
                body_text=rendered.body_text,
                body_html=rendered.body_html,
            )
            done += 1
    return done


def run() -> Result:
    times: dict[str, float] = {}
    log(f"expire_subscriptions: seeding {SUBSCRIPTIONS:,} subscriptions, {ORGANIZATIONS:,} orgs")
    started = time.perf_counter()
    seed()
    log(f"seeded in {time.perf_counter() - started:.1f} s")
    to_expire, to_suspend = expected_transitions()
    total = to_expire + to_suspend
    log(f"due: {to_expire:,} to expire, {to_suspend:,} to suspend")

    with timed("naive_loop_sample", times):
        sampled = naive_loop(NAIVE_SAMPLE)
    naive_scaled = times["naive_loop_sample"] * total / sampled

    raw_times, project_times = [], []
    for round_no in range(1, ROUNDS + 1):
        seed()
        with timed(f"raw_sql round {round_no}", times):
            changed_raw = raw_update()
        assert changed_raw == total, (changed_raw, total)
        raw_times.append(times[f"raw_sql round {round_no}"])

        seed()
        with timed(f"project round {round_no}", times):
            job_run = project_job()
        project_times.append(times[f"project round {round_no}"])
        summary = job_run.summary
        changed = summary["expired"] + summary["suspended"]
        assert changed == total, (summary, total)
        audited = audited_subscriptions(job_run.pk)
        assert audited == total, (audited, total)
    log(f"job phases: {summary.get('seconds')}")

    return Result(
        project=statistics.median(project_times),
        baseline_name="raw_sql",
        baseline=statistics.median(raw_times),
        extras={
            "naive_loop_scaled": f"{naive_scaled:.1f} s",
            "changed": f"{changed:,}",
            "audit_records": f"{summary['audit_records']:,}",
            "audited": f"{audited:,}",
            "emails": f"{summary['emails_queued']:,}",
        },
    )

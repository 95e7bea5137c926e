"""subscriptions.send_renewal_reminders queueing 100,000 reminder emails.

Seeds 10,000 organizations and 150,000 subscriptions, of which 100,000 end
within the 7-day window, then times, alternating BENCH_ROUNDS times on an
emptied outbox (medians compared):
* project: the job through jobs.runner.run_job (templates rendered once by
  Django, per-row values filled in by one INSERT ... SELECT, dedupe keys,
  ON CONFLICT DO NOTHING);
* raw_insert_select: one hand-written INSERT ... SELECT building the same
  subject and bodies by string concatenation, nothing else.
"""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime

from django.db import connection, transaction

from bench.common import Result, log, seed_organizations, settle, table_names, timed

REMINDERS = int(os.environ.get("BENCH_REMINDERS", 100_000))
ORGANIZATIONS = int(os.environ.get("BENCH_ORGANIZATIONS", 10_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
SLOT = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def seed() -> None:
    """Two of every three subscriptions are active and end within 7 days of the slot."""
    t = table_names()
    total = REMINDERS * 3 // 2
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['sub']}, {t['outbox']}, {t['org']}, {t['plan']} RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = 'subscriptions.send_renewal_reminders'")
        c.execute(
            f"""INSERT INTO {t["plan"]} (name, price_minor, currency, interval) VALUES
            ('Starter', 900, 'EUR', 'month'), ('Pro', 2900, 'EUR', 'month')"""
        )
        seed_organizations(c, count=ORGANIZATIONS, created_at=SLOT)
        c.execute(
            f"""INSERT INTO {t["sub"]} (organization_id, plan_id, status, current_period_start,
                current_period_end, auto_renew, created_at, updated_at)
            SELECT 1 + g %% %(orgs)s, 1 + g %% 2, 'active', period_end - interval '30 days',
                   period_end, g %% 5 <> 0, %(slot)s, %(slot)s
            FROM (SELECT g, CASE WHEN g %% 3 <> 0
                    THEN %(slot)s + (1 + g %% 604000) * interval '1 second'
                    ELSE %(slot)s + interval '20 days' END AS period_end
                  FROM generate_series(1, %(n)s) g) s""",
            {"slot": SLOT, "orgs": ORGANIZATIONS, "n": total},
        )
    settle(t["sub"], t["org"], t["plan"], t["outbox"])


def empty_outbox() -> None:
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {table_names()['outbox']} RESTART IDENTITY CASCADE")
    settle(table_names()["outbox"])


def raw_insert_select() -> int:
    t = table_names()
    with transaction.atomic(), connection.cursor() as c:
        c.execute(
            f"""INSERT INTO {t["outbox"]} (organization_id, "to", subject, body_text, body_html,
                kind, dedupe_key, status, attempts, next_attempt_at, provider_message_id,
                last_error, created_at, claimed_by)
            SELECT s.organization_id, o.billing_email,
                'Your ' || p.name || ' subscription renews on '
                    || to_char(s.current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                'Hello ' || o.name || E',\\n\\nYour ' || p.name
                    || ' subscription ends its current period on '
                    || to_char(s.current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
                    || ' UTC. It renews automatically; make sure your payment details are '
                    || E'up to date.\\n',
                '<p>Hello ' || o.name || ',</p><p>Your ' || p.name
                    || ' subscription ends its current period on <strong>'
                    || to_char(s.current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
                    || ' UTC</strong>. It renews automatically; make sure your payment '
                    || 'details are up to date.</p>',
                'subscriptions.renewal_reminder',
                'subscriptions.renewal_reminder:sub' || s.id || ':'
                    || to_char(s.current_period_end AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS'),
                'queued', 0, now(), '', '', now(), ''
            FROM {t["sub"]} s JOIN {t["org"]} o ON o.id = s.organization_id
                JOIN {t["plan"]} p ON p.id = s.plan_id
            WHERE s.status IN ('trialing', 'active') AND s.current_period_end > %(slot)s
              AND s.current_period_end <= %(slot)s + interval '7 days'
            ON CONFLICT (dedupe_key) DO NOTHING""",
            {"slot": SLOT},
        )
        return c.rowcount


def project_job() -> int:
    from jobs.runner import run_job

    run = run_job("subscriptions.send_renewal_reminders", slot=SLOT)
    if run.status != "succeeded":
        raise SystemExit(f"bench: the job did not succeed: {run.status} {run.error}")
    with connection.cursor() as c:
        c.execute("DELETE FROM jobs_jobrun WHERE id = %s", [run.pk])
    return run.summary["renewal_reminders_queued"]


def run() -> Result:
    log(f"seeding {REMINDERS * 3 // 2:,} subscriptions ({REMINDERS:,} due a reminder)")
    seed()
    raw_times, project_times = [], []
    for round_ in range(ROUNDS):
        timings: dict[str, float] = {}
        empty_outbox()
        with timed(f"round {round_ + 1} raw_insert_select", timings):
            raw_rows = raw_insert_select()
        empty_outbox()
        with timed(f"round {round_ + 1} project", timings):
            project_rows = project_job()
        if raw_rows != REMINDERS or project_rows != REMINDERS:
            raise SystemExit(
                f"bench: expected {REMINDERS} rows, raw {raw_rows}, job {project_rows}"
            )
        raw_times.append(timings[f"round {round_ + 1} raw_insert_select"])
        project_times.append(timings[f"round {round_ + 1} project"])
    # A second run of the same slot queues nothing: deduped.
    timings = {}
    with timed("rerun (deduped)", timings):
        again = project_job()
    if again:
        raise SystemExit(f"bench: a rerun queued {again} more emails")
    return Result(
        project=statistics.median(project_times),
        baseline_name="raw_insert_select",
        baseline=statistics.median(raw_times),
        extras={"emails": f"{REMINDERS:,}", "rerun_s": f"{timings['rerun (deduped)']:.2f}"},
    )

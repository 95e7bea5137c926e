"""payments.reconcile: 5,000 open payments across 50 tenants, against localstripe.

Starts tests.fakes.fake_stripe (localstripe) on a free loopback port, creates the
PaymentIntents there through the SDK (70% succeeded, 20% declined, 10% still
awaiting confirmation), and seeds the local side: a Stripe config per tenant
pointing at it, one payment per intent opened an hour ago, half of them
paying for a past_due subscription. Then, alternating BENCH_ROUNDS times on a
reset local state (the Stripe side does not change):

* project: the job through jobs.runner.run_job at PAYMENTS_RECONCILE_CONCURRENCY,
  so limiter, breaker, JobRun bookkeeping and the set-based write-back
  (payments, audit rows, subscription renewals) all count;
* bare_sdk_retrieve: the same PaymentIntent.retrieve calls with plain
  StripeClients on a thread pool of the same size, nothing else.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Result, log, seed_organizations, settle, table_names, timed

PAYMENTS = int(os.environ.get("BENCH_PAYMENTS", 5_000))
TENANTS = int(os.environ.get("BENCH_TENANTS", 50))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 2))
SEED_CONCURRENCY = 8
CARD = {"exp_month": 12, "exp_year": 2030, "cvc": "123"}


def _secret(key: str) -> str:
    return f"sk_test_bench_{key}_abcd"


def _seed_stripe(url: str, orgs: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """(organization id, PaymentIntent id, expected outcome) for every payment."""
    import stripe

    per_tenant = PAYMENTS // len(orgs)

    def tenant(org: tuple[int, str]) -> list[tuple[int, str, str]]:
        org_id, key = org
        c = stripe.StripeClient(_secret(key), base_addresses={"api": url}).v1
        customer = c.customers.create(params={"email": f"payer@{key}.example"})
        good = c.payment_methods.create(
            params={"type": "card", "card": {"number": "4242424242424242", **CARD}}
        )
        bad = c.payment_methods.create(
            params={"type": "card", "card": {"number": "4000000000000341", **CARD}}
        )
        out = []
        for i in range(per_tenant):
            kind = "succeeded" if i % 10 < 7 else ("failed" if i % 10 < 9 else "open")
            params: dict[str, Any] = {
                "amount": 2900,
                "currency": "eur",
                "customer": customer.id,
                "payment_method": bad.id if kind == "failed" else good.id,
            }
            if kind == "succeeded":
                params["confirm"] = True
            intent = c.payment_intents.create(params=params)
            if kind == "failed":
                with contextlib.suppress(stripe.CardError):
                    c.payment_intents.confirm(intent.id)
            out.append((org_id, intent.id, kind))
        return out

    with ThreadPoolExecutor(SEED_CONCURRENCY) as pool:
        return [row for rows in pool.map(tenant, orgs) for row in rows]


def _seed_local(intents: list[tuple[int, str, str]], orgs: list[tuple[int, str]]) -> None:
    from payments.crypto import encrypt
    from payments.models import Payment, PaymentProviderConfig
    from subscriptions.models import Plan, Subscription

    now = timezone.now()
    PaymentProviderConfig.objects.bulk_create(
        PaymentProviderConfig(
            organization_id=org_id,
            secret_key_encrypted=encrypt(_secret(key)),
            secret_key_prefix="sk_test_",
            secret_key_last4="abcd",
            enabled=True,
        )
        for org_id, key in orgs
    )
    plan = Plan.objects.create(name="Pro", price_minor=2900, currency="EUR", interval="month")
    subs = Subscription.objects.bulk_create(
        Subscription(
            organization_id=org_id,
            plan=plan,
            status="past_due",
            current_period_start=now - timedelta(days=28),
            current_period_end=now + timedelta(days=2),
        )
        for org_id, _, _ in intents[::2]
    )
    sub_ids = iter(s.pk for s in subs)
    Payment.objects.bulk_create(
        Payment(
            organization_id=org_id,
            subscription_id=next(sub_ids) if i % 2 == 0 else None,
            amount_minor=2900,
            currency="EUR",
            provider_reference=pi,
            created_at=now - timedelta(hours=1),
            updated_at=now - timedelta(hours=1),
        )
        for i, (org_id, pi, _) in enumerate(intents)
    )


def _reset() -> None:
    """The local side back to all-open, every subscription past_due again."""
    from payments.models import Payment
    from subscriptions.models import Subscription

    now = timezone.now()
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"UPDATE {Payment._meta.db_table} SET status = 'pending', attempts = 0, "
            "last_checked_at = NULL, succeeded_at = NULL, failure_reason = ''"
        )
        c.execute(
            f"UPDATE {Subscription._meta.db_table} SET status = 'past_due', "
            "current_period_start = %s, current_period_end = %s",
            [now - timedelta(days=28), now + timedelta(days=2)],
        )
        c.execute(f"DELETE FROM {t['audit']}")
        c.execute("DELETE FROM jobs_jobrun WHERE job = 'payments.reconcile'")
    settle(Payment._meta.db_table, Subscription._meta.db_table, t["audit"])


def _interleaved(intents: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    by_tenant: dict[int, list[tuple[int, str, str]]] = {}
    for row in intents:
        by_tenant.setdefault(row[0], []).append(row)
    queues = list(by_tenant.values())
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def _bare_sdk(url: str, intents: list[tuple[int, str, str]], keys: dict[int, str]) -> None:
    import stripe

    clients = {
        org_id: stripe.StripeClient(_secret(key), base_addresses={"api": url})
        for org_id, key in keys.items()
    }
    with ThreadPoolExecutor(settings.PAYMENTS_RECONCILE_CONCURRENCY) as pool:
        list(pool.map(lambda r: clients[r[0]].v1.payment_intents.retrieve(r[1]), intents))


def _check(run: Any, intents: list[tuple[int, str, str]]) -> None:
    from payments.models import Payment

    want = {k: sum(1 for *_, kind in intents if kind == k) for k in ("succeeded", "failed")}
    got = {k: Payment.objects.filter(status=k).count() for k in want}
    if run.status != "succeeded" or got != want:
        raise RuntimeError(f"reconcile run {run.status} {run.error}: {got} != {want}")


def run() -> Result:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from jobs.runner import run_job
    from payments.gateway import reset_gateways
    from tests.fakes import fake_stripe

    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE payments_payment, payments_paymentproviderconfig, {t['sub']}, "
            f"{t['audit']}, {t['org']}, {t['plan']} RESTART IDENTITY CASCADE"
        )
        seed_organizations(c, count=TENANTS, created_at=timezone.now())
        c.execute(f"SELECT id, key FROM {t['org']} ORDER BY id")
        orgs = list(c.fetchall())

    server = fake_stripe.start()
    try:
        settings.STRIPE_API_BASE = server.url
        timings: dict[str, float] = {}
        with timed("seed localstripe", timings):
            intents = _seed_stripe(server.url, orgs)
        _seed_local(intents, orgs)
        keys = dict(orgs)
        order = _interleaved(intents)
        projects, baselines, write_back = [], [], []
        for round_no in range(ROUNDS):
            _reset()
            reset_gateways()
            with timed(f"bare SDK retrieves, round {round_no + 1}", timings):
                _bare_sdk(server.url, order, keys)
            baselines.append(timings[f"bare SDK retrieves, round {round_no + 1}"])
            with timed(f"project, round {round_no + 1}", timings):
                job = run_job("payments.reconcile")
            projects.append(timings[f"project, round {round_no + 1}"])
            _check(job, intents)
            write_back.append(job.summary["seconds"]["write_back"])
            shown = ("checked", "succeeded", "failed", "subscriptions_renewed", "seconds")
            log(f"summary: { {k: job.summary[k] for k in shown} }")
    finally:
        server.stop()
    return Result(
        project=statistics.median(projects),
        baseline_name="bare_sdk_retrieve",
        baseline=statistics.median(baselines),
        extras={
            "payments": f"{len(intents):,}",
            "tenants": str(TENANTS),
            "concurrency": str(settings.PAYMENTS_RECONCILE_CONCURRENCY),
            "write_back": f"{statistics.median(write_back):.2f} s",
        },
    )

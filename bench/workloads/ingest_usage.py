"""POST /api/usage/events taking 1,000,000 events through gunicorn on PostgreSQL.

Seeds BENCH_INGEST_ORGANIZATIONS (100) organizations, the four usage metrics
and an API key with `usage:write` (no rate limit), then starts the production
web server (`bin/web`: gunicorn, BENCH_INGEST_WORKERS=2 sync workers,
DEBUG=false) on a loopback port and times:

* project: a load generator (BENCH_INGEST_CLIENTS=4 threads, each a fresh
  connection per request, as gunicorn's sync workers close them) posting
  BENCH_INGEST_EVENTS (1,000,000) events in batches of 1,000: every batch
  resends BENCH_INGEST_RESENT (50) events of the batch before it, so dedupe is
  part of the work; every answer is checked (200, and its accepted and
  duplicate counts). Bounded in count and in time (BENCH_INGEST_MAX_SECONDS,
  600): past it the run stops and says how far it got.
* raw_insert: the same rows on an emptied table by one connection, one
  `INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO
  NOTHING` per batch (the fastest plain statement measured: a VALUES list of
  7,000 parameters took twice as long), nothing else.

The bodies are encoded before the clock starts, so the generator measures the
server. Printed: events/s of both, the p50/p99 request latency, and the rows
stored (checked equal to the distinct events sent). Target: >= 10,000 events/s
and ratio <= 2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench.common import Result, log, seed_organizations, seed_usage_metrics, settle, table_names

EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", 1_000_000))
BATCH = int(os.environ.get("BENCH_INGEST_BATCH", 1_000))
RESENT = int(os.environ.get("BENCH_INGEST_RESENT", 50))
ORGANIZATIONS = int(os.environ.get("BENCH_INGEST_ORGANIZATIONS", 100))
CLIENTS = int(os.environ.get("BENCH_INGEST_CLIENTS", 4))
WORKERS = int(os.environ.get("BENCH_INGEST_WORKERS", 2))
MAX_SECONDS = float(os.environ.get("BENCH_INGEST_MAX_SECONDS", 600))
METRICS = ["api_calls", "requests", "storage_gb", "active_users"]


def seed() -> str:
    from jobs.api_keys import create_api_key
    from jobs.models import ApiKey

    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['event']}, {t['agg']}, {t['org']}, {t['metric']}, {t['hour']}, "
            f"{t['late']} RESTART IDENTITY CASCADE"
        )
        seed_usage_metrics(c)
        seed_organizations(c, count=ORGANIZATIONS, created_at=timezone.now() - timedelta(days=30))
    ApiKey.objects.filter(name="bench-ingest").delete()
    new = create_api_key(
        name="bench-ingest",
        owner="bench",
        scopes=["usage:write"],
        actor="bench",
        rate_limit_per_minute=0,
    )
    settle(t["event"], t["org"])
    return new.secret


def batches() -> list[list[dict]]:
    """Events in batches; each batch resends RESENT events of the one before."""
    start = timezone.now() - timedelta(minutes=30)
    out: list[list[dict]] = []
    n = 0
    sent = 0
    previous: list[dict] = []
    while sent < EVENTS:
        size = min(BATCH, EVENTS - sent)
        resent = previous[:RESENT] if previous else []
        fresh = []
        for _ in range(size - len(resent)):
            metric = METRICS[n % 4]
            event = {
                "organization": f"org_{1 + n % ORGANIZATIONS:05d}",
                "metric": metric,
                "quantity": 1 + n % 13,
                "occurred_at": (start + timedelta(microseconds=n)).isoformat(),
                "idempotency_key": f"evt-{n}",
            }
            if metric == "active_users":
                event["value_key"] = f"user{n % 1000}"
            fresh.append(event)
            n += 1
        batch = fresh + resent
        out.append(batch)
        previous = fresh
        sent += len(batch)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    base = Path(settings.BASE_DIR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        {
            "ENV_FILE": "",
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "PORT": str(port),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(WORKERS),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
        }
    )
    redis = os.environ.get("BENCH_REDIS_URL", "")
    if redis:
        env["REDIS_URL"] = redis
    process = subprocess.Popen(
        [str(base / "bin" / "web")],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bin/web exited: {process.stderr.read().decode()[-2000:]}")
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health/live")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("bin/web did not answer within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def post_all(port: int, secret: str, bodies: list[tuple[bytes, int]]) -> dict:
    """Post every body from CLIENTS threads; latencies and counts, or the first error."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    lock = threading.Lock()
    queue = list(range(len(bodies)))
    latencies: list[float] = []
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "posted": 0}
    errors: list[str] = []
    deadline = time.monotonic() + MAX_SECONDS

    def work() -> None:
        while True:
            with lock:
                if not queue or errors or time.monotonic() > deadline:
                    return
                index = queue.pop(0)
            body, size = bodies[index]
            started = time.perf_counter()
            conn = HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/api/usage/events", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except OSError as exc:
                errors.append(f"batch {index}: {exc}")
                return
            finally:
                conn.close()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"batch {index}: {response.status} {payload[:300]!r}")
                return
            answer = json.loads(payload)
            with lock:
                latencies.append(elapsed)
                totals["posted"] += size
                for name in ("accepted", "duplicates", "rejected"):
                    totals[name] += answer[name]

    threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"ingestion failed: {errors[0]}")
    return {"latencies": sorted(latencies), **totals}


def raw_insert(all_batches: list[list[dict]]) -> float:
    """The same rows, one INSERT ... ON CONFLICT DO NOTHING per batch."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {t['event']} RESTART IDENTITY")
        c.execute(f"SELECT key, id FROM {t['org']}")
        org_ids = dict(c.fetchall())
    settle(t["event"])
    now = timezone.now()
    prepared = []
    for batch in all_batches:
        prepared.append(
            [
                now,
                [org_ids[e["organization"]] for e in batch],
                [e["metric"] for e in batch],
                [e["quantity"] for e in batch],
                [e.get("value_key", "") for e in batch],
                [datetime.fromisoformat(e["occurred_at"]) for e in batch],
                [e["idempotency_key"] for e in batch],
            ]
        )
    started = time.perf_counter()
    with connection.cursor() as c:
        for params in prepared:
            c.execute(
                f"INSERT INTO {t['event']} (organization_id, metric, quantity, value_key, "
                "occurred_at, idempotency_key, received_at) SELECT o, m, q, v, a, k, %s "
                "FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], "
                "%s::timestamptz[], %s::text[]) AS u(o, m, q, v, a, k) "
                "ON CONFLICT (organization_id, idempotency_key) DO NOTHING",
                params,
            )
    return time.perf_counter() - started


def stored_events() -> int:
    with connection.cursor() as c:
        c.execute(f"SELECT count(*) FROM {table_names()['event']}")
        return c.fetchone()[0]


def run() -> Result:
    log(f"seeding {ORGANIZATIONS} organizations and a usage:write key")
    secret = seed()
    all_batches = batches()
    distinct = sum(len(b) - (RESENT if i else 0) for i, b in enumerate(all_batches))
    bodies = [(json.dumps({"events": b}).encode(), len(b)) for b in all_batches]
    log(
        f"{len(bodies)} batches, {sum(s for _, s in bodies):,} events "
        f"({distinct:,} distinct), {sum(len(b) for b, _ in bodies) / 1e6:.0f} MB of JSON"
    )
    port = free_port()
    server = start_server(port)
    try:
        started = time.perf_counter()
        outcome = post_all(port, secret, bodies)
        project = time.perf_counter() - started
    finally:
        stop_server(server)
    posted = outcome["posted"]
    stored = stored_events()
    if posted < EVENTS:
        log(f"stopped at BENCH_INGEST_MAX_SECONDS={MAX_SECONDS:.0f}: {posted:,} events posted")
    expected = distinct if posted == EVENTS else outcome["accepted"]
    assert outcome["rejected"] == 0, outcome["rejected"]
    assert outcome["accepted"] == stored == expected, (outcome["accepted"], stored, expected)
    latencies = outcome["latencies"]
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    log(f"project: {posted / project:,.0f} events/s, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f}")
    done = all_batches[: len(latencies)] if posted < EVENTS else all_batches
    baseline = raw_insert(done)
    log(f"raw_insert: {posted / baseline:,.0f} events/s")
    return Result(
        project=project,
        baseline_name="raw_insert",
        baseline=baseline,
        extras={
            "events": f"{posted:,}",
            "events_per_s": f"{posted / project:,.0f} (target >= 10,000)",
            "raw_events_per_s": f"{posted / baseline:,.0f}",
            "duplicates": f"{outcome['duplicates']:,}",
            "p50_ms": f"{p50 * 1000:.0f}",
            "p99_ms": f"{p99 * 1000:.0f}",
            "workers": str(WORKERS),
            "clients": str(CLIENTS),
        },
    )

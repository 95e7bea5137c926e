"""notifications.send_pending sending 2,000 queued emails to a moto SES server.

Starts `moto_server` on a free loopback port in its own process (so it does
not share this process's GIL with the senders), verifies the sender, first
measures the outbox alone (no provider, no limit: the sender's own ceiling),
then BENCH_ROUNDS (3) rounds of:
* measures what moto takes alone: BENCH_SEND_WORKERS threads sending the
  same kind of message through django-ses as fast as they can for a few
  seconds, with no outbox and no database;
* queues BENCH_EMAILS emails and sends them with send_pending(workers=4)
  under a limit of BENCH_RATE (200/s), every send time recorded;
* measures moto alone again, and takes the mean of both as its capacity.

The line: project = seconds to send them all; at_limit = the ideal seconds at
min(limit, moto alone); rate (first to last request); max_1s, the most
requests that left in any 1-second span (time taken just before each), and
max_1s_grants, the same for the limiter's grants.
The limiter is shared through Redis (BENCH_REDIS_URL) as in production. The
line gives the median round; max_1s is the most of any round.
Targets: rate >= 90% of min(limit, moto alone); max_1s <= limit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from django.db import connection
from django.test import override_settings

from bench.common import Result, log, settle
from core.ratelimit import max_in_any_window

EMAILS = int(os.environ.get("BENCH_EMAILS", 2_000))
RATE = int(os.environ.get("BENCH_RATE", 200))
WORKERS = int(os.environ.get("BENCH_SEND_WORKERS", 4))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
# The limiter is shared through Redis, as in production (make bench sets it).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
SENDER = "bench@sender.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench: moto_server did not start")


def moto_alone(seconds: float = 4.0) -> float:
    """Sends per second the moto server takes from WORKERS unlimited threads sending
    the same messages through django-ses, without the outbox (no database)."""
    from django.core.mail import EmailMultiAlternatives, get_connection

    counts = [0] * WORKERS
    stop_at = time.time() + seconds

    def worker(i: int) -> None:
        backend = get_connection()
        backend.open()
        while time.time() < stop_at:
            message = EmailMultiAlternatives(
                "Your reminder",
                "Hello,\n\nYour subscription renews soon.\n",
                SENDER,
                [f"x{i}-{counts[i]}@customer.example"],
                connection=backend,
            )
            message.attach_alternative(
                "<p>Hello,</p><p>Your subscription renews soon.</p>", "text/html"
            )
            message.send()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.time() - start)


def queue(n: int) -> None:
    from notifications.models import OutboundEmail

    table = OutboundEmail._meta.db_table
    with connection.cursor() as c:
        c.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
        c.execute(
            f"""INSERT INTO {table} (organization_id, "to", subject, body_text, body_html, kind,
                dedupe_key, status, attempts, next_attempt_at, provider_message_id, last_error,
                created_at, claimed_by)
            SELECT NULL, 'person' || g || '@customer.example', 'Your reminder',
                'Hello,' || E'\\n\\nYour subscription renews soon.\\n',
                '<p>Hello,</p><p>Your subscription renews soon.</p>', 'bench.reminder',
                'bench.reminder:' || g, 'queued', 0, now() - interval '1 minute', '', '', now(), ''
            FROM generate_series(1, %s) g""",
            [n],
        )
    settle(table)


def outbox_alone() -> float:
    """Sends per second of the outbox with no provider behind it (Django's
    in-memory backend) and no rate limit, WORKERS threads: the sender's own
    ceiling (its three writes per email, the limiter's Redis call, building
    the message), printed so a miss can be told apart from a slow fake SES."""
    from core.ratelimit import shared_limiter
    from notifications.sending import send_pending

    n = min(EMAILS, 1000)
    queue(n)
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", REDIS_URL=REDIS_URL
    ):
        limiter = shared_limiter(per_second=100_000, key=f"bench-{uuid.uuid4().hex}")
        start = time.perf_counter()
        send_pending(max_emails=n, workers=WORKERS, limiter=limiter)
        return n / (time.perf_counter() - start)


def one_round(url: str, number: int) -> dict:
    """Queue EMAILS, measure moto alone, send them all at RATE, measure moto again."""
    from core.ratelimit import shared_limiter
    from notifications.models import EmailStatus, OutboundEmail
    from notifications.sending import send_pending

    queue(EMAILS)
    with override_settings(
        EMAIL_BACKEND="django_ses.SESBackend",
        AWS_SES_REGION_ENDPOINT_URL=url,
        DEFAULT_FROM_EMAIL=SENDER,
        AWS_SES_RATE_LIMIT_PER_SECOND=RATE,
        REDIS_URL=REDIS_URL,
    ):
        before = moto_alone()
        limiter = shared_limiter(per_second=RATE, key=f"bench-{uuid.uuid4().hex}")
        start = time.perf_counter()
        report = send_pending(
            max_emails=EMAILS, workers=WORKERS, limiter=limiter, record_times=True
        )
        elapsed = time.perf_counter() - start
        after = moto_alone()
    sent = OutboundEmail.objects.filter(status=EmailStatus.SENT).count()
    if report.sent != EMAILS or sent != EMAILS:
        raise SystemExit(f"bench: sent {report.sent} ({sent} recorded) of {EMAILS}")
    # The box is shared: moto's capacity is measured on both sides of the
    # run and averaged, so a load change during the run is not mistaken
    # for the sender's overhead (both figures are printed).
    capacity = (before + after) / 2
    target = min(RATE, capacity)
    times = sorted(report.send_times)
    rate = (len(times) - 1) / (times[-1] - times[0])
    result = {
        "elapsed": elapsed,
        "rate": rate,
        "target": target,
        "share": rate / target,
        "capacity": capacity,
        "peak": max_in_any_window(times),
        "peak_grants": max_in_any_window(report.grant_times),
        "limiter": "redis" if limiter._redis is not None else "local",
    }
    log(
        f"round {number}: moto alone {before:.0f}/s then {after:.0f}/s; sent {EMAILS} in "
        f"{elapsed:.2f} s: {rate:.1f}/s = {100 * result['share']:.1f}% of {target:.0f}/s, max in "
        f"any 1 s: {result['peak']} requests, {result['peak_grants']} grants"
    )
    return result


def run() -> Result:
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
    ceiling = outbox_alone()
    log(f"outbox alone (no provider, no limit), {WORKERS} threads: {ceiling:.0f}/s")
    proc, url = start_moto()
    try:
        boto3.client("ses", region_name="us-east-1", endpoint_url=url).verify_email_identity(
            EmailAddress=SENDER
        )
        rounds = [one_round(url, n + 1) for n in range(ROUNDS)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    median = sorted(rounds, key=lambda r: r["share"])[len(rounds) // 2]
    return Result(
        project=median["elapsed"],
        baseline_name="at_limit",
        baseline=EMAILS / median["target"],
        extras={
            "limit": f"{RATE}/s",
            "rounds": str(len(rounds)),
            "rate": (
                f"{median['rate']:.1f}/s ({100 * median['share']:.1f}% of "
                f"{median['target']:.0f}, the median round; rounds "
                + "/".join(f"{100 * r['share']:.0f}%" for r in rounds)
                + ")"
            ),
            "moto_alone": f"{median['capacity']:.0f}/s",
            "outbox_alone": f"{ceiling:.0f}/s",
            "max_1s": str(max(r["peak"] for r in rounds)),
            "max_1s_grants": str(max(r["peak_grants"] for r in rounds)),
            "workers": str(WORKERS),
            "limiter": median["limiter"],
        },
    )

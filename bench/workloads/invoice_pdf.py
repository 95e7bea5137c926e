"""billing.generate_monthly_invoices for 2,000 organizations, PDFs included.

Seeds 2,000 organizations, each with a monthly subscription (bought before
January, some mid-month: prorated) and usage of two priced metrics in January
2026 (API calls by the package of 1,000, storage per unit), the month's hours
in the aggregation ledger as the hourly job leaves them, and the invoice
document's buyer details, then times the whole run (build, number, render,
store on local disk, queue the email with the PDF attached; Stripe off) from
an emptied invoice state:

* project (1 worker): the run through jobs.runner.run_job with no other
  worker, so the run's own process claims and does every chunk;
* workers2: the same with one more real worker process (started and warmed
  up before the clock starts, as a qcluster worker would be) claiming chunks
  beside it, so 2 processes share the chunks;
* naive_render_scaled (baseline): one weasyprint document per invoice, the
  seed design, timed on BENCH_NAIVE_SAMPLE invoices and scaled to all.

The line ends with the wall time per invoice per worker process, amortized
(1 worker: total / invoices; the target is 40 ms) and gives the 2-worker
speedup (target >= 1.7).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection

from bench.common import Result, log, seed_organizations, settle, table_names, timed

ORGANIZATIONS = int(os.environ.get("BENCH_INVOICE_ORGANIZATIONS", 2_000))
NAIVE_SAMPLE = int(os.environ.get("BENCH_NAIVE_SAMPLE", 100))
JOB = "billing.generate_monthly_invoices"
TARGET = "billing.jobs.invoices.process_chunk"
SLOT = datetime(2026, 2, 1, tzinfo=UTC)
WORKER_START_TIMEOUT = 120


def seed() -> None:
    """Every organization: one active monthly plan (3 plans, EUR and USD) and
    12 hourly aggregates of two priced metrics in January."""
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['agg']}, {t['price']}, {t['metric']}, {t['line']}, {t['invoice']}, "
            f"{t['sequence']}, {t['sub']}, {t['org']}, {t['plan']}, {t['attachment']}, "
            f"{t['outbox']}, {t['audit']}, {t['chunk']}, {t['hour']}, {t['billed']}, "
            f"{t['revision']}, {t['credit']} RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = %s", [JOB])
        c.execute(
            f"""INSERT INTO {t["plan"]} (name, price_minor, currency, interval) VALUES
            ('Starter', 900, 'EUR', 'month'), ('Pro', 2900, 'EUR', 'month'),
            ('Team', 9900, 'USD', 'month')"""
        )
        c.execute(
            f"""INSERT INTO {t["metric"]} (code, name, aggregation, unit) VALUES
            ('api_calls', 'API calls', 'sum', 'calls'), ('storage_gb', 'Storage', 'max', 'GB')"""
        )
        c.execute(
            f"""INSERT INTO {t["price"]} (plan_id, metric_id, charge_model, unit_price_minor,
                package_size)
            SELECT p.id, m.id, CASE m.code WHEN 'api_calls' THEN 'package' ELSE 'per_unit' END,
                   CASE m.code WHEN 'api_calls' THEN 2500 ELSE 25 END,
                   CASE m.code WHEN 'api_calls' THEN 1000 ELSE 1 END
            FROM {t["plan"]} p CROSS JOIN {t["metric"]} m"""
        )
        seed_organizations(c, count=ORGANIZATIONS, created_at=datetime(2025, 1, 1, tzinfo=UTC))
        c.execute(
            f"""UPDATE {t["org"]} SET legal_name = name || ' Ltd',
                billing_address = id || ' Market Street' || chr(10) || 'London EC1A 1AA',
                country = 'GB', tax_id = 'GB' || lpad(id::text, 9, '0')"""
        )
        c.execute(
            f"""INSERT INTO {t["hour"]} (hour, aggregated_at)
            SELECT %(jan)s + h * interval '1 hour', %(feb)s FROM generate_series(0, 743) h""",
            {"jan": datetime(2026, 1, 1, tzinfo=UTC), "feb": datetime(2026, 2, 1, tzinfo=UTC)},
        )
        c.execute(
            f"""INSERT INTO {t["agg"]} (organization_id, metric, hour, total, event_count,
                updated_at)
            SELECT o.id, m.code, %(jan)s + (h * 61) * interval '1 hour',
                   1 + (o.id * 7 + h * 13) %% 500, 1, %(jan)s
            FROM {t["org"]} o CROSS JOIN (VALUES ('api_calls'), ('storage_gb')) m(code)
            CROSS JOIN generate_series(0, 11) h""",
            {"jan": datetime(2026, 1, 1, tzinfo=UTC)},
        )
    # Through the ORM, so columns added to Subscription later get their defaults.
    from subscriptions.models import Organization, Plan, Subscription

    jan = datetime(2026, 1, 1, tzinfo=UTC)
    plans = list(Plan.objects.order_by("pk").values_list("pk", flat=True))
    Subscription.objects.bulk_create(
        [
            Subscription(
                organization_id=org_id,
                plan_id=plans[org_id % len(plans)],
                status="active",
                current_period_start=jan + timedelta(days=org_id % 28),
                current_period_end=jan + timedelta(days=org_id % 28 + 31),
                # Most bought before January (a full month), one in ten mid-month.
                created_at=jan + timedelta(days=org_id % 28) if org_id % 10 == 0 else jan,
                updated_at=jan,
            )
            for org_id in Organization.objects.values_list("pk", flat=True)
        ],
        batch_size=2000,
    )
    settle(t["org"], t["sub"], t["agg"], t["price"])


def reset_invoices(media: Path) -> None:
    t = table_names()
    with connection.cursor() as c:
        c.execute(
            f"TRUNCATE {t['line']}, {t['invoice']}, {t['sequence']}, {t['attachment']}, "
            f"{t['outbox']}, {t['audit']}, {t['chunk']}, {t['billed']}, {t['credit']} "
            "RESTART IDENTITY CASCADE"
        )
        c.execute("DELETE FROM jobs_jobrun WHERE job = %s", [JOB])
        c.execute("DELETE FROM django_q_ormq")
    shutil.rmtree(media, ignore_errors=True)
    media.mkdir(parents=True)
    settle(t["invoice"], t["line"], t["outbox"], t["audit"], t["chunk"], "jobs_jobrun")


def warm_up() -> None:
    """Import weasyprint, parse the stylesheet, load fonts: what a long-lived
    worker has done before its first chunk."""
    from billing.services.pdf import PdfInvoice, PdfLine, render_one

    render_one(
        PdfInvoice(
            key="0",
            number="INV-0000-000000",
            organization_key="warm",
            organization_name="Warm up",
            billing_email="warm@example.com",
            issue_date="2026-02-01",
            due_date="2026-02-15",
            payment_terms="Payment terms: net 14 days.",
            period_label="January 2026",
            currency="EUR",
            subtotal_minor=100,
            tax_minor=0,
            total_minor=100,
            lines=[PdfLine("Plan", 1, "month", 100, 100)],
        )
    )


def project_run():
    from jobs.runner import run_job

    run = run_job(JOB, slot=SLOT)
    if run.status != "succeeded" or run.summary.get("invoices_created") != ORGANIZATIONS:
        raise SystemExit(f"bench: the run did not bill everyone: {run.status} {run.summary}")
    return run


def start_worker(media: Path, control: Path) -> subprocess.Popen:
    env = {**os.environ, "MEDIA_ROOT": str(media)}
    ready = control / "ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.workloads.invoice_pdf", "--worker", str(control)],
        env=env,
        cwd=settings.BASE_DIR,
    )
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: the extra worker did not start")
        time.sleep(0.1)
    return process


def stop_worker(process: subprocess.Popen, control: Path) -> None:
    (control / "stop").touch()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def worker_main(control: Path) -> None:
    """The extra worker: claims chunks of running invoice runs until told to stop."""
    from bench.__main__ import setup_django

    setup_django()
    from jobs.fanout import run_chunks
    from jobs.models import ChunkStatus, JobChunk, RunStatus

    warm_up()
    (control / "ready").touch()
    while not (control / "stop").exists():
        run_id = (
            JobChunk.objects.filter(
                run__job=JOB, run__status=RunStatus.RUNNING, status=ChunkStatus.PENDING
            )
            .values_list("run_id", flat=True)
            .first()
        )
        if run_id is None:
            time.sleep(0.02)
            continue
        run_chunks(run_id, TARGET)


def naive_baseline(sample: int) -> float:
    """Seconds per invoice of the seed design: one weasyprint call per invoice,
    nothing kept between calls (stylesheet parsed, fonts configured, the full
    HTML5 user-agent sheet applied every time)."""
    from django.template.loader import get_template
    from weasyprint import CSS, HTML

    from billing.models import Invoice
    from billing.services.invoices import pdf_document
    from billing.services.pdf import _html

    invoices = list(
        Invoice.objects.select_related("organization").prefetch_related("lines")[:sample]
    )
    documents = [pdf_document(invoice) for invoice in invoices]
    started = time.perf_counter()
    for document in documents:
        css = CSS(string=get_template("invoices/invoice.css").render({}))
        HTML(string=_html([document])).write_pdf(stylesheets=[css])
    return (time.perf_counter() - started) / len(documents)


def run() -> Result:
    times: dict[str, float] = {}
    media = Path(tempfile.mkdtemp(prefix="bench-invoices-"))
    control = Path(tempfile.mkdtemp(prefix="bench-invoice-worker-"))
    settings.MEDIA_ROOT = str(media)
    os.environ["MEDIA_ROOT"] = str(media)
    settings.INVOICE_ENABLE_STRIPE = False
    settings.INVOICE_ENABLE_EMAIL = True
    settings.INVOICE_ENABLE_S3 = False
    try:
        log(f"invoice_pdf: seeding {ORGANIZATIONS:,} organizations")
        with timed("seed", times):
            seed()
        warm_up()

        reset_invoices(media)
        cpu_started = time.process_time()
        with timed("project (1 worker)", times):
            one = project_run()
        cpu = time.process_time() - cpu_started
        log(f"summary: { {k: one.summary.get(k) for k in ('chunks', 'errors', 'revenue_minor')} }")
        per_invoice = naive_baseline(NAIVE_SAMPLE)
        naive = per_invoice * ORGANIZATIONS
        log(f"naive render: {per_invoice * 1000:.1f} ms per invoice, scaled {naive:.1f} s")

        reset_invoices(media)
        worker = start_worker(media, control)
        try:
            with timed("project (2 workers)", times):
                two = project_run()
        finally:
            stop_worker(worker, control)
        from jobs.models import JobChunk

        helped = JobChunk.objects.filter(run=two).exclude(claimed_by__contains=f":{os.getpid()}:")
        log(f"2 workers: the extra worker did {helped.count()} of {two.summary['chunks']} chunks")
    finally:
        shutil.rmtree(media, ignore_errors=True)
        shutil.rmtree(control, ignore_errors=True)

    single, double = times["project (1 worker)"], times["project (2 workers)"]
    return Result(
        project=single,
        baseline_name="naive_render_scaled",
        baseline=naive,
        extras={
            "invoices": f"{ORGANIZATIONS:,}",
            "workers2": f"{double:.2f} s",
            "speedup_2_workers": f"{single / double:.2f}x",
            "naive_render": f"{per_invoice * 1000:.0f} ms per invoice",
            # The run's own CPU (1 worker): what the wall time tends to on a quiet machine.
            "cpu_1_worker": f"{cpu * 1000 / ORGANIZATIONS:.1f} ms per invoice",
            "amortized": f"{single * 1000 / ORGANIZATIONS:.1f} ms per invoice",
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.workloads.invoice_pdf --worker CONTROL_DIR")

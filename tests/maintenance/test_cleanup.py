"""maintenance.cleanup: each category counted, dry run removes nothing."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.sessions.models import Session
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django_q.models import Task

from billing.models import UsageAggregate, UsageEvent
from jobs.models import JobRun, RunStatus
from jobs.registry import get_job
from jobs.runner import run_job
from maintenance import cleanup as categories
from notifications.models import EmailStatus, OutboundEmail
from subscriptions.models import OrganizationStatus
from tests.factories import JobRunFactory, OrganizationFactory, OutboundEmailFactory

pytestmark = pytest.mark.django_db

JOB = "maintenance.cleanup"
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)

REFERENCED = {"invoices/2025/kept.pdf"}


def referenced_invoice_files() -> set[str]:
    return REFERENCED


@pytest.fixture(autouse=True)
def cleanup_settings(settings, tmp_path):
    settings.OUTBOX_RETENTION_DAYS = 30
    settings.TASK_RESULT_RETENTION_DAYS = 30
    settings.API_IDEMPOTENCY_KEY_RETENTION_DAYS = 7
    settings.USAGE_EVENT_RETENTION_DAYS = 90
    settings.MEDIA_ROOT = str(tmp_path)
    settings.INVOICE_PDF_PREFIX = "invoices/"
    settings.INVOICE_PDF_ORPHAN_MIN_AGE_HOURS = 24
    settings.INVOICE_REFERENCED_FILES_PROVIDER = f"{__name__}.referenced_invoice_files"
    return settings


def store(name: str, *, age: timedelta) -> str:
    saved = default_storage.save(name, ContentFile(b"%PDF-1.4"))
    stamp = (NOW - age).timestamp()
    os.utime(default_storage.path(saved), (stamp, stamp))
    return saved


def email(status: str, *, age_days: int) -> OutboundEmail:
    extra = {"sent_at": NOW} if status == EmailStatus.SENT else {}
    return OutboundEmailFactory(status=status, created_at=NOW - timedelta(days=age_days), **extra)


def task(*, age_days: int) -> Task:
    at = NOW - timedelta(days=age_days)
    return Task.objects.create(
        id=uuid.uuid4().hex,
        name=f"t{uuid.uuid4().hex[:6]}",
        func="x.y",
        started=at,
        stopped=at,
        success=True,
    )


def session(*, expires_in: timedelta) -> Session:
    return Session.objects.create(
        session_key=uuid.uuid4().hex, session_data="e30=", expire_date=NOW + expires_in
    )


def usage_event(org, *, age_days: int, aggregated: bool, late: bool = False) -> UsageEvent:
    """An event of `age_days` ago; `aggregated`: its hour has an aggregate, rebuilt
    after the event arrived unless `late` (the event came after the rebuild)."""
    at = (NOW - timedelta(days=age_days)).replace(minute=10, second=0, microsecond=0)
    hour = at.replace(minute=0)
    received = at + timedelta(hours=5 if late else 0)
    event = UsageEvent.objects.create(
        organization=org,
        metric="api_calls",
        quantity=1,
        occurred_at=at,
        received_at=received,
        idempotency_key=f"e{uuid.uuid4().hex}",
    )
    if aggregated:
        UsageAggregate.objects.update_or_create(
            organization=org,
            metric="api_calls",
            hour=hour,
            defaults={"total": 1, "event_count": 1, "updated_at": at + timedelta(hours=1)},
        )
    return event


def seed() -> dict[str, object]:
    org = OrganizationFactory()
    closed = OrganizationFactory(status=OrganizationStatus.CLOSED)
    return {
        "old_aggregated_event": usage_event(org, age_days=100, aggregated=True),
        "old_late_event": usage_event(org, age_days=120, aggregated=True, late=True),
        "old_unaggregated_event": usage_event(org, age_days=110, aggregated=False),
        "recent_aggregated_event": usage_event(org, age_days=10, aggregated=True),
        "old_closed_org_event": usage_event(closed, age_days=100, aggregated=False),
        "orphan_pdf": store("invoices/2025/orphan.pdf", age=timedelta(days=3)),
        "kept_pdf": store("invoices/2025/kept.pdf", age=timedelta(days=3)),
        "fresh_orphan_pdf": store("invoices/2025/fresh.pdf", age=timedelta(hours=1)),
        "other_pdf": store("reports/old.pdf", age=timedelta(days=90)),
        "old_sent": email(EmailStatus.SENT, age_days=40),
        "old_failed": email(EmailStatus.FAILED, age_days=40),
        "old_suppressed": email(EmailStatus.SUPPRESSED, age_days=40),
        "old_queued": email(EmailStatus.QUEUED, age_days=40),
        "recent_sent": email(EmailStatus.SENT, age_days=5),
        "old_task": task(age_days=31),
        "recent_task": task(age_days=2),
        "expired_session": session(expires_in=-timedelta(minutes=1)),
        "live_session": session(expires_in=timedelta(days=1)),
        "old_key": JobRunFactory(idempotency_key="k-old", created_at=NOW - timedelta(days=8)),
        "recent_key": JobRunFactory(idempotency_key="k-new", created_at=NOW - timedelta(days=1)),
        "old_key_queued": JobRunFactory(
            idempotency_key="k-queued",
            created_at=NOW - timedelta(days=8),
            status=RunStatus.QUEUED,
        ),
    }


def test_cleanup_is_scheduled_weekly():
    spec = get_job(JOB)
    assert (spec.schedule, spec.queue) == ("0 2 * * 0", "low")


def test_cleanup_counts_each_category():
    data = seed()

    run = run_job(JOB, params={"batch_size": 2})

    assert run.status == RunStatus.SUCCEEDED, run.error
    counts = {name: result.get("removed") for name, result in run.summary["categories"].items()}
    assert counts == {
        "invoice_pdfs": 1,
        "usage_events": 2,
        "outbox": 3,
        "task_results": 1,
        "sessions": 1,
        "idempotency_keys": 1,
        "job_runs": 0,  # nothing past its retention here (tests/jobs/test_retention.py)
    }
    assert run.summary["removed"] == 9
    assert (run.processed, run.succeeded) == (9, 9)

    assert not default_storage.exists(data["orphan_pdf"])
    assert default_storage.exists(data["kept_pdf"])
    assert default_storage.exists(data["fresh_orphan_pdf"])  # may be mid-commit
    assert default_storage.exists(data["other_pdf"])  # outside the prefix
    assert set(OutboundEmail.objects.values_list("pk", flat=True)) == {
        data["old_queued"].pk,
        data["recent_sent"].pk,
    }
    assert list(Task.objects.values_list("pk", flat=True)) == [data["recent_task"].pk]
    assert list(Session.objects.values_list("pk", flat=True)) == [data["live_session"].pk]
    assert set(UsageEvent.objects.values_list("pk", flat=True)) == {
        data["old_late_event"].pk,  # its hour was not rebuilt since it arrived
        data["old_unaggregated_event"].pk,
        data["recent_aggregated_event"].pk,
    }
    keys = dict(JobRun.objects.values_list("pk", "idempotency_key"))
    assert keys[data["old_key"].pk] is None  # key cleared, run kept
    assert keys[data["recent_key"].pk] == "k-new"
    assert keys[data["old_key_queued"].pk] == "k-queued"  # not finished yet


def test_cleanup_dry_run_removes_nothing():
    data = seed()

    run = run_job(JOB, dry_run=True)

    assert run.status == RunStatus.SUCCEEDED, run.error
    found = run.summary["categories"]
    assert run.summary["would_remove"] == 9
    assert found["usage_events"]["sample"] == [
        str(pk) for pk in sorted([data["old_aggregated_event"].pk, data["old_closed_org_event"].pk])
    ]
    assert UsageEvent.objects.count() == 5
    assert found["invoice_pdfs"]["sample"] == [data["orphan_pdf"]]
    assert found["outbox"]["would_remove"] == 3
    assert found["task_results"]["sample"] == [data["old_task"].pk]
    assert found["idempotency_keys"]["sample"] == [f"run #{data['old_key'].pk}"]
    assert default_storage.exists(data["orphan_pdf"])
    assert OutboundEmail.objects.count() == 5
    assert Task.objects.count() == 2
    assert Session.objects.count() == 2
    assert JobRun.objects.filter(idempotency_key="k-old").exists()


def test_without_a_referenced_files_provider_no_invoice_file_is_deleted(settings):
    settings.INVOICE_REFERENCED_FILES_PROVIDER = ""
    orphan = store("invoices/orphan.pdf", age=timedelta(days=30))

    run = run_job(JOB)

    assert (
        "INVOICE_REFERENCED_FILES_PROVIDER" in run.summary["categories"]["invoice_pdfs"]["skipped"]
    )
    assert default_storage.exists(orphan)


def test_a_failing_category_is_recorded_and_the_others_run(monkeypatch):
    seed()

    def broken(**kwargs):
        raise RuntimeError("storage unreachable")

    monkeypatch.setitem(categories.CATEGORIES, "invoice_pdfs", broken)
    run = run_job(JOB)

    assert run.status == RunStatus.PARTIAL
    assert run.failures.get().item_key == "invoice_pdfs"
    assert "storage unreachable" in run.summary["categories"]["invoice_pdfs"]["error"]
    assert run.summary["categories"]["outbox"]["removed"] == 3


def test_cleanup_refuses_a_bad_batch_size():
    data = seed()

    run = run_job(JOB, params={"batch_size": 0})

    assert run.status == RunStatus.FAILED
    assert "batch_size" in run.error
    assert OutboundEmail.objects.filter(pk=data["old_sent"].pk).exists()

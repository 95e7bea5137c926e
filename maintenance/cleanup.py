"""The weekly cleanup: remove what nothing points at any more.

Each category is a function `(cutoffs..., dry_run, batch_size) -> CategoryResult`
that counts (dry run: counts and lists a sample) or removes its rows in
bounded batches, each batch its own short transaction, so the cleanup is safe
while the rest of the system writes. A category that cannot run yet (its
model does not exist, or nothing says which files are referenced) is
skipped with a note in the summary rather than guessing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.files.storage import Storage, storages
from django.db import models, transaction
from django.db.models import Exists, ExpressionWrapper, OuterRef, Q
from django.utils.module_loading import import_string
from django_q.models import Task

from jobs import retention as run_retention
from notifications.models import EmailStatus, OutboundEmail

SAMPLE_SIZE = 20  # names a dry run lists per category
FINAL_EMAIL_STATUSES = (EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SUPPRESSED)


@dataclass
class CategoryResult:
    removed: int = 0  # or, in a dry run, would remove
    skipped: str = ""  # why the category did not run
    sample: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self, *, dry_run: bool) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped, **self.detail}
        out: dict[str, Any] = {("would_remove" if dry_run else "removed"): self.removed}
        if dry_run:
            out["sample"] = self.sample
        return {**out, **self.detail}


def _batched_delete(queryset: models.QuerySet, *, dry_run: bool, batch_size: int) -> CategoryResult:
    """Delete the queryset's rows `batch_size` primary keys at a time."""
    if dry_run:
        sample = [
            str(pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)[:SAMPLE_SIZE]
        ]
        return CategoryResult(removed=queryset.count(), sample=sample)
    removed = 0
    model = queryset.model
    while True:
        with transaction.atomic():
            pks = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            removed += model._base_manager.filter(pk__in=pks).delete()[1].get(model._meta.label, 0)
        if len(pks) < batch_size:
            break
    return CategoryResult(removed=removed)


def outbox(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """Sent, failed and suppressed emails older than OUTBOX_RETENTION_DAYS;
    queued and sending rows are never touched."""
    days = settings.OUTBOX_RETENTION_DAYS
    cutoff = now - timedelta(days=days)
    queryset = OutboundEmail.objects.filter(status__in=FINAL_EMAIL_STATUSES, created_at__lt=cutoff)
    result = _batched_delete(queryset, dry_run=dry_run, batch_size=batch_size)
    result.detail = {"retention_days": days, "cutoff": cutoff.isoformat()}
    return result


def task_results(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """django-q2 task results (successes and failures) older than
    TASK_RESULT_RETENTION_DAYS; JobRun keeps the job's own record."""
    days = settings.TASK_RESULT_RETENTION_DAYS
    cutoff = now - timedelta(days=days)
    result = _batched_delete(
        Task.objects.filter(stopped__lt=cutoff), dry_run=dry_run, batch_size=batch_size
    )
    result.detail = {"retention_days": days, "cutoff": cutoff.isoformat()}
    return result


def sessions(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """Expired sessions (what `clearsessions` does, in batches)."""
    return _batched_delete(
        Session.objects.filter(expire_date__lt=now), dry_run=dry_run, batch_size=batch_size
    )


def idempotency_keys(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """API idempotency keys of finished runs older than
    API_IDEMPOTENCY_KEY_RETENTION_DAYS are cleared; the runs are kept. A
    client retrying after that gets a new run, as the API documents. Through
    the jobs platform's service (it owns JobRun)."""
    purged = run_retention.clear_idempotency_keys(now=now, dry_run=dry_run, batch_size=batch_size)
    return CategoryResult(removed=purged.removed, sample=purged.sample, detail=purged.detail)


def usage_events(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """Raw usage events older than USAGE_EVENT_RETENTION_DAYS that nothing needs any more:
    those their hour's aggregate already includes (an aggregate of the same
    organization, metric and hour, rebuilt after the event arrived), and those
    of closed organizations (never aggregated). A late event its hour was not
    rebuilt for is kept, so a backfill can still count it. (Events of deleted
    organizations go with them: the foreign key cascades.)"""
    days = settings.USAGE_EVENT_RETENTION_DAYS
    if days < 1:
        return CategoryResult(skipped=f"USAGE_EVENT_RETENTION_DAYS must be at least 1, is {days}")
    cutoff = now - timedelta(days=days)
    event = apps.get_model("billing", "UsageEvent")
    aggregate = apps.get_model("billing", "UsageAggregate")
    hour_before = ExpressionWrapper(
        OuterRef("occurred_at") - timedelta(hours=1), output_field=models.DateTimeField()
    )
    counted = aggregate.objects.filter(
        organization_id=OuterRef("organization_id"),
        metric=OuterRef("metric"),
        hour__lte=OuterRef("occurred_at"),
        hour__gt=hour_before,
        updated_at__gte=OuterRef("received_at"),
    )
    queryset = event.objects.filter(occurred_at__lt=cutoff).filter(
        Exists(counted) | Q(organization__status="closed")
    )
    result = _batched_delete(queryset, dry_run=dry_run, batch_size=batch_size)
    result.detail = {"retention_days": days, "cutoff": cutoff.isoformat()}
    return result


def no_referenced_invoice_files() -> set[str]:
    """The referenced-files provider for today: billing stores no invoice yet.

    Point INVOICE_REFERENCED_FILES_PROVIDER at a function returning the
    storage names of every invoice row's PDF (e.g. `billing.selectors.
    invoice_pdf_names`) when billing has invoices.
    """
    return set()


def _stored_files(storage: Storage, prefix: str) -> Iterator[str]:
    """Every file under `prefix` in the storage, recursively."""
    try:
        directories, files = storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        yield posixpath.join(prefix, name)
    for directory in directories:
        yield from _stored_files(storage, posixpath.join(prefix, directory))


def invoice_pdfs(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """Stored files under INVOICE_PDF_PREFIX that no invoice row names.

    Which names are referenced comes from INVOICE_REFERENCED_FILES_PROVIDER;
    without one the category is skipped: deleting "every file nothing is
    known to reference" would delete every invoice. Files younger than
    INVOICE_PDF_ORPHAN_MIN_AGE_HOURS are kept, so a PDF stored just before
    its invoice row commits is not taken for an orphan.
    """
    prefix = settings.INVOICE_PDF_PREFIX.rstrip("/")
    provider_path = settings.INVOICE_REFERENCED_FILES_PROVIDER
    detail: dict[str, Any] = {"prefix": prefix + "/"}
    if not provider_path:
        return CategoryResult(
            skipped="INVOICE_REFERENCED_FILES_PROVIDER is not set (billing stores no invoices yet)",
            detail=detail,
        )
    provider: Callable[[], set[str]] = import_string(provider_path)
    referenced = set(provider())
    min_age = timedelta(hours=settings.INVOICE_PDF_ORPHAN_MIN_AGE_HOURS)
    storage = storages["invoices"] if "invoices" in settings.STORAGES else storages["default"]
    orphans = [
        name
        for name in _stored_files(storage, prefix)
        if name not in referenced and storage.get_modified_time(name) < now - min_age
    ]
    if dry_run:
        return CategoryResult(removed=len(orphans), sample=orphans[:SAMPLE_SIZE], detail=detail)
    for name in orphans:
        storage.delete(name)
    return CategoryResult(removed=len(orphans), detail=detail)


def job_runs(*, now: datetime, dry_run: bool, batch_size: int) -> CategoryResult:
    """Job runs past their retention, through the jobs platform's own service
    (jobs.retention; this app never writes JobRun rows itself)."""
    purged = run_retention.purge_job_runs(now=now, dry_run=dry_run, batch_size=batch_size)
    return CategoryResult(
        removed=purged.removed, skipped=purged.skipped, sample=purged.sample, detail=purged.detail
    )


Category = Callable[..., CategoryResult]

# The order the job runs them in; each is isolated from the others' failures.
CATEGORIES: dict[str, Category] = {
    "invoice_pdfs": invoice_pdfs,
    "usage_events": usage_events,
    "outbox": outbox,
    "task_results": task_results,
    "sessions": sessions,
    "idempotency_keys": idempotency_keys,
    "job_runs": job_runs,
}

"""What a job is handed: its slot, tenant, params, and ways to report back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from jobs import run_log
from jobs.models import JobItemFailure, JobRun

COUNT_FIELDS = ("processed", "succeeded", "failed", "skipped")
PROGRESS_WRITE_INTERVAL = 1.0  # seconds between progress writes to the database
CANCEL_CHECK_INTERVAL = 0.5  # seconds between looks at the run's cancellation flag


class RunCanceled(BaseException):
    """Raised at an item or batch boundary once staff asked the run to stop.

    A BaseException, like KeyboardInterrupt, so a job's `except Exception`
    around one item does not swallow it; the runner ends the run `canceled`
    with its counts so far and its checkpoint (jobs.cancel).
    """


class JobAborted(Exception):
    """Raised by a job that decided to stop and change nothing (e.g. a guard).

    The run ends `failed` with this message and the summary given.
    """

    def __init__(self, message: str, *, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


def run_actor(*, job: str, run_id: int | None) -> str:
    """How a job run signs what it changes: "job:subscriptions.expire#42"."""
    return f"job:{job}#{run_id}" if run_id else f"job:{job}"


class JobContext:
    def __init__(
        self,
        *,
        run: JobRun,
        tenant: Any,
        params: dict[str, Any],
        resume_state: Any = None,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        self.run = run
        self.job = run.job
        self.slot: datetime = run.slot or run.created_at
        self.tenant = tenant
        self.tenant_key: str = run.tenant
        self.dry_run: bool = run.dry_run
        self.params = params
        self.resume_state = resume_state
        self.only_items: set[str] | None = (
            set(run.only_items) if run.only_items is not None else None
        )
        self.counts = dict.fromkeys(COUNT_FIELDS, 0)
        # Tenants a default-schedule run leaves to their own schedules (jobs.custom_schedules).
        self.excluded_tenants: frozenset[str] = frozenset()
        self.log = logging.getLogger(f"jobs.run.{run.job}")
        self._on_progress = on_progress
        self._last_progress_write = 0.0
        self._last_cancel_check = 0.0
        self._cancel_requested = False

    @property
    def actor(self) -> str:
        """Who the audit trail records for this run's changes."""
        return run_actor(job=self.job, run_id=self.run.pk)

    @property
    def organization_id(self) -> int | None:
        """The tenant's primary key, or None for a run across all tenants."""
        return self.tenant.pk if self.tenant is not None else None

    def progress(self, done: int, total: int | None = None) -> None:
        if self._on_progress:
            self._on_progress(done, total)
        now = time.monotonic()
        final = total is not None and done >= total
        if final or now - self._last_progress_write >= PROGRESS_WRITE_INTERVAL:
            self._last_progress_write = now
            JobRun.objects.filter(pk=self.run.pk).update(
                progress_done=done,
                progress_total=total,
                heartbeat_at=timezone.now(),
                **self.counts,  # so a running run's page shows its counts so far
            )
            run_log.flush(self.run.pk)

    def count(self, **n: int) -> None:
        """Add to the run's counts (processed, succeeded, failed, skipped)."""
        for key, value in n.items():
            if key not in self.counts:
                raise ValueError(f"unknown count {key!r}; use one of {COUNT_FIELDS}")
            self.counts[key] += value

    def item_failed(self, key: Any, error: Any) -> None:
        """Record one item's failure; the run goes on and ends `partial`."""
        key = str(key)[:200]
        message = str(error) or type(error).__name__
        self.counts["failed"] += 1
        self.log.warning("item %s failed: %s", key, message)
        updated = JobItemFailure.objects.filter(run=self.run, item_key=key).update(
            error=message, attempts=F("attempts") + 1
        )
        if not updated:
            JobItemFailure.objects.create(run=self.run, item_key=key, error=message)

    def should_process(self, key: Any) -> bool:
        """False for items outside a "rerun failed items" selection."""
        return self.only_items is None or str(key) in self.only_items

    def checkpoint(self, state: Any) -> None:
        """Persist resumable state now, so a rerun after a crash continues.

        A batch boundary: once the state is saved, a requested cancellation
        stops the run here (RunCanceled), and a rerun continues from `state`.
        """
        JobRun.objects.filter(pk=self.run.pk).update(checkpoint=state, heartbeat_at=timezone.now())
        self.run.checkpoint = state
        self.raise_if_cancelled()

    def cancelled(self) -> bool:
        """True once staff asked this run to stop (looked up at most every
        CANCEL_CHECK_INTERVAL seconds). A job stops at its next item or batch
        boundary, keeping what it did: `raise_if_cancelled()` does that."""
        if self._cancel_requested:
            return True
        now = time.monotonic()
        if self._last_cancel_check and now - self._last_cancel_check < CANCEL_CHECK_INTERVAL:
            return False
        self._last_cancel_check = now
        self._cancel_requested = JobRun.objects.filter(
            pk=self.run.pk, cancel_requested_at__isnull=False
        ).exists()
        return self._cancel_requested

    def raise_if_cancelled(self) -> None:
        if self.cancelled():
            raise RunCanceled(f"run #{self.run.pk} canceled")

    def fan_out(self, target: str, *, items: Any, chunk_size: int, **options: Any) -> Any:
        """Process `items` in chunks on cluster workers (see jobs.fanout.fan_out)."""
        from jobs.fanout import fan_out

        return fan_out(self, target, items=items, chunk_size=chunk_size, **options)

"""Each run's own log: the lines its job and the platform logged while it ran.

A handler on the root logger keeps the records (INFO and up) whose log
context (jobs.logging.job_log_context) names the run, and appends them to
the run's JobRunLog now and then and when the run ends, keeping the last
JOBS_RUN_LOG_LINES in time order: the run page and `GET
/api/jobs/runs/<id>?log=1` read them from there. The process that runs the
job and every worker that takes a chunk of its fan-out (jobs.fanout) append
to the same row, under a row lock, so the log holds all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs.logging import current_context
from jobs.models import JobRunLog

FLUSH_INTERVAL = 2.0  # seconds between writes of a running run's log


class RunLogCapture(logging.Handler):
    """Collects one run's lines; `flush_to_db()` stores the latest ones."""

    def __init__(self, run_id: int) -> None:
        super().__init__(level=logging.INFO)
        self.run_id = str(run_id)
        # Lines not written yet (the newest, if more arrive than the log keeps).
        self.pending: deque[dict[str, Any]] = deque(maxlen=_limit())
        self._lock = threading.Lock()
        self._flushed_at = 0.0
        self._writing = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._writing or (current_context().get("run_id") != self.run_id):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the caller's bug, not the log's
            message = str(record.msg)
        line = {
            "at": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message[:2000],
        }
        with self._lock:
            self.pending.append(line)

    def flush_to_db(self, *, force: bool = False) -> None:
        """Append the lines that arrived (at most every FLUSH_INTERVAL unless forced)."""
        now = time.monotonic()
        if not self.pending or (not force and now - self._flushed_at < FLUSH_INTERVAL):
            return
        with self._lock:
            lines = list(self.pending)
            self.pending.clear()
        self._flushed_at = now
        self._writing = True  # the database's own log lines are not the run's
        try:
            append_lines(int(self.run_id), lines)
        finally:
            self._writing = False


def _limit() -> int:
    return max(1, settings.JOBS_RUN_LOG_LINES)


def append_lines(run_id: int, lines: list[dict[str, Any]]) -> None:
    """Add `lines` to the run's log, keeping the latest JOBS_RUN_LOG_LINES in
    time order; the row lock makes the writers of one run take turns."""
    with transaction.atomic():
        log, _ = JobRunLog.objects.select_for_update().get_or_create(run_id=run_id)
        log.lines = sorted([*log.lines, *lines], key=lambda line: line["at"])[-_limit() :]
        log.updated_at = timezone.now()
        log.save(update_fields=["lines", "updated_at"])


_active: dict[int, RunLogCapture] = {}


def attach(run_id: int) -> RunLogCapture:
    capture = RunLogCapture(run_id)
    logging.getLogger().addHandler(capture)
    _active[run_id] = capture
    return capture


def attach_unless_active(run_id: int) -> RunLogCapture | None:
    """A chunk worker's capture of the run's lines, unless this process already
    captures them (the parent run, working on its own chunks)."""
    return None if run_id in _active else attach(run_id)


def detach(capture: RunLogCapture) -> None:
    logging.getLogger().removeHandler(capture)
    _active.pop(int(capture.run_id), None)
    capture.flush_to_db(force=True)


def flush(run_id: int) -> None:
    """Write a running run's new lines (at most every FLUSH_INTERVAL), so its
    page shows them while it runs; called with its progress writes."""
    capture = _active.get(run_id)
    if capture is not None:
        capture.flush_to_db()


def lines_of(run_id: int) -> list[dict[str, Any]]:
    return JobRunLog.objects.filter(run_id=run_id).values_list("lines", flat=True).first() or []

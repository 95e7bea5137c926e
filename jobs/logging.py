"""Structured log lines: every record carries job, run id and tenant when known."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "job_log_context", default=None
)


class JobContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get() or {}
        record.job = ctx.get("job", "-")
        record.run_id = ctx.get("run_id", "-")
        record.tenant = ctx.get("tenant", "-") or "-"
        return True


@contextlib.contextmanager
def job_log_context(*, job: str, run_id: int | None, tenant: str) -> Iterator[None]:
    token = _current.set({"job": job, "run_id": str(run_id or "-"), "tenant": tenant})
    try:
        yield
    finally:
        _current.reset(token)

"""Structured log lines: every record carries job, run id and tenant when known.

Two formats (LOG_FORMAT): `text`, the readable `key=value` line, and `json`,
one JSON object per line for a log platform to index (`JsonFormatter`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "job_log_context", default=None
)

CONTEXT_FIELDS = ("job", "run_id", "tenant", "request_id")


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


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger,
    message, job, run_id, tenant, request_id (null when unknown), the
    traceback as a string inside the object, and any `extra=` fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        extra = dict(message_dict)
        traceback = extra.pop("exc_info", None)
        stack = extra.pop("stack_info", None)
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, extra)  # message and any extra= fields
        log_data.pop("asctime", None)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            log_data[field] = None if value in (None, "", "-") else value
        if traceback:
            log_data["traceback"] = traceback
        if stack:
            log_data["stack"] = stack


def current_context() -> dict[str, str]:
    """The job, run id and tenant of the code running now (empty outside a run)."""
    return _current.get() or {}

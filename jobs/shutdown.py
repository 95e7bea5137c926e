"""Interrupting a job when its cluster's shutdown grace is over.

A cluster worker that is still running a job when Q_SHUTDOWN_GRACE_SECONDS
are nearly up gets SIGUSR1 from its sentinel (jobs.cluster). The handler
raises `ShutdownInterrupt` in the job's own code only (inside
`interruptible()`), never in the platform's bookkeeping around it: there it
only notes the request, and the next `interruptible()` raises at once. The
runner records the run `interrupted` and hands it to the next cluster, which
continues it from its checkpoint.

`ShutdownInterrupt` is a BaseException, like KeyboardInterrupt: a job's
`except Exception` (per-item isolation) must not swallow it and carry on.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

INTERRUPT_SIGNAL = signal.SIGUSR1

_depth = 0  # how deep the worker is inside job code (nested: a chunk inside a run)
_requested = False


class ShutdownInterrupt(BaseException):
    """The cluster is shutting down and this job's grace is over."""

    def __init__(self, message: str = "interrupted: the cluster shut down") -> None:
        super().__init__(message)


def requested() -> bool:
    return _requested


def request_interrupt(signum: int | None = None, frame: Any = None) -> None:
    """Signal handler (and callable from tests): interrupt the job code now if
    it is running, else as soon as job code starts."""
    global _requested
    first = not _requested
    _requested = True
    if first and _depth > 0:
        raise ShutdownInterrupt()


def reset() -> None:
    """Forget a request (tests; a worker process never needs this)."""
    global _requested, _depth
    _requested = False
    _depth = 0


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Mark job code: an interrupt requested before or during it raises here."""
    global _depth
    if _requested:
        raise ShutdownInterrupt()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def install_handler() -> None:
    signal.signal(INTERRUPT_SIGNAL, request_interrupt)

"""A faster scheduler tick for django-q2 clusters (JOBS_SCHEDULER_POLL_SECONDS).

django-q2's sentinel runs its scheduler every 30 s, hard-coded in its guard
loop. A schedule finer than that (6-field cron such as `*/5 * * * * *`) then
fires only every 30 s and, with `catch_up` off, its other slots are skipped;
a minute schedule starts up to 30 s late. With JOBS_SCHEDULER_POLL_SECONDS
above 0, each cluster's sentinel also runs the same scheduler from a thread
that often.

Overlapping ticks (this thread, the guard's own call, other clusters) are
safe: the scheduler takes due Schedule rows with `SELECT ... FOR UPDATE` and
advances `next_run` in the same transaction, and the JobRun slot constraint
refuses a second run of a slot anyway.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


def install() -> bool:
    """Make django-q2 start sentinels that tick their scheduler every
    JOBS_SCHEDULER_POLL_SECONDS. False (nothing changed) when that is 0."""
    interval = float(settings.JOBS_SCHEDULER_POLL_SECONDS or 0)
    if interval <= 0:
        return False
    from django_q import cluster

    if getattr(cluster.Sentinel, "jobs_scheduler_tick", False):
        return True
    cluster.Sentinel = _polling_sentinel(cluster.Sentinel)
    return True


def _polling_sentinel(base: type) -> type:
    class PollingSentinel(base):  # type: ignore[misc, valid-type]
        jobs_scheduler_tick = True

        def guard(self) -> None:
            from django_q.conf import Conf

            if Conf.SCHEDULER:
                SchedulerTicker(
                    interval=float(settings.JOBS_SCHEDULER_POLL_SECONDS),
                    stop_event=self.stop_event,
                    broker=self.broker,
                ).start()
            super().guard()

    PollingSentinel.__name__ = PollingSentinel.__qualname__ = "PollingSentinel"
    return PollingSentinel


class SchedulerTicker(threading.Thread):
    """Runs django-q2's scheduler every `interval` seconds until `stop_event`."""

    def __init__(self, *, interval: float, stop_event: Any, broker: Any = None) -> None:
        super().__init__(name="jobs-scheduler-tick", daemon=True)
        self.interval = interval
        self.stop_event = stop_event
        self.broker = broker
        self.ticks = 0

    def run(self) -> None:
        from django_q.scheduler import scheduler

        try:
            while not self.stop_event.wait(self.interval):
                try:
                    scheduler(broker=self.broker)
                except Exception:  # django-q2 logs its own; a tick must not end the thread
                    logger.exception("scheduler tick failed")
                self.ticks += 1
        finally:
            connection.close()

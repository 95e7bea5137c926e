"""The platform's tick inside each cluster's sentinel (started by jobs.cluster).

* Every JOBS_SCHEDULER_POLL_SECONDS (default 1) it runs django-q2's
  scheduler, whose own call comes only every 30 s (hard-coded in its guard
  loop): a minute slot would start ~19 s late on average and a schedule finer
  than 30 s (6-field cron such as `*/5 * * * * *`) would skip slots. When
  nothing is due, a tick is one `SELECT ... FOR UPDATE` of due Schedule rows.
* Every tick it also hands retry attempts whose time has come to the broker
  (`jobs.retry.send_due_retries`) and fires staff's own schedules
  (`jobs.custom_schedules.fire_due`): one indexed SELECT each when none is due.
* Every SWEEP_SECONDS it sends again the tasks of queued and interrupted runs
  that no cluster took within JOBS_QUEUED_LOST_AFTER_SECONDS
  (`jobs.enqueue.requeue_lost_runs`): a broker restarted without persistence
  loses them.

Overlapping ticks (this thread, the guard's own call, other clusters) are
safe: the scheduler takes due Schedule rows with `SELECT ... FOR UPDATE` and
advances `next_run` in the same transaction, the JobRun slot constraint
refuses a second run of a slot anyway, and a lost run is sent again by one
cluster only (a conditional UPDATE).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 15.0


class SchedulerTicker(threading.Thread):
    """Runs django-q2's scheduler every `interval` seconds (0: never) and the
    lost-run sweep every `sweep_interval` seconds, until `stop_event`."""

    def __init__(
        self,
        *,
        interval: float,
        stop_event: Any,
        broker: Any = None,
        sweep_interval: float | None = None,
    ) -> None:
        super().__init__(name="jobs-scheduler-tick", daemon=True)
        self.interval = interval
        self.stop_event = stop_event
        self.broker = broker
        if sweep_interval is None:
            lost_after = float(settings.JOBS_QUEUED_LOST_AFTER_SECONDS)
            sweep_interval = min(SWEEP_SECONDS, max(lost_after / 4, 0.5)) if lost_after > 0 else 0
        self.sweep_interval = sweep_interval
        self.ticks = 0
        self.sweeps = 0

    def run(self) -> None:
        from django_q.scheduler import scheduler

        from jobs.custom_schedules import fire_due
        from jobs.enqueue import requeue_lost_runs
        from jobs.retry import send_due_retries

        wait = min((x for x in (self.interval, self.sweep_interval) if x > 0), default=0)
        if wait <= 0:
            return
        next_sweep = time.monotonic() + self.sweep_interval
        try:
            while not self.stop_event.wait(wait):
                if self.interval > 0:
                    try:
                        scheduler(broker=self.broker)
                    except Exception:  # django-q2 logs its own; a tick must not end the thread
                        logger.exception("scheduler tick failed")
                    self.ticks += 1
                try:
                    send_due_retries()
                    fire_due()
                except Exception:  # the database may be restarting; next tick
                    logger.exception("sending due retries or custom schedules failed")
                if self.sweep_interval > 0 and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.sweep_interval
                    try:
                        # A long-lived thread: drop a connection the database closed
                        # (a restart) or that is past CONN_MAX_AGE before using it.
                        close_old_connections()
                        requeue_lost_runs()
                    except Exception:  # the database may be restarting; next sweep
                        logger.exception("lost-run sweep failed")
                    self.sweeps += 1
        finally:
            connection.close()

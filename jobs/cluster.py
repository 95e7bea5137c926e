"""How a django-q2 cluster stops: within Q_SHUTDOWN_GRACE_SECONDS, losing no work.

django-q2's own stop (SIGTERM or SIGINT to `qcluster`) has no bound. Its
sentinel waits for the pusher, which blocks in `task_queue.put` while the
local queue is full (QUEUE_LIMIT, workers squared); then it puts the workers'
STOP pills *behind* the tasks already prefetched into that queue and waits,
with no timeout, for every worker to finish its current task and all the
prefetched ones. A job that runs for an hour holds `docker stop`, systemd or
Kubernetes for an hour, until they SIGKILL it and leave the run `running`
until its heartbeat goes stale. A SIGTERM to the whole process group
(systemd's default) killed the sentinel and the workers at once, mid-job.

The sentinel installed here (`GracefulSentinel`) stops like this:

1. workers stop taking tasks: the pusher is told to stop, and tasks already
   prefetched into the local queue are handed back to the broker (a worker
   that picks one up after the stop began hands it back too);
2. running jobs get the grace to finish, less INTERRUPT_HEADROOM seconds;
3. then their workers get SIGUSR1 (jobs.shutdown): the job is interrupted,
   its run recorded `interrupted` and handed to the next cluster, which
   continues it from its checkpoint (jobs.runner);
4. at the grace every process of the cluster still alive is killed, so the
   whole cluster is gone within Q_SHUTDOWN_GRACE_SECONDS.

Workers ignore SIGTERM (the sentinel decides), and the sentinel takes a
SIGTERM as a stop request, so a signal to the whole process group stops the
cluster the same way. SIGINT (Ctrl-C) reaches the main process as before.

It also runs the scheduler every JOBS_SCHEDULER_POLL_SECONDS
(jobs.scheduler_tick) instead of django-q2's 30 s.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from jobs import shutdown

logger = logging.getLogger(__name__)

INTERRUPT_HEADROOM = 5.0  # seconds before the grace's end that running jobs are interrupted
STOP = "STOP"  # django-q2's poison pill

# Set by the sentinel when its stop begins; workers are forked after it is
# made, so they share it.
_stopping: Any = None


def grace_seconds() -> float:
    return max(float(settings.Q_SHUTDOWN_GRACE_SECONDS), 1.0)


def install() -> None:
    """Make `qcluster` start graceful sentinels and workers. Idempotent.

    Called from JobsConfig.ready: django_q.cluster sets Django up when it is
    imported, so it can only be imported once the app registry is ready.
    """
    from django_q import cluster

    if getattr(cluster.Sentinel, "jobs_graceful", False):
        return
    cluster.Sentinel = _graceful_sentinel(cluster.Sentinel)
    # The sentinel spawns (and recognises) workers by this module global.
    cluster.worker = graceful_worker


def return_to_broker(task: dict[str, Any], broker: Any) -> None:
    """Give a task taken from the broker back, unrun, for any cluster to take."""
    from django_q.brokers.orm import ORM
    from django_q.signing import SignedPackage

    ack_id = task.get("ack_id")
    try:
        if ack_id is not None and isinstance(broker, ORM):
            # Still in the queue table, locked for this cluster: unlock it.
            ORM.get_connection().filter(pk=ack_id).update(lock=timezone.now())
        else:
            package = {k: v for k, v in task.items() if k not in ("ack_id", "cluster")}
            broker.enqueue(SignedPackage.dumps(package))
        logger.info("task %s handed back to the broker (cluster stopping)", task.get("name"))
    except Exception:
        logger.exception("could not hand task %s back to the broker", task.get("name"))


class _GatedQueue:
    """The worker's view of the task queue: once the cluster is stopping, a
    task it receives goes back to the broker and the worker stops. It also
    stops if its sentinel died (no STOP would ever come)."""

    def __init__(self, task_queue: Any, stopping: Any) -> None:
        self.task_queue = task_queue
        self.stopping = stopping
        self.parent = os.getppid()
        self.broker: Any = None

    def get(self) -> Any:
        while True:
            if self.stopping is not None and self.stopping.is_set():
                self._hand_back_pending()
                return STOP
            try:
                task = self.task_queue.get(timeout=1)
            except queue_module.Empty:
                if os.getppid() != self.parent:
                    logger.warning("sentinel gone; worker %s stops", os.getpid())
                    return STOP
                continue
            if task == STOP or self.stopping is None or not self.stopping.is_set():
                return task
            self._give_back(task)
            return STOP

    def _hand_back_pending(self) -> None:
        while True:
            try:
                task = self.task_queue.get_nowait()
            except (queue_module.Empty, OSError, ValueError):
                return
            if task == STOP:
                return
            self._give_back(task)

    def _give_back(self, task: dict[str, Any]) -> None:
        from django_q.brokers import get_broker

        if self.broker is None:
            self.broker = get_broker()
        return_to_broker(task, self.broker)


def graceful_worker(task_queue: Any, result_queue: Any, timer: Any, timeout: int = 0) -> None:
    """django-q2's worker, with the stop rules above (target of the sentinel's workers)."""
    from django_q.worker import worker

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    shutdown.install_handler()
    try:
        worker(_GatedQueue(task_queue, _stopping), result_queue, timer, timeout)
    except shutdown.ShutdownInterrupt:
        logger.warning("worker %s: its job was interrupted at shutdown", os.getpid())
    finally:
        connections.close_all()


def _graceful_sentinel(base: type) -> type:
    class GracefulSentinel(base):  # type: ignore[misc, valid-type]
        jobs_graceful = True

        def start(self) -> None:
            global _stopping
            _stopping = multiprocessing.get_context("fork").Event()
            self.stopping = _stopping
            # A group-wide SIGTERM asks for the same stop as the main process
            # does. Setting the event from a thread: setting a multiprocessing
            # Event inside a handler that interrupted a wait on it deadlocks.
            signal.signal(
                signal.SIGTERM,
                lambda *_: threading.Thread(target=self.stop_event.set, daemon=True).start(),
            )
            super().start()

        def guard(self) -> None:
            from django_q.conf import Conf

            from jobs.scheduler_tick import SchedulerTicker

            interval = float(settings.JOBS_SCHEDULER_POLL_SECONDS or 0) if Conf.SCHEDULER else 0
            SchedulerTicker(
                interval=interval, stop_event=self.stop_event, broker=self.broker
            ).start()
            super().guard()

        def stop(self) -> None:
            from django_q.status import Stat

            grace = grace_seconds()
            began = time.monotonic()
            interrupt_at = began + max(grace - INTERRUPT_HEADROOM, grace * 0.5)
            kill_at = began + max(grace - 1.5, grace * 0.8)  # then the monitor's turn
            monitor_until = began + max(grace - 0.5, grace * 0.95)
            logger.info(
                "stopping: workers take no new tasks; running jobs have %.0f s, then are "
                "interrupted and continued by the next cluster",
                interrupt_at - began,
            )
            self.stopping.set()
            self.event_out.set()
            Stat(self).save()
            while self.pusher.is_alive() and time.monotonic() < interrupt_at:
                self._hand_back_prefetched()
                time.sleep(0.1)
            if self.pusher.is_alive():
                self.pusher.kill()
            self._hand_back_prefetched()
            for _ in self.pool:
                try:
                    self.task_queue.put_nowait(STOP)
                except queue_module.Full:
                    break
            interrupted = False
            while self.pool:
                self.pool = [p for p in self.pool if p.is_alive()]
                now = time.monotonic()
                if self.pool and not interrupted and now >= interrupt_at:
                    interrupted = True
                    for p in self.pool:
                        logger.warning("interrupting worker %s: shutdown grace is over", p.pid)
                        _signal(p, shutdown.INTERRUPT_SIGNAL)
                if self.pool and now >= kill_at:
                    for p in self.pool:
                        logger.error("killing worker %s: still alive at the grace's end", p.pid)
                        p.kill()
                    for p in self.pool:
                        p.join(timeout=1)
                    self.pool = []
                    break
                time.sleep(0.1)
                Stat(self).save()
            self.result_queue.put(STOP)
            while self.monitor.is_alive() and time.monotonic() < monitor_until:
                time.sleep(0.1)
            if self.monitor.is_alive():
                logger.error("killing the monitor: still alive at the grace's end")
                self.monitor.kill()
            # Nothing is left to read them: don't wait at exit to flush the pipes.
            self.task_queue.cancel_join_thread()
            self.result_queue.cancel_join_thread()
            Stat(self).save()
            logger.info("stopped in %.1f s", time.monotonic() - began)

        def _hand_back_prefetched(self) -> None:
            while True:
                try:
                    task = self.task_queue.get_nowait()
                except queue_module.Empty:
                    return
                if task == STOP:
                    continue
                return_to_broker(task, self.broker)

    GracefulSentinel.__name__ = GracefulSentinel.__qualname__ = "GracefulSentinel"
    return GracefulSentinel


def _signal(process: Any, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signum)

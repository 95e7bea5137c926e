"""The scheduler runs nothing but the platform's runner and heartbeat.

A django-q2 Schedule row names any dotted function (`func`), its arguments, a
result `hook` and a `chain` of further tasks; django-q2's scheduler enqueues
whatever a due row says. Rows are made only from the registry
(`sync_schedules`), and the admin cannot write them, but a row written by
other means (SQL, a shell, a restored dump) must still be harmless. So
django-q2's `pre_enqueue` signal, which hands over the task dictionary before
it is signed and pushed, rewrites any task the scheduler makes from a row that
is not one of ours into a call of `refused`: the row's function is never
called. `refused` runs on a worker after the scheduler's transaction has
committed, switches such rows off (`repeats=0`) and records the refusal as a
JobAction (so the audit trail shows it) and an error log line.

The scheduler is recognised by its frame on the stack (django-q2 1.11's
`django_q.scheduler.scheduler` calls `async_task` directly); its loop variable
`s` is the row, so exactly that row is switched off. A test drives the real
scheduler, so an upgrade that changes this fails loudly.

Tasks enqueued by code (the platform's own `async_task` calls, a superuser's
"resubmit" in the admin) are not the scheduler's and pass unchanged: their
function was chosen by code, not read from a row.
"""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import Any

from django.db import transaction
from django.db.models import Q
from django_q import scheduler as django_q_scheduler
from django_q.models import Schedule
from django_q.signals import pre_enqueue

from jobs.models import JobAction
from jobs.schedules import HEARTBEAT_FUNC, RUNNER

logger = logging.getLogger(__name__)

SCHEDULE_FUNCS = frozenset({RUNNER, HEARTBEAT_FUNC})
REFUSED_FUNC = "jobs.task_guard.refused"
REFUSE_ACTION = "refuse_schedule"
_SCHEDULER_CODE = django_q_scheduler.scheduler.__code__
_MAX_SHOWN = 200


def dotted_name(func: Any) -> str:
    """A task's function as the dotted path the worker would import."""
    if isinstance(func, str):
        return func
    module = getattr(func, "__module__", "") or ""
    name = getattr(func, "__qualname__", "") or repr(func)
    return f"{module}.{name}" if module else name


def allowed_schedule_task(task: dict[str, Any]) -> bool:
    """One of ours: the runner or the heartbeat, with no hook or chain to
    call anything else afterwards."""
    return (
        dotted_name(task.get("func")) in SCHEDULE_FUNCS
        and not task.get("hook")
        and not task.get("chain")
    )


def foreign_schedules() -> Q:
    """Schedule rows the scheduler refuses: any other function, or a hook."""
    return ~Q(func__in=SCHEDULE_FUNCS) | (Q(hook__isnull=False) & ~Q(hook=""))


def _scheduler_frame() -> FrameType | None:
    """django-q2's scheduler's frame when it is the one enqueueing this task
    (it calls `async_task` once per due row, from its own loop)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _SCHEDULER_CODE:
            return frame
        frame = frame.f_back
    return None


def guard_scheduled_task(sender: Any, task: dict[str, Any], **kwargs: Any) -> None:
    """pre_enqueue receiver: neutralise a scheduled task that is not ours."""
    if allowed_schedule_task(task):
        return
    frame = _scheduler_frame()
    if frame is None:
        return
    row = frame.f_locals.get("s")  # the scheduler's loop variable: the due Schedule
    detail = {
        "func": dotted_name(task.get("func"))[:_MAX_SHOWN],
        "hook": str(task.get("hook") or "")[:_MAX_SHOWN],
        "chain": bool(task.get("chain")),
        "schedule": str(getattr(row, "name", "") or task.get("group") or "")[:_MAX_SHOWN],
        "schedule_id": getattr(row, "pk", None) if isinstance(row, Schedule) else None,
    }
    logger.error(
        "refused a schedule whose function is not the platform's runner: %s (schedule %s); "
        "it was not called",
        detail["func"],
        detail["schedule"],
    )
    task["func"] = REFUSED_FUNC
    task["args"] = ()
    task["kwargs"] = detail
    for key in ("hook", "chain", "cached", "iter_count", "iter_cached"):
        task.pop(key, None)


def refused(**detail: Any) -> int:
    """Worker side of a refusal: switch the row off and record it.

    Runs after the scheduler committed (so its save cannot undo repeats=0).
    Returns how many rows were switched off.
    """
    rows = Schedule.objects.exclude(repeats=0)
    if detail.get("schedule_id") is not None:
        rows = rows.filter(pk=detail["schedule_id"])
    else:
        rows = rows.filter(foreign_schedules())
    with transaction.atomic():
        count = rows.update(repeats=0)
        JobAction.objects.create(
            actor="scheduler",
            action=REFUSE_ACTION,
            job=str(detail.get("schedule") or "")[:100],
            detail={**detail, "switched_off": count},
        )
    logger.error(
        "refused schedule %s (func %s): not run; %s schedule row(s) switched off",
        detail.get("schedule"),
        detail.get("func"),
        count,
    )
    return count


def install() -> None:
    pre_enqueue.connect(guard_scheduled_task, dispatch_uid="jobs.task_guard")

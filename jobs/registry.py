"""The one list of jobs. The CLI, the API, the admin and sync_schedules read it.

Business apps declare jobs in their `jobs.py`, imported from `AppConfig.ready`:

    @job("subscriptions.expire", schedule="0 * * * *", queue="critical")
    def expire(ctx: JobContext, *, grace_days: int | None = None) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.cron import normalize_cron
from jobs.dependency_spec import Dependency, as_dependency
from jobs.params import Param, params_from_signature
from jobs.retry_policy import NO_RETRY, RetryPolicy

QUEUES = ("critical", "normal", "low", "default")


class UnknownJob(LookupError):
    pass


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Callable[..., Any]
    schedule: str | None  # normalized cron, or None for on-demand jobs
    queue: str
    timeout: int
    description: str
    params: tuple[Param, ...] = field(default=())
    supports_item_rerun: bool = False
    retry: RetryPolicy = NO_RETRY
    after: tuple[Dependency, ...] = ()
    after_timeout: int = 6 * 3600
    tenant_schedules_exclude: bool = False
    # What a real run changes that a customer sees ("suspends subscriptions,
    # sends email"); a non-empty impact makes the admin confirm a real start
    # after showing what a dry run says it will do.
    impact: str = ""
    ask_reason: bool = False  # the confirmation asks why (recorded)
    # summary -> sentence for the confirmation page ("expires 1,234 ...").
    preview: Callable[[dict[str, Any]], str] | None = None

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.impact)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "schedule": self.schedule,
            "queue": self.queue,
            "timeout": self.timeout,
            "params": [p.describe() for p in self.params],
            "supports_item_rerun": self.supports_item_rerun,
            "retry": self.retry.describe(),
            "after": [d.job for d in self.after],
            "impact": self.impact,
        }


_REGISTRY: dict[str, JobSpec] = {}


def job(
    name: str,
    *,
    schedule: str | None = None,
    queue: str = "default",
    timeout: int = 600,
    supports_item_rerun: bool = False,
    retry: RetryPolicy | None = None,
    after: tuple[Dependency | str, ...] = (),
    after_timeout: int = 6 * 3600,
    tenant_schedules_exclude: bool = False,
    impact: str = "",
    ask_reason: bool = False,
    preview: Callable[[dict[str, Any]], str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a job. `schedule` is 5-field cron or 6-field with seconds first;
    `retry` how a transient failure is retried (jobs.retry); `after` the jobs
    whose run for the same period a scheduled slot waits for, at most
    `after_timeout` seconds (jobs.dependencies); `tenant_schedules_exclude`:
    the default schedule's run leaves out tenants with their own schedule
    (`ctx.excluded_tenants`, jobs.custom_schedules).

    `impact` says what a real run changes that customers see or receive; such
    a job is started for real from the admin only after a dry-run preview
    (`preview(summary)` puts that dry run's summary in words) and, with
    `ask_reason`, a reason.
    """
    if queue not in QUEUES:
        raise ValueError(f"job {name}: queue must be one of {QUEUES}, not {queue!r}")
    if "." not in name:
        raise ValueError(f"job name {name!r} must be dotted, as app.job")
    cron = normalize_cron(schedule) if schedule else None

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        existing = _REGISTRY.get(name)
        if existing and existing.func.__qualname__ != func.__qualname__:
            raise ValueError(f"job {name!r} is declared twice")
        doc = (func.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = JobSpec(
            name=name,
            func=func,
            schedule=cron,
            queue=queue,
            timeout=timeout,
            description=doc[0] if doc else "",
            params=params_from_signature(func),
            supports_item_rerun=supports_item_rerun,
            retry=retry or NO_RETRY,
            after=tuple(as_dependency(d) for d in after),
            after_timeout=after_timeout,
            tenant_schedules_exclude=tenant_schedules_exclude,
            impact=impact,
            ask_reason=ask_reason,
            preview=preview,
        )
        return func

    return register


def get_job(name: str) -> JobSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownJob(f"unknown job {name!r}") from None


def all_jobs() -> list[JobSpec]:
    return sorted(_REGISTRY.values(), key=lambda spec: spec.name)


def unregister(name: str) -> None:
    """For tests that declare throwaway jobs."""
    _REGISTRY.pop(name, None)

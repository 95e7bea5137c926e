"""System checks of the jobs platform's settings against the registry."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register

SCHEDULER_CADENCE_SECONDS = 30  # django-q2's sentinel, hard-coded


@register()
def sub_minute_schedules_need_the_poll(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """A schedule with a seconds field fires at its slots only if clusters look
    for due schedules more often than django-q2's 30 s (JOBS_SCHEDULER_POLL_SECONDS)."""
    from jobs.registry import all_jobs

    if settings.JOBS_SCHEDULER_POLL_SECONDS > 0:
        return []
    seconds_jobs = [s.name for s in all_jobs() if s.schedule and len(s.schedule.split()) == 6]
    if not seconds_jobs:
        return []
    return [
        Warning(
            f"{', '.join(seconds_jobs)}: a schedule with seconds, but clusters look for due "
            f"schedules only every {SCHEDULER_CADENCE_SECONDS} s; slots between are skipped.",
            hint="Set JOBS_SCHEDULER_POLL_SECONDS (e.g. 1) so every slot runs on time.",
            id="jobs.W001",
        )
    ]

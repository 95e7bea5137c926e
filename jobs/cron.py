"""Cron expressions as the systems we replace write them.

Accepted: classic 5-field cron (`m h dom mon dow`) and 6-field cron with
seconds first (`s m h dom mon dow`, as Spring and the Go engine write it, `?`
allowed). django-q2 hands the stored expression to croniter, which puts
seconds *last*, so a 6-field expression is stored in croniter's order, or as
5 fields when its seconds field is `0`.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from django.conf import settings


class CronError(ValueError):
    pass


def normalize_cron(expression: str) -> str:
    """Return the expression in the form django-q2's croniter reads, or raise."""
    fields = (expression or "").split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday) or 6 (second minute hour day month weekday)"
        )
    fields = ["*" if f == "?" else f for f in fields]
    if len(fields) == 6:
        seconds, rest = fields[0], fields[1:]
        fields = rest if seconds in ("0", "00") else [*rest, seconds]
    normalized = " ".join(fields)
    try:
        croniter(normalized)
    except (ValueError, KeyError) as exc:
        raise CronError(f"invalid cron expression {expression!r}: {exc}") from None
    return normalized


def scheduler_tz() -> ZoneInfo:
    return ZoneInfo(settings.SCHEDULER_TIMEZONE)


def next_runs(stored: str, *, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times after `after`, DST-correct in SCHEDULER_TIMEZONE.

    `stored` is an expression as `normalize_cron` returns it (what a Schedule
    row holds), not as a person writes it: normalizing again would read a
    stored 6-field expression's minute as its seconds. Returned in UTC.
    """
    it = croniter(stored, after.astimezone(scheduler_tz()))
    return [it.get_next(datetime).astimezone(ZoneInfo("UTC")) for _ in range(count)]

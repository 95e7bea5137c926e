"""How a job declares what its slot waits for (see jobs.dependencies)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


def same_slot(slot: datetime) -> datetime:
    return slot


def start_of_hour(slot: datetime) -> datetime:
    """The hourly slot at or before `slot` (it covers the hour before it)."""
    return slot.replace(minute=0, second=0, microsecond=0)


def start_of_day(slot: datetime) -> datetime:
    """The day's first slot (UTC): a job run then has seen the whole day before."""
    return slot.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Dependency:
    job: str
    slot: Callable[[datetime], datetime] = same_slot
    statuses: tuple[str, ...] = ("succeeded",)


def as_dependency(value: Dependency | str) -> Dependency:
    return value if isinstance(value, Dependency) else Dependency(value)

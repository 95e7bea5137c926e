"""A job's retry policy, as declared in the registry (see jobs.retry)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BACKOFFS = ("exponential", "fixed")


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first; delay before attempt n+1 is
    `base` (fixed) or `base * 2**(n-1)` (exponential), capped at `max`, times a
    random 0.5-1 with `jitter` so many failed runs do not come back together.
    `items`: a partial run's failed items get a new attempt (only for jobs
    declared `supports_item_rerun`)."""

    retries: int = 0
    backoff: str = "exponential"
    base: float = 300.0
    max: float = 3600.0
    jitter: bool = True
    items: bool = False

    def __post_init__(self) -> None:
        if self.backoff not in BACKOFFS:
            raise ValueError(f"backoff must be one of {BACKOFFS}, not {self.backoff!r}")
        if self.retries < 0 or self.base < 0 or self.max < 0:
            raise ValueError("retries, base and max must not be negative")

    def delay(self, failed_attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds from the end of attempt `failed_attempt` (1-based) to the next."""
        raw = self.base if self.backoff == "fixed" else self.base * 2 ** (failed_attempt - 1)
        seconds = min(raw, self.max)
        if self.jitter:
            seconds *= 0.5 + rand() / 2
        return seconds

    def describe(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "backoff": self.backoff,
            "base_seconds": self.base,
            "max_seconds": self.max,
            "jitter": self.jitter,
            "items": self.items,
        }


NO_RETRY = RetryPolicy()

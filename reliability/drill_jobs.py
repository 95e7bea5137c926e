"""Jobs that exist only for the drills (never in production's registry): the
clusters load them through `reliability.drill_settings`."""

from __future__ import annotations

import os

from jobs.context import JobContext
from jobs.registry import job
from jobs.retry_policy import RetryPolicy

FLAKY = "reliability.flaky"
FLAKY_FAILS = 2  # attempts that fail before one succeeds
ATTEMPT_LOG_ENV = "DRILL_ATTEMPT_LOG"


@job(
    FLAKY,
    queue="default",
    timeout=60,
    retry=RetryPolicy(retries=3, backoff="fixed", base=1, max=1, jitter=False),
)
def flaky(ctx: JobContext) -> dict:
    """Fails its first two attempts (a transient error), then succeeds; every
    execution appends one line to DRILL_ATTEMPT_LOG, so the drill counts what
    really ran rather than what the database says."""
    line = f"{ctx.slot.isoformat()} {ctx.run.attempt} {ctx.run.pk} {os.getpid()}\n"
    with open(os.environ[ATTEMPT_LOG_ENV], "a") as fh:  # O_APPEND: one write per line
        fh.write(line)
    ctx.checkpoint({"attempt": ctx.run.attempt})
    if ctx.run.attempt <= FLAKY_FAILS:
        raise ConnectionError(f"attempt {ctx.run.attempt}: upstream unavailable")
    ctx.count(processed=1, succeeded=1)
    return {"resumed_from": ctx.resume_state}

"""The suite's pinned clock: `TEST_CLOCK=2027-02-28T23:30:00Z make test` runs
every test as if it were that moment (the clock then ticks on from there).

`make test-dates` runs the suite at a 28-day February's end, a 31-day month's
end in another machine time zone, and across a DST change of the scheduler's
time zone, so a test that silently depends on today's date, the month's
length or the machine's time zone fails in CI, not on the day it happens to
be wrong. time-machine moves Python's wall clock only (not the monotonic
clock that timeouts use); the localstripe child process follows the same
variable, so Stripe's timestamps agree with the tests'.
"""

from __future__ import annotations

import os
from datetime import datetime

ENV = "TEST_CLOCK"


def pinned() -> datetime | None:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{ENV}={value!r} needs a UTC offset, e.g. 2027-02-28T23:30:00Z")
    return moment


def pin_from_env() -> datetime | None:
    """Travel this process to TEST_CLOCK, if set; returns the moment."""
    moment = pinned()
    if moment is not None:
        import time_machine  # a test dependency: only the test processes pin the clock

        time_machine.travel(moment, tick=True).start()
    return moment

"""TEST_CLOCK pins the suite's clock (see tests/clock.py and `make test-dates`)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from django.utils import timezone

from tests.clock import ENV, pinned


def test_test_clock_moves_a_process_to_the_pinned_moment_and_ticks_on():
    code = (
        "from tests.clock import pin_from_env; import datetime, time; pin_from_env(); "
        "a = datetime.datetime.now(datetime.UTC); time.sleep(0.05); "
        "b = datetime.datetime.now(datetime.UTC); print(a.isoformat(), (b - a).total_seconds())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "", ENV: "2027-02-28T23:30:00Z"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    moment = datetime.fromisoformat(out[0])
    assert datetime(2027, 2, 28, 23, 30, tzinfo=UTC) <= moment
    assert moment < datetime(2027, 2, 28, 23, 30, 5, tzinfo=UTC)
    assert float(out[1]) >= 0.05  # it ticks: timeouts and durations still pass


def test_a_test_clock_without_an_offset_is_refused(monkeypatch):
    monkeypatch.setenv(ENV, "2027-02-28T23:30:00")
    with pytest.raises(ValueError, match="needs a UTC offset"):
        pinned()


def test_the_suite_and_localstripe_read_the_same_clock(stripe_settings):
    """Under TEST_CLOCK both are at the pinned day; otherwise both at today."""
    client = stripe.StripeClient(
        "sk_test_clock", base_addresses={"api": stripe_settings.STRIPE_API_BASE}
    )
    customer = client.v1.customers.create(params={"email": "clock@example.com"})
    created = datetime.fromtimestamp(customer.created, tz=UTC)
    assert abs(created - timezone.now()) < timedelta(minutes=2)
    moment = pinned()
    if moment is not None:
        assert abs(timezone.now() - moment) < timedelta(hours=1)

import itertools
from datetime import UTC, datetime

import pytest
from django.test import override_settings

from jobs.cron import CronError, next_runs, normalize_cron


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("0 * * * *", "0 * * * *"),
        ("0 0 */6 * * *", "0 */6 * * *"),  # Spring / Go engine: seconds first
        ("0 0 0 1 * *", "0 0 1 * *"),
        ("0 0 2 ? * MON", "0 2 * * MON"),
        ("30 */5 * * * *", "*/5 * * * * 30"),  # non-zero seconds: croniter's order
    ],
)
def test_five_and_six_field_expressions_are_normalized(given, stored):
    assert normalize_cron(given) == stored


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "invalid cron expression"),
        ("0 0 25 * * *", "invalid cron expression"),
        ("", "has 0 fields"),
    ],
)
def test_invalid_expressions_get_a_clear_error(expression, message):
    with pytest.raises(CronError, match=message):
        normalize_cron(expression)


@override_settings(SCHEDULER_TIMEZONE="UTC")
def test_six_field_every_six_hours_fires_at_the_right_times():
    runs = next_runs(
        normalize_cron("0 0 */6 * * *"), after=datetime(2026, 11, 1, 1, tzinfo=UTC), count=3
    )
    assert [r.hour for r in runs] == [6, 12, 18]


@override_settings(SCHEDULER_TIMEZONE="Europe/Berlin")
def test_daily_run_keeps_local_time_across_spring_forward():
    # 2026-03-29: Berlin goes from UTC+1 to UTC+2 at 02:00 local.
    runs = next_runs("0 9 * * *", after=datetime(2026, 3, 27, 12, tzinfo=UTC), count=3)
    assert [r.isoformat() for r in runs] == [
        "2026-03-28T08:00:00+00:00",  # 09:00 CET
        "2026-03-29T07:00:00+00:00",  # 09:00 CEST
        "2026-03-30T07:00:00+00:00",
    ]


@override_settings(SCHEDULER_TIMEZONE="Europe/Berlin")
def test_a_time_skipped_by_spring_forward_runs_once_not_zero_times():
    runs = next_runs("30 2 * * *", after=datetime(2026, 3, 28, 12, tzinfo=UTC), count=2)
    assert runs[0].date().isoformat() == "2026-03-29"
    assert runs[1].date().isoformat() == "2026-03-30"


@override_settings(SCHEDULER_TIMEZONE="Europe/Berlin")
def test_hourly_runs_across_fall_back_are_an_hour_apart_without_duplicates():
    runs = next_runs("0 * * * *", after=datetime(2026, 10, 24, 23, 30, tzinfo=UTC), count=5)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(runs)}
    assert gaps == {3600.0}
    assert len(set(runs)) == 5

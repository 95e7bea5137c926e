"""Bugs the generated bad-input run (reliability/test_bad_input.py) found,
each pinned by the smallest input that showed it."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command

from jobs.context import JobAborted
from jobs.enqueue import enqueue_run
from jobs.models import JobRun, Trigger
from jobs.params import ParamError, coerce_params, params_from_signature

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_broker")]

AUTH = {"HTTP_AUTHORIZATION": "Bearer test-api-token"}


@pytest.fixture
def probe(register_job):
    @register_job("tests.regress_probe")
    def probe(ctx, *, ratio: float | None = None, at: datetime | None = None, label: str = ""):
        """Takes a float, a datetime and a string."""
        return {}

    return probe


def test_a_path_with_an_encoded_newline_under_the_api_gets_a_json_404(client):
    response = client.get("/api/jobs/%0A", **AUTH)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "no such endpoint" in json.loads(response.content)["error"]


def test_runjob_refuses_a_slot_that_is_before_year_one_in_utc(probe):
    with pytest.raises(CommandError, match="--slot must be an ISO 8601 datetime"):
        call_command(
            "runjob",
            "tests.regress_probe",
            "--slot=0001-01-01T00:00:00+01:00",
            stdout=io.StringIO(),
        )
    assert not JobRun.objects.exists()


def test_a_datetime_param_before_year_one_in_utc_is_a_param_error(probe):
    declared = params_from_signature(probe)

    with pytest.raises(ParamError) as refused:
        coerce_params(declared, {"at": "0001-01-01T00:00:00+01:00"})
    assert refused.value.param == "at"


@pytest.mark.parametrize(
    "argv",
    [
        ["--tenant=\udcff"],  # `--tenant $'\xff'`: Python hands non-UTF-8 argv over as surrogates
        ["--param=label=\udcfe"],
        ["--slot=\udcff"],
        ["--tenant=a\x00b"],
    ],
)
def test_runjob_refuses_arguments_that_are_not_utf8_text(probe, argv):
    with pytest.raises(CommandError, match=r"UTF-8|NUL"):
        call_command("runjob", "tests.regress_probe", *argv, stdout=io.StringIO())
    assert not JobRun.objects.exists()


def test_runjob_of_a_run_that_failed_without_a_message_still_says_why(register_job):
    @register_job("tests.regress_silent")
    def silent(ctx):
        raise JobAborted("")

    with pytest.raises(CommandError, match=r"failed: no error recorded"):
        call_command("runjob", "tests.regress_silent", stdout=io.StringIO())


def test_a_replayed_idempotency_key_matches_a_float_param_read_back_in_another_form(probe):
    """PostgreSQL's jsonb hands 2.148314123772527e+16 back as the int
    21483141237725270: the same value, so the same run, not a 409."""
    run, created = enqueue_run(
        "tests.regress_probe",
        params={"ratio": 2.148314123772527e16},
        trigger=Trigger.API,
        idempotency_key="float-key",
    )
    JobRun.objects.filter(pk=run.pk).update(params={"ratio": 21483141237725270})

    again, created_again = enqueue_run(
        "tests.regress_probe",
        params={"ratio": 2.148314123772527e16},
        trigger=Trigger.API,
        idempotency_key="float-key",
    )

    assert created and not created_again
    assert again.pk == run.pk

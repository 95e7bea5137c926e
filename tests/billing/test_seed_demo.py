"""manage.py seed_demo (billing: the top of the ladder seeds every app)."""

import pytest
from django.core.management import call_command

from jobs.models import RunStatus
from jobs.runner import run_job
from subscriptions.models import Organization, Plan, Subscription, SubscriptionStatus

pytestmark = pytest.mark.django_db
S = SubscriptionStatus


def test_seed_demo_is_idempotent(capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    counts = (Organization.objects.count(), Plan.objects.count(), Subscription.objects.count())

    call_command("seed_demo")
    second = capsys.readouterr().out

    assert "created organization" in first
    assert "nothing created" in second
    assert counts == (
        Organization.objects.count(),
        Plan.objects.count(),
        Subscription.objects.count(),
    )
    assert set(Subscription.objects.values_list("status", flat=True)) == set(S.values)


def test_seed_demo_data_expires_without_tripping_the_guard(capsys):
    call_command("seed_demo")

    run = run_job("subscriptions.expire")

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.summary["expired"] == 6  # two per organization
    assert run.summary["suspended"] == 3

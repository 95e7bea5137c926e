"""The "email" alert channel: an alert queued through the outbox reaches SES
(a moto server over HTTP) when notifications.send_pending runs."""

from datetime import UTC, datetime

import pytest

from jobs.alert_channels import channel_choices
from jobs.alert_models import AlertDelivery, AlertRule
from jobs.runner import run_job
from notifications.models import OutboundEmail

pytestmark = pytest.mark.django_db


def test_an_email_alert_for_a_failing_job_reaches_ses(register_job, ses, time_machine):
    time_machine.move_to(datetime(2026, 11, 30, 12, tzinfo=UTC), tick=False)

    @register_job("tests.nightly_export")
    def nightly_export(ctx):
        raise RuntimeError("bucket not found")

    AlertRule.objects.create(
        name="export failures",
        job="tests.nightly_export",
        condition="failed",
        channel="email",
        target="ops@example.com, oncall@example.com",
    )
    failed = run_job("tests.nightly_export")
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "sent"  # handed to the outbox
    queued = OutboundEmail.objects.filter(kind="jobs.alert")
    assert sorted(queued.values_list("to", flat=True)) == ["oncall@example.com", "ops@example.com"]
    time_machine.move_to(datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC), tick=True)
    run_job("notifications.send_pending")
    assert ses.per_recipient() == {"ops@example.com": 1, "oncall@example.com": 1}
    raw = ses.messages[0].raw_data
    assert "[ALERT] export failures" in raw and "bucket not found" in raw
    assert f"/admin/jobs/jobrun/{failed.pk}/change/" in raw


def test_notifications_registers_the_email_channel():
    assert ("email", "Email (through the outbox)") in channel_choices()

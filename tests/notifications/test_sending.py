"""notifications.send_pending against django-ses and a moto SES server over HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from django.utils import timezone

from core.ratelimit import max_in_any_window, shared_limiter
from jobs.models import RunStatus
from jobs.runner import run_job
from notifications.models import EmailStatus, OutboundEmail, SuppressedAddress
from notifications.sending import claim_due, classify, send_pending
from notifications.services import (
    Attachment,
    cancel,
    queue_email,
    record_ses_feedback,
    retry_now,
)
from tests.factories import OutboundEmailFactory, SuppressedAddressFactory

pytestmark = pytest.mark.django_db


class Killed(BaseException):
    """Stands in for SIGKILL: nothing below `except Exception` sees it."""


def patch_send(monkeypatch, wrapper):
    """Wrap the boto SES client's send_raw_email that django-ses opens."""
    import django_ses

    original_open = django_ses.SESBackend.open

    def open_(self):
        created = original_open(self)
        if self.connection is not None and not getattr(self.connection, "_wrapped", False):
            real = self.connection.send_raw_email
            self.connection.send_raw_email = lambda **kw: wrapper(real, kw)
            self.connection._wrapped = True
        return created

    monkeypatch.setattr(django_ses.SESBackend, "open", open_)


def throttling() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "Throttling", "Message": "Maximum sending rate exceeded."},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "SendRawEmail",
    )


def test_send_pending_sends_through_ses_and_records_the_message_id(ses):
    email = OutboundEmailFactory(to="a@customer.example", body_html="<p>Hello.</p>")

    run = run_job("notifications.send_pending")

    email.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.summary["sent"] == 1
    assert email.status == EmailStatus.SENT
    assert email.sent_at is not None
    assert email.provider_message_id == ses.messages[0].id
    assert email.claimed_by == ""
    raw = ses.messages[0].raw_data
    assert "Hello." in raw and "text/html" in raw and email.dedupe_key in raw


def test_attachments_are_stored_and_sent(ses, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    queue_email(
        to="pay@customer.example",
        kind="tests.invoice",
        dedupe_key="invoice:1",
        template="announcement",
        context={"subject": "Your invoice", "message": "Attached.", "organization_name": "X"},
        attachments=[Attachment("invoice-1.pdf", b"%PDF-1.4 fake", "application/pdf")],
    )
    email = OutboundEmail.objects.get()
    assert email.attachments.get().file.read() == b"%PDF-1.4 fake"

    send_pending()

    assert 'filename="invoice-1.pdf"' in ses.messages[0].raw_data


def test_rerunning_send_pending_never_sends_a_row_twice(ses):
    OutboundEmailFactory.create_batch(5)

    send_pending()
    send_pending()
    run_job("notifications.send_pending")

    assert len(ses.messages) == 5
    assert set(ses.per_recipient().values()) == {1}
    assert OutboundEmail.objects.filter(status=EmailStatus.SENT).count() == 5


def test_dry_run_sends_nothing_and_reports_what_it_would_send(ses):
    OutboundEmailFactory.create_batch(3, kind="tests.a")
    OutboundEmailFactory(to="gone@customer.example")
    SuppressedAddress.objects.create(email="Gone@Customer.example")

    run = run_job("notifications.send_pending", dry_run=True)

    assert run.summary["would_send"] == 3
    assert run.summary["would_suppress"] == 1
    assert run.summary["by_kind"] == {"tests.a": 3}
    assert ses.messages == []
    assert not OutboundEmail.objects.exclude(status=EmailStatus.QUEUED).exists()


def test_throttling_backs_off_and_later_succeeds(ses, monkeypatch, settings):
    """moto cannot throttle, so the boto client's send_raw_email is wrapped to
    raise SES's real `Throttling` ClientError on the first two calls."""
    settings.EMAIL_RETRY_BASE_SECONDS = 60
    calls = {"n": 0}

    def flaky(real, kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise throttling()
        return real(**kwargs)

    patch_send(monkeypatch, flaky)
    email = OutboundEmailFactory()

    first = send_pending()
    email.refresh_from_db()
    assert first.retrying == 1
    assert email.status == EmailStatus.QUEUED and email.attempts == 1
    assert "Throttling" in email.last_error
    # Backoff: base 60 s for the first retry, with jitter between half and all of it.
    wait = (email.next_attempt_at - timezone.now()).total_seconds()
    assert 25 <= wait <= 60
    assert send_pending().claimed == 0  # not due yet

    OutboundEmail.objects.update(next_attempt_at=timezone.now())
    send_pending()
    email.refresh_from_db()
    assert email.attempts == 2 and email.status == EmailStatus.QUEUED
    wait = (email.next_attempt_at - timezone.now()).total_seconds()
    assert 55 <= wait <= 120  # doubled

    OutboundEmail.objects.update(next_attempt_at=timezone.now())
    send_pending()
    email.refresh_from_db()
    assert email.status == EmailStatus.SENT and email.attempts == 3
    assert len(ses.messages) == 1


def test_transient_errors_give_up_after_max_attempts(ses, monkeypatch, settings):
    settings.EMAIL_MAX_ATTEMPTS = 3

    def always_throttled(real, kwargs):
        raise throttling()

    patch_send(monkeypatch, always_throttled)
    email = OutboundEmailFactory()
    for _ in range(3):
        OutboundEmail.objects.update(next_attempt_at=timezone.now())
        run = run_job("notifications.send_pending")

    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED and email.attempts == 3
    assert email.last_error.startswith("gave up after 3")
    assert run.status == RunStatus.PARTIAL
    assert run.failures.get().item_key == f"email:{email.pk}"


def test_a_rejected_message_fails_at_once(ses, settings):
    """moto answers MessageRejected for a sender identity that is not verified."""
    settings.DEFAULT_FROM_EMAIL = "nobody@unverified.example"
    email = OutboundEmailFactory()

    report = send_pending()

    email.refresh_from_db()
    assert report.failed == 1
    assert email.status == EmailStatus.FAILED and email.attempts == 1
    assert "MessageRejected" in email.last_error


def test_error_classes():
    assert classify(throttling()).__name__ == "TransientSendError"
    server_error = ClientError(
        {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "x"
    )
    assert classify(server_error).__name__ == "TransientSendError"
    rejected = ClientError(
        {"Error": {"Code": "MessageRejected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "x"
    )
    assert classify(rejected).__name__ == "PermanentSendError"
    from botocore.exceptions import ReadTimeoutError

    assert classify(ReadTimeoutError(endpoint_url="x")).__name__ == "TransientSendError"


def test_a_killed_senders_rows_are_finished_by_the_next_run_without_double_send(ses, monkeypatch):
    """The first sender is "killed" (a BaseException) as it starts its third call:
    two rows are sent, one was in flight, two were claimed and never started."""
    emails = OutboundEmailFactory.create_batch(5)
    calls = {"n": 0}

    def dies_on_third(real, kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed()
        return real(**kwargs)

    patch_send(monkeypatch, dies_on_third)
    with pytest.raises(Killed):
        send_pending()
    states = dict(OutboundEmail.objects.values_list("id", "status"))
    assert list(states.values()).count(EmailStatus.SENT) == 2
    assert list(states.values()).count(EmailStatus.SENDING) == 3

    # While the lease runs, nobody takes the rows over.
    assert send_pending().claimed == 0
    OutboundEmail.objects.filter(status=EmailStatus.SENDING).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )
    report = send_pending()

    assert report.sent == 3 and report.resent_in_flight == 1
    assert OutboundEmail.objects.filter(status=EmailStatus.SENT).count() == 5
    assert ses.per_recipient() == {e.to: 1 for e in emails}


def test_suppressed_addresses_are_not_mailed(ses):
    SuppressedAddressFactory(email="Bounced@Customer.example")
    blocked = OutboundEmailFactory(to="bounced@customer.example")
    fine = OutboundEmailFactory(to="fine@customer.example")

    report = send_pending()

    blocked.refresh_from_db()
    fine.refresh_from_db()
    assert report.suppressed == 1 and report.sent == 1
    assert blocked.status == EmailStatus.SUPPRESSED
    assert fine.status == EmailStatus.SENT
    assert list(ses.per_recipient()) == ["fine@customer.example"]


def test_ses_bounces_and_complaints_of_our_messages_feed_the_suppression_list():
    sent = OutboundEmailFactory(
        to="Hard@Customer.example",
        status=EmailStatus.SENT,
        sent_at=timezone.now(),
        provider_message_id="msg-1",
    )
    angry = OutboundEmailFactory(
        to="angry@customer.example",
        status=EmailStatus.SENT,
        sent_at=timezone.now(),
        provider_message_id="msg-2",
    )
    queued = OutboundEmailFactory(to="hard@customer.example")

    record_ses_feedback(
        kind="bounce",
        message={
            "mail": {"messageId": "msg-1"},
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "hard@customer.example"}],
            },
        },
    )
    transient = record_ses_feedback(
        kind="bounce",
        message={
            "mail": {"messageId": "msg-2"},
            "bounce": {
                "bounceType": "Transient",
                "bouncedRecipients": [{"emailAddress": "angry@customer.example"}],
            },
        },
    )
    record_ses_feedback(
        kind="complaint",
        message={
            "mail": {"messageId": "msg-2"},
            "complaint": {"complainedRecipients": [{"emailAddress": "Angry@Customer.example"}]},
        },
    )

    assert transient == []
    assert dict(SuppressedAddress.objects.values_list("email", "reason")) == {
        "hard@customer.example": "bounce",
        "angry@customer.example": "complaint",
    }
    queued.refresh_from_db()
    assert queued.status == EmailStatus.SUPPRESSED
    assert sent.pk and angry.pk


def test_retry_now_and_cancel():
    failed = OutboundEmailFactory(status=EmailStatus.FAILED, attempts=5, last_error="x")
    later = OutboundEmailFactory(next_attempt_at=timezone.now() + timedelta(hours=1))
    sent = OutboundEmailFactory(status=EmailStatus.SENT, sent_at=timezone.now())

    assert retry_now(ids=[failed.pk, sent.pk]) == 1
    failed.refresh_from_db()
    assert failed.status == EmailStatus.QUEUED and failed.attempts == 0
    assert failed.next_attempt_at <= timezone.now()

    assert cancel(ids=[later.pk, sent.pk], actor="user:ann") == 1
    later.refresh_from_db()
    assert later.status == EmailStatus.FAILED and later.last_error == "canceled by user:ann"


def test_claims_are_disjoint_and_leased(settings):
    settings.EMAIL_LEASE_SECONDS = 120
    OutboundEmailFactory.create_batch(5)

    first = claim_due(token="a", limit=3)
    second = claim_due(token="b", limit=10)

    assert len(first) == 3 and len(second) == 2
    assert not {e.pk for e in first} & {e.pk for e in second}
    assert all(e.status == EmailStatus.SENDING and e.attempts == 1 for e in first + second)
    lease = (first[0].claimed_until - timezone.now()).total_seconds()
    assert 100 < lease <= 120
    assert claim_due(token="c", limit=10) == []


def test_max_emails_caps_a_run(ses):
    OutboundEmailFactory.create_batch(7)

    report = send_pending(max_emails=5, batch_size=2)

    assert report.sent == 5
    assert OutboundEmail.objects.filter(status=EmailStatus.QUEUED).count() == 2


def test_rate_limit_holds_across_worker_threads(ses, moto_ses_url):
    """Four threads share one limiter (Redis when REDIS_URL is set) at 20/s and
    send through django-ses to moto; no 1-second span holds more than 20 grants.

    Grant times are the limiter's clock (Redis's own with REDIS_URL); the
    window's 0.05 s margin is what covers the step from grant to request."""
    from django.core.mail import EmailMessage, get_connection

    limiter = shared_limiter(per_second=20, key=f"test-rate-{uuid.uuid4().hex}")
    times: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        backend = get_connection()
        for i in range(15):
            granted = limiter.acquire()
            with lock:
                times.append(granted)
            EmailMessage("s", "b", None, [f"w{n}-{i}@customer.example"], connection=backend).send()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start

    assert len(ses.messages) == 60
    assert max_in_any_window(times) <= 20
    assert elapsed >= 2.0  # 60 sends at 20/s need at least two full windows
    assert 60 / elapsed >= 20 * 0.6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_senders_never_send_a_row_twice(ses):
    emails = OutboundEmailFactory.create_batch(80)
    reports = []

    def sender() -> None:
        try:
            reports.append(send_pending(batch_size=5))
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.sent for r in reports) == 80
    assert all(r.sent > 0 for r in reports)  # both really shared the work
    assert sum(r.lost_lease for r in reports) == 0
    assert ses.per_recipient() == {e.to: 1 for e in emails}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_several_workers_keep_the_shared_rate(ses):
    OutboundEmailFactory.create_batch(90)
    limiter = shared_limiter(per_second=30, key=f"test-rate-{uuid.uuid4().hex}")

    start = time.time()
    report = send_pending(workers=3, batch_size=10, limiter=limiter, record_times=True)
    elapsed = time.time() - start

    assert report.sent == 90
    assert max_in_any_window(report.grant_times) <= 30
    assert 90 / elapsed >= 30 * 0.6
    assert set(ses.per_recipient().values()) == {1}


@pytest.mark.usefixtures("empty_broker")
def test_rerun_of_failed_items_retries_only_those_emails(
    ses, monkeypatch, settings, drain_queue, django_capture_on_commit_callbacks
):
    from jobs.enqueue import rerun
    from jobs.models import JobRun, Trigger

    settings.EMAIL_MAX_ATTEMPTS = 1
    outage = {"on": True}

    def down_while_out(real, kwargs):
        if outage["on"]:
            raise throttling()
        return real(**kwargs)

    patch_send(monkeypatch, down_while_out)
    failed = [OutboundEmailFactory(), OutboundEmailFactory()]
    run = run_job("notifications.send_pending")
    assert run.status == RunStatus.PARTIAL
    assert {f.item_key for f in run.failures.all()} == {f"email:{e.pk}" for e in failed}
    later = OutboundEmailFactory()  # queued after the run: not one of its failed items

    outage["on"] = False
    with django_capture_on_commit_callbacks(execute=True):
        again = rerun(run, actor="alice", trigger=Trigger.ADMIN, failed_items_only=True)
    drain_queue()

    again = JobRun.objects.get(pk=again.pk)
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert again.summary["retried_failed_items"] == 2
    assert again.summary["sent"] == 2
    assert {e.status for e in OutboundEmail.objects.filter(pk__in=[e.pk for e in failed])} == {
        EmailStatus.SENT
    }
    later.refresh_from_db()
    assert later.status == EmailStatus.QUEUED
    assert len(ses.messages) == 2


def test_dry_run_of_a_failed_items_rerun_counts_them_and_sends_nothing(ses, settings):
    from jobs.models import JobRun, Trigger

    email = OutboundEmailFactory(status=EmailStatus.FAILED, attempts=5)
    run = JobRun.objects.create(
        job="notifications.send_pending",
        trigger=Trigger.ADMIN,
        dry_run=True,
        only_items=[f"email:{email.pk}"],
    )
    from jobs.runner import execute_queued

    execute_queued(run.pk)
    run.refresh_from_db()
    assert run.summary["would_retry"] == 1
    email.refresh_from_db()
    assert email.status == EmailStatus.FAILED
    assert not ses.messages

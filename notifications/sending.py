"""Sending the outbox: claim due rows under a lease, send each at the shared rate.

Every row moves through committed writes, so a crash at any point is
visible and recoverable:

1. claim (a batch): `queued` -> `sending`, `claimed_by` = this sender,
   `claimed_until` = now + lease, attempts + 1. On PostgreSQL the due rows are
   picked with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent senders take
   disjoint batches; elsewhere the UPDATE re-checks the due condition.
2. before the provider call (a row): `send_started_at` = now. To keep one
   statement per email it is written together with the previous row's
   after-record, just before this row waits for the rate limiter.
3. after it: `sent` + provider message id, or back to `queued` with a backoff,
   or `failed`; only while this sender still holds the claim.

A row left in `sending` past its lease (a killed worker) is claimed again by
the next run. Rows of that batch without `send_started_at` were never sent
and are simply sent; the one row per killed worker that has it may have been
accepted by the provider, and is sent again (at least once, never lost):
the time between the provider's answer and write 3 is the double-send window.
A sender also stops using a batch `min(30 s, lease / 4)` before its lease
ends, so another sender never takes over a row it is still about to send.
"""

from __future__ import annotations

import logging
import random
import smtplib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.ratelimit import SendRateLimiter, shared_limiter
from notifications.models import EmailStatus, OutboundEmail, SuppressedAddress

logger = logging.getLogger(__name__)

TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
    "SendingPausedException",
    "AccountSendingPausedException",
}
MAX_ERRORS_REPORTED = 200


class PermanentSendError(Exception):
    """The provider will never accept this message (bad address, rejected)."""


class TransientSendError(Exception):
    """Worth trying again later (throttled, 5xx, timeout, connection)."""


def classify(exc: Exception) -> type[Exception]:
    """PermanentSendError or TransientSendError for an exception from a backend."""
    if isinstance(exc, PermanentSendError | TransientSendError):
        return type(exc)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        if error.get("Code") in TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientSendError
        return PermanentSendError
    if isinstance(exc, BotoCoreError):
        return TransientSendError  # connection errors and timeouts
    if isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused):
        return PermanentSendError
    if isinstance(exc, ValueError | UnicodeError):
        return PermanentSendError  # e.g. an address the backend cannot encode
    return TransientSendError


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), capped, times 0.5-1."""
    base = settings.EMAIL_RETRY_BASE_SECONDS
    delay = min(settings.EMAIL_RETRY_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))
    return delay * random.uniform(0.5, 1.0)


def due_q(now: datetime) -> Q:
    """Rows a sender may claim: queued and due, or `sending` with an expired lease."""
    return Q(status=EmailStatus.QUEUED, next_attempt_at__lte=now) | Q(
        status=EmailStatus.SENDING, claimed_until__lt=now
    )


def claim_due(
    *,
    token: str,
    limit: int,
    organization_id: int | None = None,
    email_ids: Sequence[int] | None = None,
) -> list[OutboundEmail]:
    """Claim up to `limit` due rows for `token` under a lease (only `email_ids`
    when given); returns them."""
    now = timezone.now()
    rows = OutboundEmail.objects.filter(due_q(now))
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    if email_ids is not None:
        rows = rows.filter(id__in=list(email_ids))
    with transaction.atomic():
        locked = rows.order_by("next_attempt_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            locked = locked.select_for_update(skip_locked=True, of=("self",))
        ids = list(locked.values_list("id", flat=True)[:limit])
        if not ids:
            return []
        # The due condition again: the portable path has no row locks, so a
        # row another sender claimed meanwhile is not claimed twice.
        OutboundEmail.objects.filter(due_q(now), id__in=ids).update(
            status=EmailStatus.SENDING,
            claimed_by=token,
            claimed_until=now + timedelta(seconds=settings.EMAIL_LEASE_SECONDS),
            attempts=F("attempts") + 1,
        )
    return list(
        OutboundEmail.objects.filter(id__in=ids, claimed_by=token, status=EmailStatus.SENDING)
        .prefetch_related("attachments")
        .order_by("next_attempt_at", "id")
    )


@dataclass
class SendReport:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    released: int = 0
    lost_lease: int = 0
    resent_in_flight: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)  # just before each request
    grant_times: list[float] = field(default_factory=list)  # the limiter's grants
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **n: int) -> None:
        with self._lock:
            for key, value in n.items():
                setattr(self, key, getattr(self, key) + value)

    def error(self, email_id: int, message: str) -> None:
        with self._lock:
            if len(self.errors) < MAX_ERRORS_REPORTED:
                self.errors.append((email_id, message))

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "retrying": self.retrying,
            "failed": self.failed,
            "suppressed": self.suppressed,
            "released": self.released,
            "lost_lease": self.lost_lease,
            "resent_in_flight": self.resent_in_flight,
        }


def build_message(email: OutboundEmail, *, connection: Any) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email.to],
        connection=connection,
        headers={"Message-ID": make_msgid(domain="outbox"), "X-Outbox-Key": email.dedupe_key},
    )
    if email.body_html:
        message.attach_alternative(email.body_html, "text/html")
    for attachment in email.attachments.all():
        with attachment.file.open("rb") as fh:
            message.attach(attachment.filename, fh.read(), attachment.mimetype)
    return message


class _Sender:
    """One worker: claims batches and sends them until the budget is used up."""

    def __init__(
        self,
        *,
        budget: _Budget,
        batch_size: int,
        limiter: SendRateLimiter,
        report: SendReport,
        organization_id: int | None,
        record_times: bool,
        stop: threading.Event,
        email_ids: Sequence[int] | None = None,
    ) -> None:
        self.token = f"{uuid.uuid4().hex[:12]}"
        self.budget = budget
        self.batch_size = batch_size
        self.limiter = limiter
        self.report = report
        self.organization_id = organization_id
        self.email_ids = email_ids
        self.record_times = record_times
        self.stop = stop
        self.connection = get_connection(fail_silently=False)
        # Stop sending a batch this long before its lease ends, so no other
        # sender can take over a row this one is still about to send.
        self.margin = min(30.0, settings.EMAIL_LEASE_SECONDS / 4)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                want = self.budget.take(self.batch_size)
                if not want:
                    return
                rows = claim_due(
                    token=self.token,
                    limit=want,
                    organization_id=self.organization_id,
                    email_ids=self.email_ids,
                )
                self.budget.give_back(want - len(rows))
                if not rows:
                    return
                self.report.add(claimed=len(rows))
                self._send_batch(rows, lease_ends=time.monotonic() + settings.EMAIL_LEASE_SECONDS)
        finally:
            try:
                self.connection.close()
            except Exception:  # closing a backend must not hide the real outcome
                logger.exception("closing the mail backend failed")

    def _send_batch(self, rows: list[OutboundEmail], *, lease_ends: float) -> None:
        suppressed = _suppressed_among({r.to.lower() for r in rows})
        if suppressed:
            ids = [r.pk for r in rows if r.to.lower() in suppressed]
            n = OutboundEmail.objects.filter(id__in=ids, claimed_by=self.token).update(
                status=EmailStatus.SUPPRESSED,
                claimed_by="",
                claimed_until=None,
                last_error="address is on the suppression list",
            )
            self.report.add(suppressed=n)
            rows = [r for r in rows if r.to.lower() not in suppressed]
        started = False  # whether rows[index] already carries its before-record
        for index, row in enumerate(rows):
            if self.stop.is_set() or time.monotonic() > lease_ends - self.margin:
                self._release(rows[index:])
                return
            following = rows[index + 1] if index + 1 < len(rows) else None
            outcome = self._send_one(
                row, started=started, following=following, lease_ends=lease_ends
            )
            if outcome is None:  # the lease ran out while waiting for the rate
                self._release(rows[index:])
                return
            started = outcome

    def _release(self, rows: list[OutboundEmail]) -> None:
        """Give unsent rows back (their attempt does not count)."""
        n = OutboundEmail.objects.filter(
            id__in=[r.pk for r in rows], claimed_by=self.token, status=EmailStatus.SENDING
        ).update(
            status=EmailStatus.QUEUED,
            claimed_by="",
            claimed_until=None,
            send_started_at=None,
            attempts=F("attempts") - 1,
        )
        self.report.add(released=n)

    def _send_one(
        self,
        row: OutboundEmail,
        *,
        started: bool,
        following: OutboundEmail | None,
        lease_ends: float,
    ) -> bool | None:
        """Send one claimed row; True when `following` got its before-record too
        (written with this row's after-record: one statement per email); None
        when the lease ran out first (nothing sent).

        Everything that takes time (the before-record, building the message)
        happens before the rate limiter's grant, so the request leaves right
        after it and the limiter's window is the provider's."""
        mine = OutboundEmail.objects.filter(pk=row.pk, claimed_by=self.token)
        if row.send_started_at is not None:
            # Taken over from a sender that died while calling the provider.
            logger.warning(
                "email %s: a previous send started at %s has no outcome; sending again",
                row.pk,
                row.send_started_at,
            )
            self.report.add(resent_in_flight=1)
        if not started and not self._update_mine(row.pk, send_started_at=timezone.now()):
            self.report.add(lost_lease=1)  # record before
            return False
        try:
            message = build_message(row, connection=self.connection)
        except Exception as exc:
            self._failed(row, mine, exc)
            return False
        granted = self.limiter.acquire()
        if time.monotonic() > lease_ends - self.margin:
            return None
        if self.record_times:
            with self.report._lock:
                self.report.grant_times.append(granted or 0.0)
                self.report.send_times.append(time.time())
        try:
            message.send()
        except Exception as exc:
            self._failed(row, mine, exc)
            return False
        provider_id = str(
            message.extra_headers.get("message_id") or message.extra_headers.get("Message-ID", "")
        )[:255]
        done, next_started = self._record_sent(  # record after
            row.pk, provider_id=provider_id, following_id=following.pk if following else None
        )
        if done:
            self.report.add(sent=1)
        else:
            self.report.add(lost_lease=1)
            logger.error("email %s was sent but its claim was taken over meanwhile", row.pk)
        return next_started

    def _record_sent(
        self, email_id: int, *, provider_id: str, following_id: int | None
    ) -> tuple[bool, bool]:
        """Mark `email_id` sent and, in the same statement, stamp the next row's
        before-record. Returns (sent recorded, next row stamped)."""
        ops = connection.ops
        now = ops.adapt_datetimefield_value(timezone.now())
        table = ops.quote_name(OutboundEmail._meta.db_table)
        other = following_id if following_id is not None else email_id
        with connection.cursor() as cursor:
            cursor.execute(
                f"""UPDATE {table} SET
                    status = CASE WHEN id = %s THEN %s ELSE status END,
                    sent_at = CASE WHEN id = %s THEN %s ELSE sent_at END,
                    provider_message_id = CASE WHEN id = %s THEN %s ELSE provider_message_id END,
                    claimed_until = CASE WHEN id = %s THEN NULL ELSE claimed_until END,
                    last_error = CASE WHEN id = %s THEN '' ELSE last_error END,
                    send_started_at = CASE WHEN id = %s THEN send_started_at ELSE %s END,
                    claimed_by = CASE WHEN id = %s THEN '' ELSE claimed_by END
                WHERE id IN (%s, %s) AND claimed_by = %s
                RETURNING id""",
                [
                    email_id,
                    EmailStatus.SENT.value,
                    email_id,
                    now,
                    email_id,
                    provider_id,
                    email_id,
                    email_id,
                    email_id,
                    now,
                    email_id,
                    email_id,
                    other,
                    self.token,
                ],
            )
            updated = {row[0] for row in cursor.fetchall()}
        return email_id in updated, following_id is not None and following_id in updated

    def _update_mine(self, email_id: int, **values: Any) -> int:
        """One UPDATE of a row this sender still holds, in plain SQL: the two
        writes around every provider call are the sender's hot path."""
        ops = connection.ops
        sets = ", ".join(f"{ops.quote_name(column)} = %s" for column in values)
        params = [
            ops.adapt_datetimefield_value(v) if isinstance(v, datetime) else v
            for v in values.values()
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ops.quote_name(OutboundEmail._meta.db_table)} SET {sets} "
                "WHERE id = %s AND claimed_by = %s",
                [*params, email_id, self.token],
            )
            return cursor.rowcount

    def _failed(self, row: OutboundEmail, mine: Any, exc: Exception) -> None:
        kind = classify(exc)
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        attempts = row.attempts  # already counts this attempt (claim_due)
        if kind is PermanentSendError or attempts >= settings.EMAIL_MAX_ATTEMPTS:
            why = "permanent" if kind is PermanentSendError else f"gave up after {attempts}"
            mine.update(
                status=EmailStatus.FAILED,
                last_error=f"{why}: {reason}",
                claimed_by="",
                claimed_until=None,
                send_started_at=None,
            )
            self.report.add(failed=1)
            self.report.error(row.pk, f"{why}: {reason}")
            return
        mine.update(
            status=EmailStatus.QUEUED,
            next_attempt_at=timezone.now() + timedelta(seconds=backoff_seconds(attempts)),
            last_error=reason,
            claimed_by="",
            claimed_until=None,
            send_started_at=None,
        )
        self.report.add(retrying=1)


class _Budget:
    """How many more rows this run may claim, shared by its workers."""

    def __init__(self, total: int) -> None:
        self.left = total
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            n = min(n, self.left)
            self.left -= n
            return n

    def give_back(self, n: int) -> None:
        with self._lock:
            self.left += n


def _suppressed_among(addresses: set[str]) -> set[str]:
    return set(
        SuppressedAddress.objects.filter(email__in=addresses).values_list("email", flat=True)
    )


def send_pending(
    *,
    max_emails: int | None = None,
    batch_size: int | None = None,
    workers: int = 1,
    organization_id: int | None = None,
    limiter: SendRateLimiter | None = None,
    record_times: bool = False,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
    email_ids: Sequence[int] | None = None,
) -> SendReport:
    """Send due outbox rows at the shared rate; several calls may run at once.

    `email_ids` limits the run to those rows (a rerun of failed items).

    `workers` > 1 sends from that many threads (each with its own database
    connection), all under the same limiter.
    """
    budget = _Budget(settings.EMAIL_BATCH_MAX_EMAILS if max_emails is None else max_emails)
    report = SendReport()
    limiter = limiter or shared_limiter()
    stop = stop or threading.Event()

    def make() -> _Sender:
        return _Sender(
            budget=budget,
            batch_size=batch_size or settings.EMAIL_BATCH_SIZE,
            limiter=limiter,
            report=report,
            organization_id=organization_id,
            record_times=record_times,
            stop=stop,
            email_ids=email_ids,
        )

    if workers <= 1:
        make().run()
        return report

    errors: list[BaseException] = []

    def thread_main() -> None:
        try:
            make().run()
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            close_old_connections()
            connection.close()

    threads = [
        threading.Thread(target=thread_main, name=f"outbox-sender-{i}", daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return report


def preview_pending(
    *,
    max_emails: int | None = None,
    organization_id: int | None = None,
    email_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What `send_pending` would do now, reading only (the dry run)."""
    limit = settings.EMAIL_BATCH_MAX_EMAILS if max_emails is None else max_emails
    rows = OutboundEmail.objects.filter(due_q(timezone.now()))
    if organization_id:
        rows = rows.filter(organization_id=organization_id)
    if email_ids is not None:
        rows = rows.filter(id__in=list(email_ids))
    picked = list(rows.order_by("next_attempt_at", "id").values("to", "kind", "status")[:limit])
    suppressed = _suppressed_among({r["to"].lower() for r in picked})
    would_suppress = sum(1 for r in picked if r["to"].lower() in suppressed)
    return {
        "due": rows.count(),
        "would_send": len(picked) - would_suppress,
        "would_suppress": would_suppress,
        "stuck_sending": sum(1 for r in picked if r["status"] == EmailStatus.SENDING),
        "by_kind": dict(Counter(r["kind"] for r in picked if r["to"].lower() not in suppressed)),
        "rate_limit_per_second": settings.AWS_SES_RATE_LIMIT_PER_SECOND,
    }

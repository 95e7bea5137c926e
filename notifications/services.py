"""Queue email through the outbox. Nothing else calls the mail backend.

Bodies are rendered when queued (so what was sent is what was stored, even if
a template changes later), and every row carries a dedupe key: queueing the
same key twice keeps the first row, which makes every caller's rerun safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Q
from django.template.loader import get_template
from django.utils import timezone

from notifications.models import (
    EmailAttachment,
    EmailStatus,
    OutboundEmail,
    SuppressedAddress,
    SuppressionReason,
)

BULK_BATCH_SIZE = 2000


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    body_text: str
    body_html: str


@dataclass(frozen=True)
class EmailDraft:
    """One email to queue: one recipient, bodies already rendered."""

    to: str
    kind: str
    dedupe_key: str
    subject: str
    body_text: str
    body_html: str = ""
    organization_id: int | None = None


class EmailTemplate:
    """`templates/emails/<name>/{subject.txt,body.txt,body.html}`, loaded once.

    Jobs that queue thousands of emails render through one instance, so the
    templates are looked up and compiled once, not per email.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._subject = get_template(f"emails/{name}/subject.txt")
        self._text = get_template(f"emails/{name}/body.txt")
        self._html = get_template(f"emails/{name}/body.html")

    def render(self, context: Mapping[str, Any]) -> RenderedEmail:
        context = dict(context)
        subject = " ".join(self._subject.render(context).split())
        return RenderedEmail(
            subject=subject[:255],
            body_text=self._text.render(context),
            body_html=self._html.render(context),
        )


def render_email(*, template: str, context: Mapping[str, Any]) -> RenderedEmail:
    return EmailTemplate(template).render(context)


@dataclass(frozen=True)
class Attachment:
    """A file to send with an email; stored (MEDIA_ROOT or S3) when queued."""

    filename: str
    content: bytes
    mimetype: str = "application/octet-stream"


def queue_email(
    *,
    to: str,
    kind: str,
    dedupe_key: str,
    template: str,
    context: Mapping[str, Any],
    organization_id: int | None = None,
    attachments: Sequence[Attachment] = (),
) -> bool:
    """Render and queue one email; False when its dedupe key was already queued."""
    rendered = render_email(template=template, context=context)
    draft = EmailDraft(
        to=to,
        kind=kind,
        dedupe_key=dedupe_key,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        organization_id=organization_id,
    )
    if not attachments:
        return queue_bulk(emails=[draft]) == 1
    with transaction.atomic():
        if queue_bulk(emails=[draft]) != 1:
            return False
        queue_bulk_with_attachments(emails=[(draft, attachments)])
    return True


def queue_bulk_with_attachments(
    *,
    emails: Sequence[tuple[EmailDraft, Sequence[Attachment]]],
    now: datetime | None = None,
) -> dict[str, int]:
    """Queue drafts with their files (stored when queued), in one transaction;
    returns {dedupe key: OutboundEmail id} for every draft, new or queued
    before. A draft queued before keeps the attachments it has: files are
    stored only for emails that have none, so a rerun never adds copies."""
    if not emails:
        return {}
    with transaction.atomic():
        queue_bulk(emails=[draft for draft, _ in emails], now=now)
        keys = [draft.dedupe_key for draft, _ in emails]
        ids = dict(
            OutboundEmail.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", "pk")
        )
        attached = set(
            EmailAttachment.objects.filter(email_id__in=list(ids.values())).values_list(
                "email_id", flat=True
            )
        )
        rows = []
        for draft, files in emails:
            email_id = ids[draft.dedupe_key]
            if email_id in attached:
                continue
            attached.add(email_id)
            for item in files:
                row = EmailAttachment(
                    email_id=email_id, filename=item.filename, mimetype=item.mimetype
                )
                row.file.save(item.filename, ContentFile(item.content), save=False)
                rows.append(row)
        EmailAttachment.objects.bulk_create(rows)
    return ids


def queue_bulk(*, emails: Sequence[EmailDraft], now: datetime | None = None) -> int:
    """Queue many emails in a few statements; returns how many were new.

    Rows whose dedupe key is already in the outbox (or repeated in `emails`)
    are skipped, not updated.
    """
    if not emails:
        return 0
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _queue_bulk_postgres(emails, now)
    return _queue_bulk_portable(emails, now)


def _queue_bulk_postgres(emails: Sequence[EmailDraft], now: datetime) -> int:
    """One INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING per batch:
    thousands of rows per round trip, with the count of rows really inserted."""
    table = connection.ops.quote_name(OutboundEmail._meta.db_table)
    sql = f"""
        INSERT INTO {table} (organization_id, "to", subject, body_text, body_html, kind,
            dedupe_key, status, attempts, next_attempt_at, provider_message_id,
            last_error, created_at)
        SELECT u.organization_id, u.to_, u.subject, u.body_text, u.body_html, u.kind,
            u.dedupe_key, %s, 0, %s, '', '', %s
        FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::text[], %s::text[])
            AS u(organization_id, to_, subject, body_text, body_html, kind, dedupe_key)
        ON CONFLICT (dedupe_key) DO NOTHING
    """
    inserted = 0
    with connection.cursor() as cursor:
        for start in range(0, len(emails), BULK_BATCH_SIZE):
            batch = emails[start : start + BULK_BATCH_SIZE]
            cursor.execute(
                sql,
                [
                    EmailStatus.QUEUED,
                    now,
                    now,
                    [e.organization_id for e in batch],
                    [e.to for e in batch],
                    [e.subject for e in batch],
                    [e.body_text for e in batch],
                    [e.body_html for e in batch],
                    [e.kind for e in batch],
                    [e.dedupe_key for e in batch],
                ],
            )
            inserted += cursor.rowcount
    return inserted


def _queue_bulk_portable(emails: Sequence[EmailDraft], now: datetime) -> int:
    """bulk_create of the keys not yet queued, inside one transaction."""
    inserted = 0
    with transaction.atomic():
        for start in range(0, len(emails), BULK_BATCH_SIZE):
            batch = {e.dedupe_key: e for e in emails[start : start + BULK_BATCH_SIZE]}
            existing = set(
                OutboundEmail.objects.filter(dedupe_key__in=list(batch)).values_list(
                    "dedupe_key", flat=True
                )
            )
            rows = [
                OutboundEmail(
                    organization_id=e.organization_id,
                    to=e.to,
                    subject=e.subject,
                    body_text=e.body_text,
                    body_html=e.body_html,
                    kind=e.kind,
                    dedupe_key=key,
                    status=EmailStatus.QUEUED,
                    next_attempt_at=now,
                    created_at=now,
                )
                for key, e in batch.items()
                if key not in existing
            ]
            OutboundEmail.objects.bulk_create(rows, ignore_conflicts=True)
            inserted += len(rows)
    return inserted


# --- staff actions and the suppression list ------------------------------------


def retry_now(*, ids: Sequence[int], now: datetime | None = None) -> int:
    """Make queued or failed rows due now, with a fresh set of attempts.

    Rows being sent under a live lease, sent and suppressed rows are left alone.
    """
    now = now or timezone.now()
    retryable = Q(status__in=[EmailStatus.QUEUED, EmailStatus.FAILED]) | Q(
        status=EmailStatus.SENDING, claimed_until__lt=now
    )
    return (
        OutboundEmail.objects.filter(retryable, id__in=list(ids))
        .exclude(status=EmailStatus.SENDING, send_started_at__isnull=False)
        .update(
            status=EmailStatus.QUEUED,
            next_attempt_at=now,
            attempts=0,
            claimed_by="",
            claimed_until=None,
            send_started_at=None,
        )
    )


def cancel(*, ids: Sequence[int], actor: str) -> int:
    """Stop queued rows from being sent; they end `failed`, saying who canceled them."""
    return OutboundEmail.objects.filter(id__in=list(ids), status=EmailStatus.QUEUED).update(
        status=EmailStatus.FAILED, last_error=f"canceled by {actor}"[:2000]
    )


def suppress_addresses(
    *, emails: Sequence[str], reason: str = SuppressionReason.MANUAL, note: str = ""
) -> int:
    """Add addresses to the suppression list (existing entries are kept); returns new ones.

    Mail still queued to them is marked `suppressed` now rather than at send time.
    """
    addresses = sorted({e.strip().lower() for e in emails if e and e.strip()})
    if not addresses:
        return 0
    with transaction.atomic():
        known = set(
            SuppressedAddress.objects.filter(email__in=addresses).values_list("email", flat=True)
        )
        SuppressedAddress.objects.bulk_create(
            [
                SuppressedAddress(email=a, reason=reason, note=note[:2000])
                for a in addresses
                if a not in known
            ],
            ignore_conflicts=True,
        )
        lowered = Q()
        for address in addresses:
            lowered |= Q(to__iexact=address)
        OutboundEmail.objects.filter(lowered, status=EmailStatus.QUEUED).update(
            status=EmailStatus.SUPPRESSED, last_error=f"address suppressed ({reason})"
        )
    return len([a for a in addresses if a not in known])


class FeedbackRefused(ValueError):
    """An SES event that names a message or recipient the outbox never sent."""


def record_ses_feedback(*, kind: str, message: dict[str, Any]) -> list[str]:
    """Apply a verified SES bounce or complaint event; returns the addresses suppressed.

    Only addresses the outbox sent that very message to (its `mail.messageId`
    is our `provider_message_id`) are suppressed, and only for permanent
    bounces and complaints. Anything else raises FeedbackRefused and changes
    nothing: a signed event of someone else's topic or message must not stop
    mail to our customers.
    """
    mail = message.get("mail") if isinstance(message.get("mail"), dict) else {}
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 255:
        raise FeedbackRefused("SES event has no mail.messageId")
    if kind == "bounce":
        event = message.get("bounce") if isinstance(message.get("bounce"), dict) else {}
        listed, reason = event.get("bouncedRecipients"), SuppressionReason.BOUNCE
        note = event.get("bounceSubType", "")
    else:
        event = message.get("complaint") if isinstance(message.get("complaint"), dict) else {}
        listed, reason = event.get("complainedRecipients"), SuppressionReason.COMPLAINT
        note = event.get("complaintFeedbackType", "")
    if not isinstance(listed, list) or not listed:
        raise FeedbackRefused(f"SES {kind} event names no recipients")
    addresses = []
    for item in listed:
        address = item.get("emailAddress") if isinstance(item, dict) else None
        if not isinstance(address, str) or not address.strip() or len(address) > 254:
            raise FeedbackRefused(f"SES {kind} event has a recipient without an emailAddress")
        addresses.append(address.strip().lower())
    sent_to = {
        to.lower()
        for to in OutboundEmail.objects.filter(provider_message_id=message_id).values_list(
            "to", flat=True
        )
    }
    if not sent_to:
        raise FeedbackRefused(f"mail.messageId {message_id[:80]!r} is not a message we sent")
    strangers = [a for a in addresses if a not in sent_to]
    if strangers:
        raise FeedbackRefused(
            f"message {message_id[:80]!r} was not sent to {strangers[0][:80]}; nothing suppressed"
        )
    if kind == "bounce" and event.get("bounceType") != "Permanent":
        return []  # transient: SES retries; the address stays
    suppress_addresses(emails=addresses, reason=reason, note=str(note or "")[:2000])
    return addresses


# --- queueing straight from a query (INSERT ... SELECT) ----------------------------

_SENTINEL = "QQFIELD{}QQ"
_SENTINEL_RE = re.compile(r"QQFIELD(\w+?)QQ")


def sql_html_escape(expr: str) -> str:
    """SQL for Django's `escape()` of a text expression (same five characters)."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        expr = f"replace({expr}, '{char}', '{entity}')"
    return f"replace({expr}, '''', '&#x27;')"


@dataclass(frozen=True)
class SqlRendered:
    """A template rendered into SQL expressions: literal pieces (parameters)
    around per-row column expressions."""

    subject: tuple[str, list[str]]
    body_text: tuple[str, list[str]]
    body_html: tuple[str, list[str]]


def render_sql(
    template: EmailTemplate, *, context: Mapping[str, Any], fields: Mapping[str, str]
) -> SqlRendered:
    """Render `template` once, with each of `fields` (name -> SQL text expression)
    left as a hole the database fills per row.

    Lets a job queue 100,000 emails with one INSERT ... SELECT while the text
    stays exactly what Django would render, as long as the templates print the
    fields without filters (HTML bodies get the same escaping, done in SQL).
    """
    holes = {name: _SENTINEL.format(name) for name in fields}
    rendered = template.render({**context, **holes})

    def build(text: str, *, html: bool, limit: int | None = None) -> tuple[str, list[str]]:
        sql_parts: list[str] = []
        params: list[str] = []
        pos = 0
        for match in _SENTINEL_RE.finditer(text):
            if match.start() > pos:
                sql_parts.append("%s")
                params.append(text[pos : match.start()])
            expr = f"({fields[match.group(1)]})"
            sql_parts.append(sql_html_escape(expr) if html else expr)
            pos = match.end()
        if pos < len(text) or not sql_parts:
            sql_parts.append("%s")
            params.append(text[pos:])
        sql = "(" + " || ".join(sql_parts) + ")"
        return (f"substr({sql}, 1, {limit})" if limit else sql), params

    return SqlRendered(
        subject=build(rendered.subject, html=False, limit=255),
        body_text=build(rendered.body_text, html=False),
        body_html=build(rendered.body_html, html=True),
    )


def queue_from_query(
    *,
    select_from: str,
    where: str,
    params: Sequence[Any],
    variants: Sequence[tuple[str | None, SqlRendered]],
    to_sql: str,
    organization_sql: str,
    kind: str,
    dedupe_key_sql: str,
    now: datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Queue one email per row of `SELECT ... FROM select_from WHERE where` in one
    INSERT ... SELECT ... ON CONFLICT (dedupe_key) DO NOTHING; returns rows queued
    (dry run: rows that would be). `variants` are (SQL condition, rendered) pairs;
    the first whose condition holds is used (None: always).
    """
    now = now or timezone.now()

    def case(part: str) -> tuple[str, list[Any]]:
        if len(variants) == 1 and variants[0][0] is None:
            return getattr(variants[0][1], part)
        sql, args = "CASE", []
        for condition, rendered in variants:
            expr, expr_args = getattr(rendered, part)
            if condition is None:
                sql += f" ELSE {expr}"
            else:
                sql += f" WHEN {condition} THEN {expr}"
            args += expr_args
        return sql + " END", args

    subject, subject_args = case("subject")
    text, text_args = case("body_text")
    html, html_args = case("body_html")
    table = connection.ops.quote_name(OutboundEmail._meta.db_table)
    select = f"""
        SELECT {organization_sql}, {to_sql}, {subject}, {text}, {html}, %s,
            {dedupe_key_sql} AS dedupe_key,
            %s, 0, %s, '', '', %s, ''
        FROM {select_from}
        WHERE {where}
    """
    args = [*subject_args, *text_args, *html_args, kind, EmailStatus.QUEUED, now, now, *params]
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute(
                f"""SELECT count(*) FROM ({select}) q
                WHERE NOT EXISTS (SELECT 1 FROM {table} e WHERE e.dedupe_key = q.dedupe_key)""",
                args,
            )
            return cursor.fetchone()[0]
        cursor.execute(
            f"""INSERT INTO {table} (organization_id, "to", subject, body_text, body_html, kind,
                dedupe_key, status, attempts, next_attempt_at, provider_message_id, last_error,
                created_at, claimed_by)
            {select}
            ON CONFLICT (dedupe_key) DO NOTHING""",
            args,
        )
        return cursor.rowcount

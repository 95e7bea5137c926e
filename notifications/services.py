"""Queue email through the outbox. Nothing else calls the mail backend.

Bodies are rendered when queued (so what was sent is what was stored, even if
a template changes later), and every row carries a dedupe key: queueing the
same key twice keeps the first row, which makes every caller's rerun safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.template.loader import get_template
from django.utils import timezone

from notifications.models import EmailStatus, OutboundEmail

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


def queue_email(
    *,
    to: str,
    kind: str,
    dedupe_key: str,
    template: str,
    context: Mapping[str, Any],
    organization_id: int | None = None,
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
    return queue_bulk(emails=[draft]) == 1


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

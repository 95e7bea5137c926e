"""Queueing email in the outbox. Nothing else calls the mail backend.

Bodies are rendered when queued (so what was sent is what was stored, even if
a template changes later), and every row carries a dedupe key: queueing the
same key twice keeps the first row, which makes every caller's rerun safe.
Three ways in: `queue_email` (one), `queue_bulk` / `queue_bulk_with_attachments`
(drafts rendered in Python), `queue_from_queryset` (one INSERT ... SELECT from
a queryset, rendered once with the per-row values filled in by the database).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from notifications.models import EmailAttachment, EmailStatus, OutboundEmail
from notifications.rendering import EmailTemplate, SqlRendered, render_email, render_sql

BULK_BATCH_SIZE = 2000


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


@dataclass(frozen=True)
class Variant:
    """A template and its context for the rows of `queue_from_queryset` whose
    boolean column `when` is true; `when=None`: every other row."""

    template: EmailTemplate
    context: Mapping[str, Any]
    when: str | None = None


def queue_from_queryset(
    rows: QuerySet[Any],
    *,
    kind: str,
    variants: Sequence[Variant],
    fields: Sequence[str],
    now: datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Queue one email per row of `rows` in one INSERT ... SELECT ... ON CONFLICT
    (dedupe_key) DO NOTHING; returns rows queued (dry run: rows that would be).

    `rows` is a `.values()` queryset with the columns `organization_id`, `to`,
    `dedupe_key`, each of `fields` (text filled into the templates, printed
    without filters) and each variant's `when`. The first variant whose `when`
    holds renders the row.
    """
    quote = connection.ops.quote_name
    holes = {name: f"q.{quote(name)}" for name in fields}
    rendered = [
        (
            f"q.{quote(v.when)}" if v.when else None,
            render_sql(v.template, context=v.context, fields=holes),
        )
        for v in variants
    ]
    sql, params = rows.order_by().query.sql_with_params()
    return _queue_from_select(
        select_from=f"({sql}) q",
        where="1 = 1",
        params=list(params),
        variants=rendered,
        to_sql=f"q.{quote('to')}",
        organization_sql=f"q.{quote('organization_id')}",
        kind=kind,
        dedupe_key_sql=f"q.{quote('dedupe_key')}",
        now=now,
        dry_run=dry_run,
    )


def _queue_from_select(
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
    the first whose condition holds is used (None: always). Internal: callers
    hand `queue_from_queryset` a queryset, never SQL text.
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

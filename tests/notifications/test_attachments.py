"""The outbox's queue_bulk_with_attachments: drafts with their files, queued once."""

from __future__ import annotations

import pytest

from notifications.models import EmailAttachment, OutboundEmail
from notifications.services import Attachment, EmailDraft, queue_bulk_with_attachments

pytestmark = pytest.mark.django_db


def draft(key: str) -> EmailDraft:
    return EmailDraft(
        to=f"{key}@example.com", kind="tests.doc", dedupe_key=key, subject="Doc", body_text="x"
    )


def test_drafts_are_queued_with_their_files_and_a_second_call_adds_nothing(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    pdf = Attachment("a.pdf", b"%PDF-1.7 a", "application/pdf")
    ids = queue_bulk_with_attachments(emails=[(draft("doc:1"), [pdf]), (draft("doc:2"), [])])

    assert set(ids) == {"doc:1", "doc:2"}
    assert OutboundEmail.objects.count() == 2
    stored = EmailAttachment.objects.get()
    assert (stored.email_id, stored.filename, stored.mimetype) == (
        ids["doc:1"],
        "a.pdf",
        "application/pdf",
    )
    assert stored.file.read() == b"%PDF-1.7 a"

    again = queue_bulk_with_attachments(emails=[(draft("doc:1"), [pdf])])
    assert again == {"doc:1": ids["doc:1"]}
    assert OutboundEmail.objects.count() == 2 and EmailAttachment.objects.count() == 1

"""The outbox's public API: every other app queues mail through these names
(drafts or querysets, never SQL text). One module per idea: `queueing`,
`suppression`, `staff`; templates render in `notifications.rendering`."""

from notifications.rendering import EmailTemplate, RenderedEmail, render_email
from notifications.services.queueing import (
    Attachment,
    EmailDraft,
    Variant,
    queue_bulk,
    queue_bulk_with_attachments,
    queue_email,
    queue_from_queryset,
)
from notifications.services.staff import cancel, retry_now
from notifications.services.suppression import (
    FeedbackRefused,
    record_ses_feedback,
    suppress_addresses,
)

__all__ = [
    "Attachment",
    "EmailDraft",
    "EmailTemplate",
    "FeedbackRefused",
    "RenderedEmail",
    "Variant",
    "cancel",
    "queue_bulk",
    "queue_bulk_with_attachments",
    "queue_email",
    "queue_from_queryset",
    "record_ses_feedback",
    "render_email",
    "retry_now",
    "suppress_addresses",
]

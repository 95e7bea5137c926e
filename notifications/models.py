"""The email outbox: every email the service sends is a row here first.

Jobs and services queue rows (bodies rendered at queue time, one recipient
per row, a unique dedupe key so reruns never queue twice); the
`notifications.send_pending` job claims due rows under a lease and sends them.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class EmailStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SUPPRESSED = "suppressed", "Suppressed"


class OutboundEmail(models.Model):
    organization = models.ForeignKey(
        "subscriptions.Organization",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="outbound_emails",
        db_index=False,  # outbox_org_idx leads with it
    )
    to = models.EmailField()
    subject = models.CharField(max_length=255)
    body_text = models.TextField()
    body_html = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=100)  # e.g. "subscriptions.expired"
    dedupe_key = models.CharField(max_length=255, unique=True)
    status = models.CharField(
        max_length=10, choices=EmailStatus.choices, default=EmailStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The lease of the sender that claimed the row (status `sending`): past
    # `claimed_until` another sender may take the row over.
    claimed_by = models.CharField(max_length=64, blank=True, default="", db_default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Written just before the provider is called: a row taken over with it set
    # may already have been accepted by the provider (see the README's window).
    send_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in EmailStatus]),
                name="outboundemail_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status=EmailStatus.SENT) | Q(sent_at__isnull=False),
                name="outboundemail_sent_has_sent_at",
            ),
            models.CheckConstraint(
                condition=~Q(dedupe_key=""), name="outboundemail_dedupe_key_set"
            ),
        ]
        indexes = [
            # The sender's work list: due rows still to send.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=[EmailStatus.QUEUED, EmailStatus.SENDING]),
                name="outbox_due_idx",
            ),
            models.Index(fields=["organization", "-created_at"], name="outbox_org_idx"),
            models.Index(fields=["kind", "-created_at"], name="outbox_kind_idx"),
            # SES feedback names the message it is about (notifications.views).
            models.Index(
                fields=["provider_message_id"],
                condition=~Q(provider_message_id=""),
                name="outbox_provider_message_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to} ({self.status})"


def attachment_path(instance: EmailAttachment, filename: str) -> str:
    return f"outbox/{instance.email_id}/{filename}"


class EmailAttachment(models.Model):
    """A stored file sent with an email (e.g. an invoice PDF)."""

    email = models.ForeignKey(OutboundEmail, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_path, max_length=500)
    filename = models.CharField(max_length=255)
    mimetype = models.CharField(max_length=100, default="application/octet-stream")

    def __str__(self) -> str:
        return self.filename


class SuppressionReason(models.TextChoices):
    BOUNCE = "bounce", "Bounced"
    COMPLAINT = "complaint", "Complained"
    MANUAL = "manual", "Added by staff"


class SuppressedAddress(models.Model):
    """An address that must not be mailed again (bounced, complained, or staff said so).

    Stored lower-cased; the sender marks mail to it `suppressed` instead of sending.
    """

    email = models.EmailField(unique=True)
    reason = models.CharField(
        max_length=10, choices=SuppressionReason.choices, default=SuppressionReason.MANUAL
    )
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["email"]
        verbose_name_plural = "suppressed addresses"
        constraints = [
            models.CheckConstraint(
                condition=Q(reason__in=[r.value for r in SuppressionReason]),
                name="suppressedaddress_reason_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs) -> None:
        self.email = self.email.strip().lower()
        super().save(*args, **kwargs)

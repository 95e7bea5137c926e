"""Stripe webhook events as received: stored by id before anything changes."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone as django_timezone


class WebhookEventStatus(models.TextChoices):
    RECEIVED = "received", "Received (to process)"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (unhandled type, stale, or nothing to change)"
    FAILED = "failed", "Failed"


class StripeWebhookEvent(models.Model):
    """One Stripe event for one tenant, stored once by its id (a redelivery is
    acknowledged and dropped by the unique constraint) and processed once by
    payments.process_stripe_webhooks. `created` is Stripe's own time of the
    event: an event older than one already applied to the same object changes
    nothing."""

    organization = models.ForeignKey(
        "subscriptions.Organization",
        on_delete=models.CASCADE,
        related_name="stripe_webhook_events",
        db_index=False,  # led by stripewebhookevent_unique_event
    )
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(help_text="When Stripe created the event.")
    livemode = models.BooleanField(default=False)
    payload = models.JSONField()
    received_at = models.DateTimeField(default=django_timezone.now)
    status = models.CharField(
        max_length=10, choices=WebhookEventStatus.choices, default=WebhookEventStatus.RECEIVED
    )
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, default="", help_text="What processing did, or why not.")

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "event_id"], name="stripewebhookevent_unique_event"
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in WebhookEventStatus]),
                name="stripewebhookevent_status_valid",
            ),
        ]
        indexes = [
            # The processing job: what is still to do, oldest first.
            models.Index(
                fields=["created", "id"],
                condition=Q(status="received"),
                name="stripewebhook_pending_idx",
            ),
            # Out of order: the newest event already applied to an object.
            models.Index(
                fields=["organization", "object_id", "created"], name="stripewebhook_object_idx"
            ),
            # The admin: each tenant's last webhook.
            models.Index(fields=["organization", "received_at"], name="stripewebhook_last_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.status})"

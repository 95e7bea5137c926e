"""Alert rules, their incidents and every delivery of a notice (see jobs.alerts).

Imported by jobs.models, so Django finds them in the jobs app.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class AlertCondition(models.TextChoices):
    FAILED = "failed", "Run failed"
    FAILED_OR_PARTIAL = "failed_or_partial", "Run failed or ended partial"
    RETRIES_SPENT = "retries_spent", "Last retry attempt failed"
    SILENCE_SUCCESS = "silence_success", "Silence: no successful run in X hours"
    SILENCE_ZERO = "silence_zero", "Silence: summary figure zero in every run of X days"
    EXCESS_LIMIT = "excess_limit", "Excess: summary figure above a limit"
    EXCESS_MEDIAN = "excess_median", "Excess: summary figure above K x its median of N runs"
    OVERDUE = "overdue", "Schedule overdue"


RUN_CONDITIONS = (
    AlertCondition.FAILED,
    AlertCondition.FAILED_OR_PARTIAL,
    AlertCondition.RETRIES_SPENT,
    AlertCondition.EXCESS_LIMIT,
    AlertCondition.EXCESS_MEDIAN,
)


class AlertRule(models.Model):
    """Staff's rule: which job (or all), which condition, which channel."""

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    job = models.CharField(max_length=100, blank=True, default="", help_text="Empty: every job.")
    condition = models.CharField(max_length=20, choices=AlertCondition.choices)
    figure = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Summary figure (silence by figure, excess), e.g. expired or usage.rows.",
    )
    hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Silence: no successful run in this many hours."
    )
    days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Silence by figure: zero in every run of these days."
    )
    limit = models.FloatField(null=True, blank=True, help_text="Excess: above this value.")
    factor = models.FloatField(null=True, blank=True, help_text="Excess: above K times the median.")
    runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Excess: the median of this many previous runs."
    )
    channel = models.CharField(max_length=30)
    target = models.TextField(
        help_text="Email: addresses, comma-separated. Webhook: the https URL."
    )
    secret = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Webhook: the HMAC-SHA256 signing secret (never shown again).",
    )
    cooldown_minutes = models.PositiveIntegerField(
        default=60,
        help_text="After an alert, the same rule and incident key stay quiet this long.",
    )
    created_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class IncidentState(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class AlertIncident(models.Model):
    """One incident of a rule (key: the job, tenant or schedule it is about).

    At most one open incident per rule and key: that is the dedupe. A rule and
    key notified within the cooldown open a quiet incident (`notified` false),
    whose resolution is quiet too.
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    key = models.CharField(max_length=250)
    state = models.CharField(
        max_length=10, choices=IncidentState.choices, default=IncidentState.OPEN
    )
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified = models.BooleanField(default=False)
    run = models.ForeignKey(
        "jobs.JobRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.TextField(blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "key"], condition=Q(state="open"), name="alertincident_one_open"
            )
        ]
        indexes = [models.Index(fields=["rule", "key", "-opened_at"], name="alertincident_key_idx")]

    def __str__(self) -> str:
        return f"{self.rule} {self.key} ({self.state})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One message to one channel, retried with backoff (jobs.deliveries)."""

    channel = models.CharField(max_length=30)
    target = models.TextField()
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class AlertDelivery(Delivery):
    """The delivery log: one notice (alert or resolved) to one channel."""

    incident = models.ForeignKey(AlertIncident, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=10)  # "alert" or "resolved"

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "kind", "channel"], name="alertdelivery_one_per_notice"
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alertdelivery_due_idx")]

    def __str__(self) -> str:
        return f"{self.kind} to {self.channel} ({self.status})"


class NoticeWhen(models.TextChoices):
    ALWAYS = "always", "Every completion"
    PROBLEMS = "problems", "Only when failed or partial"


class CompletionNotice(models.Model):
    """Tell someone a run finished (jobs.notices): for every run of a schedule,
    or for one run (set by the API's `notify`, or by staff for a run they
    started). Email recipients and/or a webhook."""

    schedule = models.ForeignKey(
        "jobs.ScheduleState",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notices",
        help_text="Every run of this schedule (leave empty for a single run).",
    )
    run = models.ForeignKey(
        "jobs.JobRun",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notices",
        help_text="Just this run (and its retry attempts).",
    )
    when = models.CharField(max_length=10, choices=NoticeWhen.choices, default=NoticeWhen.ALWAYS)
    emails = models.TextField(blank=True, default="", help_text="Comma-separated addresses.")
    webhook_url = models.CharField(max_length=500, blank=True, default="", help_text="http(s) URL.")
    secret = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Signs the webhook (HMAC-SHA256); never shown again.",
    )
    created_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(schedule__isnull=False, run__isnull=True)
                | Q(schedule__isnull=True, run__isnull=False),
                name="completionnotice_schedule_xor_run",
            ),
            models.CheckConstraint(
                condition=~Q(emails="") | ~Q(webhook_url=""),
                name="completionnotice_has_recipient",
            ),
        ]

    def __str__(self) -> str:
        what = f"schedule {self.schedule.job}" if self.schedule_id else f"run #{self.run_id}"
        return f"completion notice for {what}"


class NoticeDelivery(Delivery):
    """The completion notices' delivery log: one per notice, run and channel."""

    notice = models.ForeignKey(
        CompletionNotice, on_delete=models.CASCADE, related_name="deliveries"
    )
    run = models.ForeignKey("jobs.JobRun", on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notice deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["notice", "run", "channel"], name="noticedelivery_one_per_channel"
            )
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="noticedelivery_due_idx")
        ]

    def __str__(self) -> str:
        return f"notice of run #{self.run_id} to {self.channel} ({self.status})"

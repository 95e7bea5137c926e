"""Staff's own schedules beyond each job's default one (see jobs.custom_schedules).

Imported by jobs.models, so Django finds it in the jobs app.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Misfire(models.TextChoices):
    SKIP = "skip", "Skip missed slots"
    ONCE = "once", "Run once for the missed slots (the latest)"
    EACH = "each", "Run each missed slot (up to N, the latest)"


class CustomSchedule(models.Model):
    """A job on its own cron, in its own time zone, optionally for one tenant
    and with its own parameters. Its runs carry `schedule_key` (`custom:<id>`),
    part of JobRun's slot constraint, so each of its slots runs exactly once."""

    name = models.CharField(max_length=100, unique=True)
    job = models.CharField(max_length=100, db_index=True)
    cron = models.CharField(
        max_length=100, help_text="Stored as jobs.cron.normalize_cron returns it."
    )
    time_zone = models.CharField(max_length=64, default="UTC")
    tenant = models.CharField(max_length=100, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    misfire = models.CharField(max_length=4, choices=Misfire.choices, default=Misfire.ONCE)
    misfire_max = models.PositiveIntegerField(
        default=3, help_text="With 'run each missed slot': at most this many (the latest)."
    )
    next_run = models.DateTimeField(null=True, blank=True)
    last_slot = models.DateTimeField(null=True, blank=True)
    paused = models.BooleanField(default=False)
    paused_by = models.CharField(max_length=150, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True, default="")
    created_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["job", "tenant", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(paused=False) | ~Q(pause_reason=""),
                name="customschedule_pause_needs_reason",
            )
        ]
        indexes = [models.Index(fields=["paused", "next_run"], name="customschedule_due_idx")]

    def __str__(self) -> str:
        who = f" [{self.tenant}]" if self.tenant else ""
        return f"{self.name}: {self.job}{who} {self.cron} {self.time_zone}"

    @property
    def key(self) -> str:
        return f"custom:{self.pk}"

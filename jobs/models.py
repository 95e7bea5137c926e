"""What the platform remembers about job runs and schedules.

`JobRun` is Spring Batch's JobExecution: one row per attempt to run a job,
whatever triggered it. Two partial unique indexes do the coordination work
across processes and machines, on SQLite and PostgreSQL alike:

* one row per (job, tenant, slot) — a scheduled slot runs at most once;
* one `running` row per (job, tenant) — the same job never runs twice at once
  for the same tenant.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    # Its cluster shut down before it finished: waiting for the next cluster
    # to continue it from its checkpoint (jobs.cluster, jobs.runner).
    INTERRUPTED = "interrupted", "Interrupted"
    # Stopped by staff: a queued run before its task ran it, or a running one
    # at its next item or batch boundary (ctx.cancelled()); counts so far and
    # checkpoint kept, so a rerun continues (jobs.cancel).
    CANCELED = "canceled", "Canceled"


FINISHED_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.PARTIAL,
    RunStatus.FAILED,
    RunStatus.SKIPPED,
    RunStatus.CANCELED,
)


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    ADMIN = "admin", "Admin"
    API = "api", "API"
    CLI = "cli", "CLI"


class JobRun(models.Model):
    job = models.CharField(max_length=100, db_index=True)
    # The tenant's key ("" = all tenants). A string, so the platform knows no
    # business model and the unique indexes below never meet a NULL.
    tenant = models.CharField(max_length=100, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    dry_run = models.BooleanField(default=False)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    triggered_by = models.CharField(max_length=150, blank=True, default="")
    slot = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    queue = models.CharField(max_length=50, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    checkpoint = models.JSONField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    # When its task was last handed to the broker (queued and interrupted
    # runs): one not taken by then + JOBS_QUEUED_LOST_AFTER_SECONDS is sent again.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    # Set by "rerun failed items": the job only touches these item keys.
    only_items = models.JSONField(null=True, blank=True)
    # Retry policy (jobs.retry): the attempt of its slot this row is (1, 2, ...),
    # the failed attempt it retries, and when a queued attempt may start.
    # Database defaults too, so rows written by plain SQL (bench seeds) need not name them.
    attempt = models.PositiveIntegerField(default=1, db_default=1)
    retry_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retry"
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A scheduled slot waiting for another job's run (jobs.dependencies).
    waiting_for = models.CharField(max_length=300, blank=True, default="", db_default="")
    # Which schedule made the slot: "" the job's default one, "custom:<id>" a
    # staff's own (jobs.custom_schedules); part of the slot's identity.
    schedule_key = models.CharField(max_length=40, blank=True, default="", db_default="")
    # Asked by staff while it ran; the job stops at its next boundary.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Database defaults too, so rows written by plain SQL (bench seeds) need not name them.
    cancel_requested_by = models.CharField(max_length=150, blank=True, default="", db_default="")
    cancel_reason = models.TextField(blank=True, default="", db_default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "tenant", "schedule_key", "slot", "attempt"],
                condition=Q(slot__isnull=False),
                name="jobrun_one_per_schedule_slot_attempt",
            ),
            models.UniqueConstraint(
                fields=["job", "tenant"],
                condition=Q(status="running"),
                name="jobrun_one_running",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[s.value for s in RunStatus],
                ),
                name="jobrun_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["job", "status", "-finished_at"]),
            models.Index(fields=["status", "heartbeat_at"]),
            # /metrics reads the recent runs live and the rest from JobRunTotals.
            models.Index(fields=["finished_at"], name="jobrun_finished_at_idx"),
            # jobs.retry.send_due_retries: queued attempts whose time has come.
            models.Index(fields=["status", "next_attempt_at"], name="jobrun_next_attempt_idx"),
            # The admin's runs list: newest first, unfiltered and by job.
            models.Index(fields=["-created_at", "-id"], name="jobrun_list_idx"),
            models.Index(fields=["job", "-created_at", "-id"], name="jobrun_job_list_idx"),
            models.Index(fields=["status", "-created_at", "-id"], name="jobrun_status_list_idx"),
        ]
        permissions = [("run_job", "Can run, rerun, pause and resume jobs")]

    def __str__(self) -> str:
        who = f" [{self.tenant}]" if self.tenant else ""
        return f"{self.job}{who} #{self.pk} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def counts(self) -> dict[str, int]:
        return {
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
        }


class JobItemFailure(models.Model):
    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="failures")
    item_key = models.CharField(max_length=200)
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "item_key"], name="jobitemfailure_one_per_item")
        ]

    def __str__(self) -> str:
        return f"{self.item_key}: {self.error[:80]}"


class ScheduleState(models.Model):
    """The platform's side of a django-q2 Schedule: which job, and pause state.

    `synced_cron` is the cron `sync_schedules` last wrote; when the Schedule's
    cron differs from it, staff edited it and sync leaves it alone.
    """

    schedule = models.OneToOneField(
        "django_q.Schedule", on_delete=models.CASCADE, related_name="state"
    )
    job = models.CharField(max_length=100, unique=True)
    synced_cron = models.CharField(max_length=100, blank=True, default="")
    paused = models.BooleanField(default=False)
    paused_by = models.CharField(max_length=150, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True, default="")
    resumed_by = models.CharField(max_length=150, blank=True, default="")
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "job schedule"
        verbose_name_plural = "job schedules"
        constraints = [
            models.CheckConstraint(
                condition=Q(paused=False) | ~Q(pause_reason=""),
                name="schedulestate_pause_needs_reason",
            )
        ]

    def __str__(self) -> str:
        return f"{self.job} ({'paused' if self.paused else 'active'})"


class Backoff(models.TextChoices):
    EXPONENTIAL = "exponential", "Exponential"
    FIXED = "fixed", "Fixed"


class ScheduleRetryPolicy(models.Model):
    """Staff's override of a job's declared retry policy for its schedule's
    runs; an empty field keeps the declared value (jobs.retry.policy_for)."""

    schedule = models.OneToOneField(
        ScheduleState, on_delete=models.CASCADE, related_name="retry_policy"
    )
    retries = models.PositiveIntegerField(
        null=True, blank=True, help_text="Attempts after the first (0: no retry)."
    )
    backoff = models.CharField(max_length=12, choices=Backoff.choices, blank=True, default="")
    base_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Delay before the 2nd attempt (doubling if exponential)."
    )
    max_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Longest delay.")
    jitter = models.BooleanField(
        null=True, blank=True, help_text="Delay times a random 0.5-1, so retries spread out."
    )
    retry_failed_items = models.BooleanField(
        null=True,
        blank=True,
        help_text="A partial run's failed items get a new attempt (jobs that rerun items).",
    )
    updated_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "retry policy"
        verbose_name_plural = "retry policies"

    def __str__(self) -> str:
        return f"retry policy of {self.schedule.job}"


class JobAction(models.Model):
    """Who did what to which job, from the admin, API or CLI."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=50)
    job = models.CharField(max_length=100, db_index=True)
    run = models.ForeignKey(JobRun, null=True, blank=True, on_delete=models.SET_NULL)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.job}"


class ClusterHeartbeat(models.Model):
    """Written by a tiny scheduled task, so health sees a cluster that works."""

    cluster = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.cluster} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class JobChunk(models.Model):
    """One slice of a fanned-out run's items (see jobs.fanout).

    Created once per run and reused when the run is continued after a crash,
    so each slice is done once. Whoever claims a chunk (a chunk task on a
    cluster worker, or the parent run while it waits) holds it for a lease;
    a chunk whose worker died is claimed again when the lease runs out.
    """

    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    items = models.JSONField(default=list)
    status = models.CharField(
        max_length=10, choices=ChunkStatus.choices, default=ChunkStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="jobchunk_one_per_index"),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in ChunkStatus]),
                name="jobchunk_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["run", "status"], name="jobchunk_run_status_idx")]

    def __str__(self) -> str:
        return f"run #{self.run_id} chunk {self.index} ({self.status})"


class ApiKey(models.Model):
    """A client's key to the JSON API (see jobs.api_keys for the format).

    Only a SHA-256 hash of the key is stored; `lookup` is the key's public id
    (the characters after `bo_live_`), unique and indexed so authenticating
    is one indexed query. `scopes` is a list of scope strings
    (`jobs:run:billing.*`, `jobs:read`, `usage:write`, `*`): new kinds of
    scope need no schema change.
    """

    name = models.CharField(max_length=100, unique=True)
    owner = models.CharField(
        max_length=150, help_text="Who answers for this key: a person or a team."
    )
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute; empty: JOBS_API_RATE_LIMIT_PER_MINUTE; 0: unlimited.",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=150, blank=True, default="", editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.CharField(max_length=150, blank=True, default="", editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (bo_live_{self.lookup}…)"

    @property
    def prefix(self) -> str:
        """What may be shown and searched for: the key up to its secret part."""
        return f"bo_live_{self.lookup}"


class JobRunTotals(models.Model):
    """Finished runs folded into running totals, per job and status (dry runs
    left out), so `/metrics` costs the same whatever the history and deleting
    old runs (retention) never lowers a counter. Written only by
    jobs.metrics.fold_finished_runs; `MetricsWatermark` says up to when."""

    job = models.CharField(max_length=100)
    status = models.CharField(max_length=12, choices=RunStatus.choices)
    runs = models.BigIntegerField(default=0)
    processed = models.BigIntegerField(default=0)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    skipped = models.BigIntegerField(default=0)
    timed = models.BigIntegerField(default=0)  # runs with a start and an end
    duration_seconds = models.FloatField(default=0.0)
    # Cumulative counts of runs at most jobs.metrics.DURATION_BUCKETS[i] long.
    duration_buckets = models.JSONField(default=list)
    last_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "job run totals"
        constraints = [
            models.UniqueConstraint(fields=["job", "status"], name="jobruntotals_one_per_status")
        ]

    def __str__(self) -> str:
        return f"{self.job} {self.status}: {self.runs}"


class MetricsWatermark(models.Model):
    """One row: runs finished before `folded_until` are in JobRunTotals."""

    folded_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"folded until {self.folded_until:%Y-%m-%d %H:%M}"


class JobRunLog(models.Model):
    """The lines a run logged while it ran (INFO and up), the last
    JOBS_RUN_LOG_LINES of them, written by jobs.run_log."""

    run = models.OneToOneField(
        JobRun, on_delete=models.CASCADE, primary_key=True, related_name="run_log"
    )
    lines = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"log of run #{self.run_id} ({len(self.lines)} lines)"


# Alert rules, incidents and deliveries live in their own module (jobs.alerts).
from jobs.alert_models import (  # noqa: E402, F401
    AlertDelivery,
    AlertIncident,
    AlertRule,
    CompletionNotice,
    NoticeDelivery,
)
from jobs.schedule_models import CustomSchedule  # noqa: E402, F401

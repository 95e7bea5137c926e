"""The audit trail: who changed what, when, and from what to what.

Written in bulk by jobs (one row per changed object, in the same transaction
as the change) and one at a time by services, admin actions and API calls.
No foreign keys: the trail must outlive the rows, runs and tenants it
describes, and bulk inserts should not pay for per-row FK checks.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditTrail(models.Model):
    at = models.DateTimeField(default=timezone.now)
    # "job:subscriptions.expire#42", "user:alice", "api:ci-token".
    actor = models.CharField(max_length=150)
    # The tenant's key ("" for platform-wide records), as JobRun.tenant.
    tenant = models.CharField(max_length=100, blank=True, default="")
    action = models.CharField(max_length=100)  # e.g. "subscription.expired"
    object_type = models.CharField(max_length=100)  # e.g. "subscriptions.subscription"
    object_id = models.CharField(max_length=64)
    # {field: [before, after]} of the fields that changed.
    changes = models.JSONField(default=dict, blank=True)
    job_run_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # "What happened to this object?" (filter object_type on the few
            # rows found; leaving it out of the key halves the index, which
            # matters to jobs that write 100,000s of rows at once).
            models.Index(fields=["object_id", "at"], name="audit_object_idx"),
            # "What did this actor do?"
            models.Index(fields=["actor", "at"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        target = f"{self.object_type}:{self.object_id}"
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {target}"

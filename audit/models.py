"""The audit trail: who changed what, when, and from what to what.

Written one at a time by services, admin actions and API calls (one object,
`object_id`), and in bulk by jobs in the same statement as the change: one
record per tenant and identical before/after, listing every object it
changed in `object_ids`. A job that expires 500,000 subscriptions writes a
few tens of thousands of records, not 500,000 rows (each row costs WAL
records and index entries, which would double the job's time), and every
change is still on record, found by object within its tenant's records.
No foreign keys: the trail must outlive the rows, runs and tenants it
describes, and bulk inserts should not pay for per-row FK checks.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.indexes import BrinOnPostgresIndex


class AuditTrail(models.Model):
    at = models.DateTimeField(default=timezone.now)
    # "job:subscriptions.expire#42", "user:alice", "api:ci-token".
    actor = models.CharField(max_length=150)
    # The tenant's key ("" for platform-wide records), as JobRun.tenant.
    tenant = models.CharField(max_length=100, blank=True, default="")
    action = models.CharField(max_length=100)  # e.g. "subscription.expired"
    object_type = models.CharField(max_length=100)  # e.g. "subscriptions.subscription"
    object_id = models.CharField(max_length=64, blank=True, default="")
    # A bulk change: the ids of all objects that changed alike ([] otherwise).
    object_ids = models.JSONField(default=list, blank=True)
    # {field: [before, after]} of the fields that changed.
    changes = models.JSONField(default=dict, blank=True)
    job_run_id = models.BigIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        # Moved from `maintenance` with its table (audit 0001, maintenance
        # 0004): databases migrated before the move keep their rows.
        db_table = "maintenance_audittrail"
        ordering = ["-at", "-id"]
        indexes = [
            # "What happened to this object?" (object_type is checked on the
            # few rows found), for single changes and for bulk changes.
            models.Index(
                fields=["object_id", "at"],
                name="audit_object_idx",
                condition=~models.Q(object_id=""),
            ),
            # Bulk records are found through their tenant: an index entry per
            # record, not per listed id (a GIN entry per id cost as much as
            # the rows it saved).
            models.Index(fields=["tenant", "object_type", "at"], name="audit_tenant_idx"),
            # The admin's list, newest first.
            models.Index(fields=["-at", "-id"], name="audit_list_idx"),
            # The action filter: its choices (one probe per distinct action)
            # and a list of one action, newest first.
            models.Index(fields=["action", "-at", "-id"], name="audit_action_idx"),
            # "What did this actor do?"
            models.Index(fields=["actor", "at"], name="audit_actor_idx"),
            # The retention purge: "which rows are older than the cutoff?"
            BrinOnPostgresIndex(fields=["at"], name="audit_at_idx"),
        ]

    def __str__(self) -> str:
        target = f"{self.object_type}:{self.object_id or f'{len(self.object_ids)} objects'}"
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {target}"

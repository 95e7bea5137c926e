from django.contrib import admin

from jobs.admin_readonly import ReadOnlyAdminMixin
from maintenance.models import AuditTrail


@admin.register(AuditTrail)
class AuditTrailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: the trail is evidence, so nobody edits or deletes it here."""

    list_display = ("at", "actor", "tenant", "action", "object_type", "objects", "job_run_id")
    # Exact-match search uses the object and actor indexes; no list filters
    # or date hierarchy, whose DISTINCT queries would scan millions of rows.
    search_fields = ("=object_id", "=actor", "=tenant", "=request_id")
    show_full_result_count = False

    @admin.display(description="object(s)")
    def objects(self, obj: AuditTrail) -> str:
        """A single change's id, or how many objects a bulk change lists."""
        return obj.object_id or f"{len(obj.object_ids)} objects"

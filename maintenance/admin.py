from django.contrib import admin

from maintenance.models import AuditTrail


@admin.register(AuditTrail)
class AuditTrailAdmin(admin.ModelAdmin):
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

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

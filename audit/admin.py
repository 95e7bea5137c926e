import re

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.models import AuditTrail
from audit.selectors import audit_of_object
from jobs.admin_readonly import ReadOnlyAdminMixin

# "subscriptions.subscription:42": an object, as `object_type:object_id`.
OBJECT_TERM = re.compile(r"^(?P<type>[a-z_]+\.[a-z_]+):(?P<id>[\w.-]{1,64})$")


@admin.register(AuditTrail)
class AuditTrailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: the trail is evidence, so nobody edits or deletes it here."""

    list_display = ("at", "actor", "tenant", "action", "object_type", "objects", "job_run_id")
    # Exact-match search uses the object and actor indexes; no list filters
    # or date hierarchy, whose DISTINCT queries would scan millions of rows.
    search_fields = ("=object_id", "=actor", "=tenant", "=request_id", "=job_run_id")
    search_help_text = (
        "Exact match on an object id, actor (user:alice, api, job:subscriptions.expire#42), "
        "tenant key, request id or job run id; or type:id (subscriptions.subscription:42) "
        "for everything that happened to one object, bulk records included."
    )
    show_full_result_count = False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditTrail], search_term: str
    ) -> tuple[QuerySet[AuditTrail], bool]:
        """`type:id` finds an object's single and bulk records (audit_of_object)."""
        match = OBJECT_TERM.match(search_term.strip())
        if match:
            object_id: int | str = match["id"]
            if str(object_id).isdigit():
                object_id = int(object_id)  # bulk records list integer ids
            found = audit_of_object(object_type=match["type"], object_id=object_id)
            return queryset.filter(pk__in=found.values("pk")), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="object(s)")
    def objects(self, obj: AuditTrail) -> str:
        """A single change's id, or how many objects a bulk change lists."""
        return obj.object_id or f"{len(obj.object_ids)} objects"

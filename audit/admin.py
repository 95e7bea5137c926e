import re
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html_join

from audit.models import AuditTrail
from audit.selectors import audit_of_object, recorded_actions
from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.paginator import EstimatedCountPaginator

# "subscriptions.subscription:42": an object, as `object_type:object_id`.
OBJECT_TERM = re.compile(r"^(?P<type>[a-z_]+\.[a-z_]+):(?P<id>[\w.-]{1,64})$")


ACTOR_KINDS = (("user:", "staff (user:)"), ("job:", "jobs (job:)"), ("api", "API (api)"))


def _before_after(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2:
        before, after = value
        return f"{_short(before)} → {_short(after)}"
    return _short(value)


def _short(value: Any) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= 120 else text[:119] + "…"


class AuditActionFilter(admin.SimpleListFilter):
    """Every recorded action, read from the action index (recorded_actions)."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = set(recorded_actions())
        if self.value():
            names.add(self.value())
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditTrail]) -> QuerySet:
        return queryset.filter(action=self.value()) if self.value() else queryset


class AuditActorKindFilter(admin.SimpleListFilter):
    title = "actor"
    parameter_name = "actor_kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> tuple:
        return ACTOR_KINDS

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditTrail]) -> QuerySet:
        kinds = dict(ACTOR_KINDS)
        if self.value() in kinds:
            return queryset.filter(actor__startswith=self.value())
        return queryset


@admin.register(AuditTrail)
class AuditTrailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: the trail is evidence, so nobody edits or deletes it here."""

    list_display = (
        "at_display",
        "actor",
        "tenant",
        "action",
        "object_type",
        "objects",
        "change_list_display",
        "job_run_id",
    )
    # Filters without DISTINCT over the table: actions from the newest
    # records, actor kinds and date ranges (the list's index does the rest).
    list_filter = (AuditActionFilter, AuditActorKindFilter, "at")
    search_fields = (
        "=object_id",
        "actor__startswith",
        "action__startswith",
        "object_id__startswith",
        "=tenant",
        "=request_id",
        "=job_run_id",
    )
    search_help_text = (
        "Prefix of an actor (user:alice, api, job:subscriptions.expire), action "
        "(subscription.) or object id; exact tenant key, request id or job run id; or type:id "
        "(subscriptions.subscription:42) for everything that happened to one object, "
        "bulk records included."
    )
    show_full_result_count = False
    paginator = EstimatedCountPaginator

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

    @admin.display(description="At (UTC)", ordering="at")
    def at_display(self, obj: AuditTrail) -> str:
        return f"{obj.at:%Y-%m-%d %H:%M:%S}"

    @admin.display(description="Before → after")
    def change_list_display(self, obj: AuditTrail) -> str:
        """What changed, readable in the list: a pause shows its reason."""
        return format_html_join(
            "",
            "<div><strong>{}</strong>: {}</div>",
            ((name, _before_after(value)) for name, value in list((obj.changes or {}).items())[:6]),
        )

    @admin.display(description="Object(s)")
    def objects(self, obj: AuditTrail) -> str:
        """A single change's id, or how many objects a bulk change lists."""
        return obj.object_id or f"{len(obj.object_ids)} objects"

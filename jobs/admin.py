"""The jobs admin: schedules, runs and the record of who did what.

Schedules are shown through ScheduleState (one per job, beside its django-q2
Schedule), so the page speaks of jobs rather than of django-q2 rows. Runs and
actions are read-only: they are history. Acting needs `jobs.run_job`.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django_q import admin as django_q_admin
from django_q.admin import ScheduleAdmin as DjangoQScheduleAdmin
from django_q.models import Failure, OrmQ, Schedule, Success, Task

# admin_alerts, admin_notices and admin_schedules register their pages when imported.
from jobs import (  # noqa: F401
    admin_alerts,
    admin_console,
    admin_notices,
    admin_schedules,
    admin_views,
    humanize,
)
from jobs.admin_readonly import ReadOnlyAdminMixin
from jobs.admin_selfcare import RunAttemptFieldsMixin
from jobs.api_keys import KEY_PATTERN, create_api_key, record_key_change, revoke_api_key
from jobs.forms import ApiKeyForm, PauseForm, ScheduleStateForm
from jobs.models import (
    ApiKey,
    JobAction,
    JobChunk,
    JobItemFailure,
    JobRun,
    RunStatus,
    ScheduleState,
)
from jobs.paginator import EstimatedCountPaginator
from jobs.registry import all_jobs, get_job
from jobs.schedules import set_cron, upcoming
from jobs.selectors import latest_runs

# The index and the changelist call them job schedules; ScheduleState is an
# implementation name. (Better in ScheduleState.Meta, which the admin does not own.)

STATUS_COLOURS = {
    RunStatus.QUEUED: "#666",
    RunStatus.RUNNING: "#205493",
    RunStatus.SUCCEEDED: "#2e7d32",
    RunStatus.PARTIAL: "#b26a00",
    RunStatus.FAILED: "#ba2121",
    RunStatus.SKIPPED: "#666",
    RunStatus.CANCELED: "#6b4e16",
    RunStatus.INTERRUPTED: "#b26a00",
}


def status_html(status: str | None) -> str:
    """Coloured, so a failing run stands out in a long list."""
    if not status:
        return "-"
    return format_html(
        '<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(status, "#666"), status
    )


def run_link(run_id: int | None, status: str | None = None) -> str:
    """Takes an id, not a run, so annotated querysets need no extra query."""
    if not run_id:
        return "-"
    url = reverse("admin:jobs_jobrun_change", args=[run_id])
    if status is None:
        return format_html('<a href="{}">#{}</a>', url, run_id)
    return format_html('<a href="{}">#{}</a> {}', url, run_id, status_html(status))


def pretty_json(value: Any) -> str:
    """Indented, because params and summaries are read, not parsed."""
    return format_html(
        '<pre style="margin:0;white-space:pre-wrap">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def jobs_banner_context() -> dict[str, Any]:
    """Feeds the "scheduled jobs are off" banner shared by the jobs pages."""
    return {"background_jobs_enabled": settings.BACKGROUND_JOBS_ENABLED}


class RunJobPermissionMixin:
    """Makes `@admin.action(permissions=["run_job"])` mean `jobs.run_job`."""

    def has_run_job_permission(self, request: HttpRequest) -> bool:
        return admin_views.can_act(request.user)


# --- Schedules -------------------------------------------------------------------


@admin.register(ScheduleState)
class ScheduleStateAdmin(RunJobPermissionMixin, admin.ModelAdmin):
    form = ScheduleStateForm
    change_list_template = "admin/jobs/schedulestate/change_list.html"
    change_form_template = "admin/jobs/schedulestate/change_form.html"
    list_display = ["job", "cron", "next_runs", "last_run", "pause_state"]
    list_filter = ["paused"]
    search_fields = ["job"]
    ordering = ["job"]
    actions = ["run_now", "dry_run", "pause_schedules", "resume_schedules"]
    fieldsets = [
        (None, {"fields": ["job", "cron", "next_runs", "last_run"]}),
        (
            "Pause",
            {"fields": ["pause_state", "paused_at", "pause_reason", "resumed_by", "resumed_at"]},
        ),
        ("django-q2", {"fields": ["schedule_link", "synced_cron"]}),
    ]
    readonly_fields = [
        "job",
        "next_runs",
        "last_run",
        "pause_state",
        "paused_at",
        "pause_reason",
        "resumed_by",
        "resumed_at",
        "schedule_link",
        "synced_cron",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduleState]:
        return ScheduleState.objects.select_related("schedule")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # `manage.py sync_schedules` creates schedules from the registry

    def has_change_permission(self, request: HttpRequest, obj: ScheduleState | None = None) -> bool:
        """A cron edit is acting on the job, like pause and resume: `jobs.run_job`."""
        return admin_views.can_act(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: ScheduleState | None = None) -> bool:
        return False  # `sync_schedules --prune` removes them with their job

    @admin.display(description="Cron")
    def cron(self, obj: ScheduleState) -> str:
        """The expression, and in words in the scheduler's time zone."""
        if not obj.schedule.cron:
            return "-"
        return format_html(
            '<code>{}</code><div class="help">{}</div>',
            obj.schedule.cron,
            humanize.cron_in_words(obj.schedule.cron),
        )

    @admin.display(description="Next 5 runs (UTC)")
    def next_runs(self, obj: ScheduleState) -> str:
        times = upcoming(obj.schedule, 5)
        if not times:
            return "-"
        listed = format_html_join(", ", "{}", ((f"{t:%Y-%m-%d %H:%M:%S}",) for t in times))
        if obj.paused:
            return format_html("<s>{}</s> (paused)", listed)
        return listed

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's rows carry their job's latest run, read for all of them at once."""
        changelist = super().get_changelist_instance(request)
        states = list(changelist.result_list)  # the queryset keeps these objects
        runs = latest_runs(state.job for state in states)
        for state in states:
            state.latest_run = runs.get(state.job)
        return changelist

    @admin.display(description="Last run")
    def last_run(self, obj: ScheduleState) -> str:
        last = obj.latest_run if hasattr(obj, "latest_run") else latest_runs([obj.job]).get(obj.job)
        if last is None:
            return "never run"
        return format_html(
            "{} {} UTC",
            run_link(last["id"], last["status"]),
            f"{last['created_at']:%Y-%m-%d %H:%M:%S}",
        )

    @admin.display(description="Paused", ordering="paused")
    def pause_state(self, obj: ScheduleState) -> str:
        if not obj.paused:
            return "active"
        return format_html(
            "paused by <strong>{}</strong> since {} UTC: {}",
            obj.paused_by,
            f"{obj.paused_at:%Y-%m-%d %H:%M:%S}",
            obj.pause_reason,
        )

    @admin.display(description="django-q2 schedule")
    def schedule_link(self, obj: ScheduleState) -> str:
        url = reverse("admin:django_q_schedule_change", args=[obj.schedule_id])
        return format_html(
            '<a href="{}">{}</a> (next run {})', url, obj.schedule.name, obj.schedule.next_run
        )

    def save_model(
        self, request: HttpRequest, obj: ScheduleState, form: ScheduleStateForm, change: bool
    ) -> None:
        """Store the normalized cron on the Schedule; the next slot follows it."""
        set_cron(obj.job, form.cleaned_data["cron"], actor=request.user.get_username())

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**jobs_banner_context(), "title": "Job schedules", **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **jobs_banner_context(),
            "can_act": admin_views.can_act(request.user),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.action(description="Run now", permissions=["run_job"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[ScheduleState]) -> None:
        for state in queryset:
            admin_views.start_run(request, state.job, dry_run=False)

    @admin.action(description="Dry run", permissions=["run_job"])
    def dry_run(self, request: HttpRequest, queryset: QuerySet[ScheduleState]) -> None:
        for state in queryset:
            admin_views.start_run(request, state.job, dry_run=True)

    @admin.action(description="Pause (asks for a reason)", permissions=["run_job"])
    def pause_schedules(
        self, request: HttpRequest, queryset: QuerySet[ScheduleState]
    ) -> HttpResponse | None:
        """An intermediate page asks for the reason, as the delete action asks to confirm."""
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            for state in queryset:
                admin_views.pause_job(request, state.job, form.cleaned_data["reason"])
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Pause schedules",
            "form": form,
            "states": list(queryset),
            "opts": self.model._meta,
            "action": "pause_schedules",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/jobs/pause.html", context)

    @admin.action(description="Resume", permissions=["run_job"])
    def resume_schedules(self, request: HttpRequest, queryset: QuerySet[ScheduleState]) -> None:
        paused = [state for state in queryset if state.paused]
        if not paused:
            messages.warning(request, "None of the selected schedules is paused.")
        for state in paused:
            admin_views.resume_job(request, state.job)


class SuperuserWritesOnly:
    """django-q2's own admins: staff read them; only a superuser changes or
    deletes, and nobody adds (schedules come from the registry, tasks from code)."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)


class LockedScheduleAdmin(SuperuserWritesOnly, DjangoQScheduleAdmin):
    """Read-only: a Schedule row names the function the cluster calls, so none is
    made or edited here. Job schedules are edited under "Job schedules"; a row
    of a job is not deleted here either (`sync_schedules --prune` does that)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Schedule | None = None) -> list[str]:
        return [field.name for field in Schedule._meta.fields]

    def has_delete_permission(self, request: HttpRequest, obj: Schedule | None = None) -> bool:
        if obj is not None and ScheduleState.objects.filter(schedule=obj).exists():
            return False
        return super().has_delete_permission(request, obj)


def _superuser_resubmit(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
    return django_q_admin.resubmit_task(model_admin, request, queryset)


_superuser_resubmit.short_description = django_q_admin.resubmit_task.short_description
_superuser_resubmit.allowed_permissions = ("resubmit",)  # type: ignore[attr-defined]


class LockedTaskAdminMixin(SuperuserWritesOnly):
    """Task results: read-only, and "resubmit" (which enqueues the stored
    function again) only for superusers; a job's run is rerun from its JobRun."""

    actions = [_superuser_resubmit]

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)


class LockedSuccessAdmin(LockedTaskAdminMixin, django_q_admin.TaskAdmin):
    pass


class LockedFailureAdmin(LockedTaskAdminMixin, django_q_admin.FailAdmin):
    pass


class LockedQueueAdmin(SuperuserWritesOnly, django_q_admin.QueueAdmin):
    """The ORM broker's queue: signed task packages, read-only."""

    readonly_fields = django_q_admin.QueueAdmin.fields


for _model, _admin_class in (
    (Schedule, LockedScheduleAdmin),
    (Success, LockedSuccessAdmin),
    (Failure, LockedFailureAdmin),
    (OrmQ, LockedQueueAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
        admin.site.register(_model, _admin_class)


# --- Runs ------------------------------------------------------------------------


class JobFilter(admin.SimpleListFilter):
    """Every registered job, so a job that never ran can still be picked, and
    every job that has runs, so runs of a job since removed stay reachable."""

    title = "job"
    parameter_name = "job"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        """From the registry, not `SELECT DISTINCT job` over the whole history;
        a removed job's name still filters when typed in the URL (?job=...)."""
        names = {spec.name for spec in all_jobs()}
        if self.value():
            names.add(self.value())
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> QuerySet[JobRun]:
        if self.value():
            return queryset.filter(job=self.value())
        return queryset


class JobItemFailureInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = JobItemFailure
    fields = ["item_key", "error", "attempts", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False


class JobChunkInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A fanned-out run's chunks: who holds which, and how each ended."""

    model = JobChunk
    fields = [
        "index",
        "status",
        "attempts",
        "claimed_by",
        "processed",
        "succeeded",
        "failed",
        "skipped",
        "started_at",
        "finished_at",
        "error",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "chunks (fan-out)"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Part of the run: whoever may see the run sees its chunks."""
        return request.user.has_perm("jobs.view_jobrun")


@admin.register(JobRun)
class JobRunAdmin(RunAttemptFieldsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """History: rerun instead of editing; retention is a maintenance job, not a click."""

    change_form_template = "admin/jobs/jobrun/change_form.html"
    list_display = [
        "id",
        "job",
        "tenant",
        "status_badge",
        "started_by",
        "created_display",
        "duration_display",
        "counts_short",
    ]
    list_display_links = ["id", "job"]
    list_filter = [JobFilter, "status", "trigger", "dry_run", "created_at"]
    search_fields = ["job__startswith", "tenant__startswith", "task_id__exact"]
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False  # COUNT(*) over a large history on every page
    inlines = [JobItemFailureInline, JobChunkInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "job",
                    "tenant",
                    "status_badge",
                    "dry_run",
                    "trigger",
                    "triggered_by",
                    "slot",
                    "params_display",
                ]
            },
        ),
        (
            "Outcome",
            {
                "fields": [
                    "counts_display",
                    "summary_display",
                    "error_display",
                ]
            },
        ),
        (
            "Timing",
            {
                "fields": [
                    "created_when",
                    "started_when",
                    "finished_when",
                    "duration_display",
                    "heartbeat_when",
                    "attempts",
                    "attempt_display",
                    "next_attempt_display",
                    "waiting_for",
                    "cancel_display",
                ]
            },
        ),
        (
            "Links",
            {
                "fields": [
                    "task_link",
                    "queue",
                    "rerun_of_link",
                    "reruns_display",
                    "only_items",
                    "idempotency_key",
                ]
            },
        ),
    ]

    def get_ordering(self, request: HttpRequest) -> list[str]:
        """Newest first, led by the filtered column so PostgreSQL walks that
        column's list index (a rare job or status would otherwise cost a
        backward walk of the whole history's index)."""
        if request.GET.get("job"):
            return ["job", "-created_at", "-id"]
        if request.GET.get("status__exact"):
            return ["status", "-created_at", "-id"]
        return ["-created_at", "-id"]

    def get_inline_instances(
        self, request: HttpRequest, obj: JobRun | None = None
    ) -> list[admin.options.InlineModelAdmin]:
        """The chunks table only for a run that fanned out."""
        inlines = super().get_inline_instances(request, obj)
        if obj is None or not obj.chunks.exists():
            inlines = [i for i in inlines if not isinstance(i, JobChunkInline)]
        return inlines

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: JobRun) -> str:
        """A dry run says so beside its status (one column fewer in the list)."""
        if obj.dry_run:
            return format_html("{} <small>(dry run)</small>", status_html(obj.status))
        return status_html(obj.status)

    @admin.display(description="Created")
    def created_when(self, obj: JobRun) -> str:
        return humanize.when(obj.created_at)

    @admin.display(description="Started")
    def started_when(self, obj: JobRun) -> str:
        return humanize.when(obj.started_at)

    @admin.display(description="Finished")
    def finished_when(self, obj: JobRun) -> str:
        return humanize.when(obj.finished_at)

    @admin.display(description="Last heartbeat")
    def heartbeat_when(self, obj: JobRun) -> str:
        return humanize.when(obj.heartbeat_at)

    @admin.display(description="Cancellation")
    def cancel_display(self, obj: JobRun) -> str:
        if not obj.cancel_requested_at:
            return "-"
        return (
            f"asked by {obj.cancel_requested_by} at {humanize.when(obj.cancel_requested_at)}: "
            f"{obj.cancel_reason}"
        )

    @admin.display(description="Started by", ordering="trigger")
    def started_by(self, obj: JobRun) -> str:
        return (
            f"{obj.get_trigger_display()}: {obj.triggered_by}" if obj.triggered_by else obj.trigger
        )

    @admin.display(description="Created", ordering="created_at")
    def created_display(self, obj: JobRun) -> str:
        return f"{obj.created_at:%Y-%m-%d %H:%M:%S}"

    @admin.display(description="Counts")
    def counts_short(self, obj: JobRun) -> str:
        """processed/succeeded/failed/skipped, named on hover."""
        return format_html(
            '<span title="processed / succeeded / failed / skipped">{}/{}/{}/{}</span>',
            obj.processed,
            obj.succeeded,
            obj.failed,
            obj.skipped,
        )

    @admin.display(description="Duration")
    def duration_display(self, obj: JobRun) -> str:
        duration = obj.duration
        if duration is None:
            return "-"
        return f"{duration.total_seconds():.1f} s"

    @admin.display(description="Counts")
    def counts_display(self, obj: JobRun) -> str:
        return (
            f"processed {obj.processed} · succeeded {obj.succeeded} · "
            f"failed {obj.failed} · skipped {obj.skipped}"
        )

    @admin.display(description="Progress")
    def progress_display(self, obj: JobRun) -> str:
        return progress_text(obj)

    @admin.display(description="Parameters")
    def params_display(self, obj: JobRun) -> str:
        return pretty_json(obj.params)

    @admin.display(description="Summary")
    def summary_display(self, obj: JobRun) -> str:
        """Labelled values, money in major units; the raw JSON one click away."""
        rows = format_html_join(
            "", "<tr><th scope='row'>{}</th><td>{}</td></tr>", humanize.summary_rows(obj.summary)
        )
        return format_html(
            '<table class="jobs-summary"><tbody>{}</tbody></table>'
            "<details><summary>Raw JSON</summary>{}</details>",
            rows or mark_safe("<tr><td>(empty)</td></tr>"),
            pretty_json(obj.summary),
        )

    @admin.display(description="Error")
    def error_display(self, obj: JobRun) -> str:
        if not obj.error:
            return "-"
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.error)

    @admin.display(description="django-q2 task")
    def task_link(self, obj: JobRun) -> str:
        if not obj.task_id:
            return "-"
        success = Task.objects.filter(id=obj.task_id).values_list("success", flat=True).first()
        if success is None:
            return format_html("{} (no task result stored yet)", obj.task_id)
        name = "admin:django_q_success_change" if success else "admin:django_q_failure_change"
        return format_html('<a href="{}">{}</a>', reverse(name, args=[obj.task_id]), obj.task_id)

    @admin.display(description="Rerun of")
    def rerun_of_link(self, obj: JobRun) -> str:
        return run_link(obj.rerun_of_id)

    @admin.display(description="Reruns")
    def reruns_display(self, obj: JobRun) -> str:
        runs = list(obj.reruns.values_list("id", "status")[:20])
        if not runs:
            return "-"
        return format_html_join(", ", "{}", ((run_link(pk, status),) for pk, status in runs))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        context = {
            "can_act": admin_views.can_act(request.user),
            "can_cancel": run is not None and not run.is_finished,
            "live": admin_console.run_live_context(run) if run is not None else None,
            "can_rerun_failed_items": run is not None and can_rerun_items(run),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)


def can_rerun_items(run: JobRun) -> bool:
    """Only a job that honours ctx.only_items can rerun just its failed items."""
    try:
        supported = get_job(run.job).supports_item_rerun
    except LookupError:
        return False
    return supported and run.failures.exists()


def progress_text(run: JobRun) -> str:
    """Jobs that do not know their total still report what they have done."""
    if run.progress_total:
        percent = 100 * run.progress_done / run.progress_total
        return f"{run.progress_done} / {run.progress_total} ({percent:.0f}%)"
    if run.progress_done:
        return f"{run.progress_done} done"
    return "-"


# --- Who did what ----------------------------------------------------------------


@admin.register(JobAction)
class JobActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "actor", "action", "job", "run_link"]
    list_filter = ["action", "job", "at"]
    search_fields = ["actor", "job"]
    readonly_fields = ["at", "actor", "action", "job", "run_link", "detail_display"]
    fields = readonly_fields

    @admin.display(description="run")
    def run_link(self, obj: JobAction) -> str:
        return run_link(obj.run_id)

    @admin.display(description="detail")
    def detail_display(self, obj: JobAction) -> str:
        return pretty_json(obj.detail)


# --- API keys --------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made here (the secret is shown once, on the page after "Save"),
    edited (audited) and revoked; never deleted, so the audit trail's key
    names stay explained."""

    form = ApiKeyForm
    list_display = ["name", "prefix", "owner", "scope_list", "state", "last_used_at", "expires_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["name", "owner", "lookup"]
    actions = ["revoke"]
    readonly_fields = [
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        fields = ["name", "owner", "scopes_text", "expires_at", "rate_limit_per_minute"]
        return fields if obj is None else [*fields, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else list(self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """A leaked key pasted whole finds its row: it is searched by its lookup id."""
        match = KEY_PATTERN.fullmatch(search_term.strip())
        if match:
            search_term = match["lookup"]
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes or [])

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return format_html('<strong style="color:#ba2121">revoked</strong> {}', obj.revoked_at)
        if obj.expires_at and obj.expires_at <= timezone.now():
            return format_html('<strong style="color:#b26a00">expired</strong>')
        return "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ApiKeyForm, change: bool) -> None:
        actor = request.user.get_username()
        data = form.cleaned_data
        if not change:
            new = create_api_key(
                name=data["name"],
                owner=data["owner"],
                scopes=data["scopes_text"],
                actor=actor,
                expires_at=data.get("expires_at"),
                rate_limit_per_minute=data.get("rate_limit_per_minute"),
            )
            obj.pk = new.api_key.pk
            obj.refresh_from_db()
            request._new_api_key_secret = new.secret  # type: ignore[attr-defined]
            return
        changes = {
            name: [str(form.initial.get(name)), str(data.get(name))]
            for name in form.changed_data
            if name != "scopes_text"
        }
        if list(obj.scopes or []) != data["scopes_text"]:
            changes["scopes"] = [list(obj.scopes or []), data["scopes_text"]]
        obj.scopes = data["scopes_text"]
        with transaction.atomic():
            obj.save()
            if changes:
                record_key_change(api_key=obj, actor=actor, changes=changes)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None):
        """The one time the key is shown: not in a message (those live in a
        cookie or the session), on a page that is not cached."""
        secret = getattr(request, "_new_api_key_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": f"API key {obj.name} created",
            "api_key": obj,
            "secret": secret,
            "opts": self.model._meta,
        }
        response = TemplateResponse(request, "admin/jobs/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke (the key answers 401 from now on)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = [
            key.name
            for key in queryset
            if revoke_api_key(api_key=key, actor=request.user.get_username())
        ]
        if revoked:
            messages.success(request, f"Revoked: {', '.join(revoked)}.")
        else:
            messages.warning(request, "The selected keys were already revoked.")

"""Admin pages beyond ModelAdmin: the overview, and the per-job action URLs.

Every action is a POST (CSRF-protected by `admin_site.admin_view`) that needs
the `jobs.run_job` permission, and goes through `enqueue_run`, `rerun`,
`pause` or `resume`, which record who did it as a JobAction. Bad input
becomes a message on the next page, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from jobs import console_stats, custom_schedules, enqueue, humanize, schedules
from jobs.forms import PauseForm
from jobs.models import JobRun, ScheduleState, Trigger
from jobs.panels import overview_panels
from jobs.registry import get_job
from jobs.selectors import job_overview

RUN_JOB_PERMISSION = "jobs.run_job"
VIEW_PERMISSION = "jobs.view_jobrun"


def can_act(user) -> bool:
    """Viewing needs only view permissions; acting needs `jobs.run_job`."""
    return user.has_perm(RUN_JOB_PERMISSION)


class RunPermissionAdminMixin:
    """Self-care settings (alert rules, notices, retry policies, own schedules)
    change what the cluster runs or who it tells: adding, changing and deleting
    them needs `jobs.run_job` besides the model's own permission."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and can_act(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and can_act(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and can_act(request.user)


def needs_run_permission(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 for staff without `jobs.run_job`, whatever the method."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_act(request.user):
            raise PermissionDenied("you need the jobs.run_job permission")
        return view(request, *args, **kwargs)

    return wrapped


def actor(request: HttpRequest) -> str:
    """The name JobAction records, so the audit trail says who clicked."""
    return request.user.get_username()


def run_url(run: JobRun) -> str:
    """Where a message about a run should send the reader."""
    return reverse("admin:jobs_jobrun_change", args=[run.pk])


def start_run(request: HttpRequest, job: str, *, dry_run: bool) -> JobRun | None:
    """Enqueue a run of `job` with its default params; report the outcome as a message.

    A job whose real run changes what customers see is not started by one
    click: the message sends the reader to "Run now…" and its preview."""
    if not dry_run:
        try:
            spec = get_job(job)
        except LookupError as exc:
            messages.error(request, f"{job}: not run: {exc}")
            return None
        if spec.needs_confirmation:
            messages.warning(
                request,
                format_html(
                    '{}: not run: a real run {}; start it from <a href="{}">Run now…</a>, '
                    "which previews it first.",
                    job,
                    spec.impact,
                    reverse("jobs_start", args=[job]),
                ),
            )
            return None
    try:
        run, _ = enqueue.enqueue_run(
            job,
            trigger=Trigger.ADMIN,
            triggered_by=actor(request),
            dry_run=dry_run,
        )
    except (ValueError, LookupError) as exc:
        messages.error(request, f"{job}: not run: {exc}")
        return None
    kind = "Dry run" if dry_run else "Run"
    messages.success(
        request,
        format_html(
            '{} of {} queued as <a href="{}">run #{}</a>.', kind, job, run_url(run), run.pk
        ),
    )
    return run


def pause_job(request: HttpRequest, job: str, reason: str) -> bool:
    """Pause through `schedules.pause`; a refusal becomes a message."""
    try:
        schedules.pause(job, actor=actor(request), reason=reason)
    except (ValueError, LookupError) as exc:
        messages.error(request, f"{job}: not paused: {exc}")
        return False
    messages.success(request, f"{job}: paused. It will not run at its slots until resumed.")
    return True


def resume_job(request: HttpRequest, job: str) -> bool:
    """Resume through `schedules.resume`; a refusal becomes a message."""
    try:
        schedules.resume(job, actor=actor(request))
    except (ValueError, LookupError) as exc:
        messages.error(request, f"{job}: not resumed: {exc}")
        return False
    messages.success(request, f"{job}: resumed from its next slot; missed slots are not run.")
    return True


def _redirect_back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = default
    return HttpResponseRedirect(target)


def _schedule_url(job: str) -> str:
    state = ScheduleState.objects.filter(job=job).values_list("pk", flat=True).first()
    if state is None:
        return reverse("jobs_overview")
    return reverse("admin:jobs_schedulestate_change", args=[state])


def overview(request: HttpRequest) -> HttpResponse:
    """Every job at a glance: healthy, failing, overdue, running. Needs
    `jobs.view_jobrun` (or `jobs.run_job`): it shows every job's runs."""
    if not (request.user.has_perm(VIEW_PERMISSION) or can_act(request.user)):
        raise PermissionDenied("you need the jobs.view_jobrun permission")
    if request.GET.get("fragment"):
        return TemplateResponse(
            request,
            "admin/jobs/_overview_body.html",
            {"overview": job_overview(), "can_act": can_act(request.user)},
        )
    context = {
        **admin.site.each_context(request),
        "title": "Jobs overview",
        "overview": job_overview(),
        "panels": overview_panels(),
        "own_schedules": [
            {
                "schedule": schedule,
                "cron_words": humanize.cron_in_words(schedule.cron, schedule.time_zone),
                "next_run": humanize.when(schedule.next_run, schedule.time_zone),
            }
            for schedule in custom_schedules.overview_rows()
        ],
        "queues": console_stats.queue_depths(),
        "clusters": console_stats.clusters(),
        "background_jobs_enabled": settings.BACKGROUND_JOBS_ENABLED,
        "can_act": can_act(request.user),
    }
    return TemplateResponse(request, "admin/jobs/overview.html", context)


@require_POST
@needs_run_permission
def run_now(request: HttpRequest, name: str) -> HttpResponse:
    start_run(request, name, dry_run=False)
    return _redirect_back(request, _schedule_url(name))


@require_POST
@needs_run_permission
def dry_run(request: HttpRequest, name: str) -> HttpResponse:
    start_run(request, name, dry_run=True)
    return _redirect_back(request, _schedule_url(name))


@needs_run_permission
def pause(request: HttpRequest, name: str) -> HttpResponse:
    """A page of its own, because a pause needs a reason."""
    state = get_object_or_404(ScheduleState.objects.select_related("schedule"), job=name)
    form = PauseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        pause_job(request, name, form.cleaned_data["reason"])
        return _redirect_back(request, _schedule_url(name))
    context = {
        **admin.site.each_context(request),
        "title": f"Pause {name}",
        "form": form,
        "states": [state],
        "opts": ScheduleState._meta,
        "next": request.POST.get("next") or request.GET.get("next") or "",
    }
    return TemplateResponse(request, "admin/jobs/pause.html", context)


@require_POST
@needs_run_permission
def resume(request: HttpRequest, name: str) -> HttpResponse:
    resume_job(request, name)
    return _redirect_back(request, _schedule_url(name))


@require_POST
@needs_run_permission
def rerun(request: HttpRequest, pk: int) -> HttpResponse:
    return _rerun(request, pk, failed_items_only=False)


@require_POST
@needs_run_permission
def rerun_failed_items(request: HttpRequest, pk: int) -> HttpResponse:
    return _rerun(request, pk, failed_items_only=True)


def _rerun(request: HttpRequest, pk: int, *, failed_items_only: bool) -> HttpResponse:
    original = get_object_or_404(JobRun, pk=pk)
    try:
        new_run = enqueue.rerun(
            original,
            actor=actor(request),
            trigger=Trigger.ADMIN,
            failed_items_only=failed_items_only,
        )
    except (ValueError, LookupError) as exc:
        messages.error(request, f"Run #{original.pk} not rerun: {exc}")
        return HttpResponseRedirect(run_url(original))
    what = "Failed items of run" if failed_items_only else "Run"
    messages.success(
        request,
        format_html(
            '{} #{} queued again as <a href="{}">run #{}</a>.',
            what,
            original.pk,
            run_url(new_run),
            new_run.pk,
        ),
    )
    return HttpResponseRedirect(run_url(new_run))

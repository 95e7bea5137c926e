"""Admin pages of the platform's self-care: retry policies per schedule, and
the attempt fields of a run's page (see jobs.retry).

Kept apart from jobs.admin so each idea has its module; jobs.admin imports
this module (which registers its pages) and mixes `RunAttemptFieldsMixin`
into the run page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from jobs.admin_views import RunPermissionAdminMixin
from jobs.models import JobAction, JobRun, RunStatus, ScheduleRetryPolicy
from jobs.registry import UnknownJob, get_job
from jobs.retry import policy_for
from jobs.retry_policy import RetryPolicy


def _link(run_id: int) -> str:
    return format_html(
        '<a href="{}">#{}</a>', reverse("admin:jobs_jobrun_change", args=[run_id]), run_id
    )


def _when(moment: Any) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z}"


def _policy_text(policy: RetryPolicy) -> str:
    if policy.retries == 0:
        return "no retry"
    delay = f"{policy.base:g} s" + (" doubling" if policy.backoff == "exponential" else "")
    text = f"{policy.retries} retries, {delay}, at most {policy.max:g} s"
    if policy.jitter:
        text += ", jitter"
    if policy.items:
        text += ", failed items retried"
    return text


class RunAttemptFieldsMixin:
    """The run page's attempt: which one of its slot, and what comes next."""

    @admin.display(description="attempt")
    def attempt_display(self, obj: JobRun) -> str:
        try:
            policy = policy_for(get_job(obj.job).retry, obj)
        except UnknownJob:
            return str(obj.attempt)
        text = f"{obj.attempt} of {policy.retries + 1}"
        if obj.retry_of_id:
            return format_html("{} (retries {})", text, _link(obj.retry_of_id))
        return text

    @admin.display(description="next attempt")
    def next_attempt_display(self, obj: JobRun) -> str:
        if obj.status == RunStatus.QUEUED and obj.next_attempt_at:
            return f"this attempt starts at {_when(obj.next_attempt_at)}"
        following = JobRun.objects.filter(retry_of=obj).only("pk", "next_attempt_at").first()
        if following is None:
            return "-"
        return format_html(
            "attempt {} ({}) at {}",
            following.attempt,
            _link(following.pk),
            _when(following.next_attempt_at) if following.next_attempt_at else "-",
        )


@admin.register(ScheduleRetryPolicy)
class ScheduleRetryPolicyAdmin(RunPermissionAdminMixin, admin.ModelAdmin):
    """Staff's override of a job's declared policy for its schedule's runs."""

    list_display = ["job", "declared", "effective", "updated_by", "updated_at"]
    fields = [
        "schedule",
        "declared",
        "retries",
        "backoff",
        "base_seconds",
        "max_seconds",
        "jitter",
        "retry_failed_items",
        "updated_by",
        "updated_at",
    ]
    readonly_fields = ["declared", "updated_by", "updated_at"]
    list_select_related = ["schedule"]

    @admin.display(description="job", ordering="schedule__job")
    def job(self, obj: ScheduleRetryPolicy) -> str:
        return obj.schedule.job

    @admin.display(description="declared in the registry")
    def declared(self, obj: ScheduleRetryPolicy) -> str:
        if not obj.pk:
            return "-"
        try:
            return _policy_text(get_job(obj.schedule.job).retry)
        except UnknownJob:
            return "unknown job"

    @admin.display(description="in effect for scheduled runs")
    def effective(self, obj: ScheduleRetryPolicy) -> str:
        try:
            declared = get_job(obj.schedule.job).retry
        except UnknownJob:
            return "unknown job"
        probe = JobRun(job=obj.schedule.job, trigger="schedule")
        return _policy_text(policy_for(declared, probe))

    def save_model(
        self, request: HttpRequest, obj: ScheduleRetryPolicy, form: Any, change: bool
    ) -> None:
        obj.updated_by = request.user.get_username()
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
        JobAction.objects.create(
            actor=obj.updated_by,
            action="edit_retry_policy",
            job=obj.schedule.job,
            detail={
                "retries": obj.retries,
                "backoff": obj.backoff,
                "base_seconds": obj.base_seconds,
                "max_seconds": obj.max_seconds,
                "jitter": obj.jitter,
                "retry_failed_items": obj.retry_failed_items,
            },
        )

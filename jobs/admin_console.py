"""The console's own pages: "Run now…" with parameters, the confirmation of a
job that changes what customers see, cancellation, the tenant picker's
search, and the live fragments the overview and run pages refresh from.

Acting needs `jobs.run_job` (admin_views.needs_run_permission); every start
goes through `enqueue.enqueue_run` and every stop through `cancel.cancel_run`,
which record who did it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from jobs import charts, console_stats, enqueue, humanize, run_log, tenants
from jobs.admin_views import VIEW_PERMISSION, actor, can_act, needs_run_permission, run_url
from jobs.cancel import NotCancelable, cancel_run
from jobs.models import JobAction, JobRun, RunStatus, Trigger
from jobs.params import ParamError
from jobs.registry import JobSpec, UnknownJob, all_jobs, get_job
from jobs.run_forms import (
    NOTIFY_FIELDS,
    REASON_PARAM,
    CancelRunForm,
    ConfirmRunForm,
    StartRunForm,
)
from jobs.tenants import UnknownTenant

LIVE_REFRESH_SECONDS = 3


def _spec_or_404(name: str) -> JobSpec:
    try:
        return get_job(name)
    except UnknownJob:
        raise Http404(f"no job {name!r} is registered") from None


def _needs_view(request: HttpRequest) -> None:
    if not (request.user.has_perm(VIEW_PERMISSION) or can_act(request.user)):
        raise PermissionDenied("you need the jobs.view_jobrun permission")


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), "title": title, "opts": JobRun._meta, **context},
    )


@needs_run_permission
def start(request: HttpRequest, name: str) -> HttpResponse:
    """ "Run now…": the job's parameters as a form. A dry run, or a job
    without customer-visible impact, is queued at once; a real run of one
    with impact is previewed first (a dry run, then `confirm`)."""
    spec = _spec_or_404(name)
    form = StartRunForm(
        request.POST or None, spec=spec, initial={"tenant": request.GET.get("tenant", "")}
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        preview_first = spec.needs_confirmation and not data["dry_run"]
        try:
            run, _ = enqueue.enqueue_run(
                spec.name,
                tenant=data["tenant"],
                params=data["params"],
                dry_run=data["dry_run"] or preview_first,
                trigger=Trigger.ADMIN,
                triggered_by=actor(request),
                # A preview's notice waits for the real start (carried to `confirm`).
                notify=None if preview_first else data["notify"],
            )
        except (ParamError, UnknownTenant) as exc:
            form.add_error(None, str(exc))
        else:
            if preview_first:
                carried = {f: data[f] for f in NOTIFY_FIELDS if data.get(f)}
                query = f"?{urlencode(carried)}" if carried else ""
                return HttpResponseRedirect(reverse("jobs_confirm", args=[run.pk]) + query)
            kind = "Dry run" if run.dry_run else "Run"
            messages.success(
                request,
                format_html(
                    '{} of {} queued as <a href="{}">run #{}</a>.',
                    kind,
                    spec.name,
                    run_url(run),
                    run.pk,
                ),
            )
            return HttpResponseRedirect(run_url(run))
    return _page(
        request,
        "admin/jobs/console/start.html",
        f"Run {spec.name}",
        spec=spec,
        form=form,
        tenant_search_url=reverse("jobs_tenant_search"),
    )


@needs_run_permission
def confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """The preview of a real start: what the dry run `pk` says the job will
    do, then "Start for real" (with a reason when the job asks for one),
    which queues a run of the same job, tenant and parameters."""
    preview_run = get_object_or_404(JobRun, pk=pk, dry_run=True)
    spec = _spec_or_404(preview_run.job)
    form = ConfirmRunForm(
        request.POST or None,
        spec=spec,
        initial={f: request.GET.get(f, "") for f in NOTIFY_FIELDS},
    )
    finished = preview_run.is_finished
    if request.method == "POST" and finished and form.is_valid():
        reason = form.cleaned_data["reason"]
        params = dict(preview_run.params)
        if reason and any(p.name == REASON_PARAM for p in spec.params):
            params[REASON_PARAM] = reason
        sentence = _preview(spec, preview_run)
        try:
            with transaction.atomic():
                run, _ = enqueue.enqueue_run(
                    spec.name,
                    tenant=preview_run.tenant,
                    params=params,
                    trigger=Trigger.ADMIN,
                    triggered_by=actor(request),
                    notify=form.cleaned_data["notify"],
                )
                JobAction.objects.create(
                    actor=actor(request),
                    action="confirmed",
                    job=spec.name,
                    run=run,
                    detail={"preview_run": preview_run.pk, "preview": sentence, "reason": reason},
                )
        except (ParamError, UnknownTenant, LookupError) as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                format_html(
                    '{} started for real as <a href="{}">run #{}</a>.',
                    spec.name,
                    run_url(run),
                    run.pk,
                ),
            )
            return HttpResponseRedirect(run_url(run))
    return _page(
        request,
        "admin/jobs/console/confirm.html",
        f"Confirm {spec.name}",
        spec=spec,
        preview_run=preview_run,
        finished=finished,
        usable=preview_run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL),
        sentence=_preview(spec, preview_run) if finished else "",
        rows=humanize.summary_rows(preview_run.summary),
        raw_json=json.dumps(preview_run.summary, indent=2, sort_keys=True, default=str),
        form=form,
        refresh_seconds=LIVE_REFRESH_SECONDS,
    )


def _preview(spec: JobSpec, run: JobRun) -> str:
    return humanize.preview_sentence(spec.preview, run.summary, run.counts)


@needs_run_permission
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Asks why, then cancels (queued) or asks the run to stop (running)."""
    run = get_object_or_404(JobRun, pk=pk)
    form = CancelRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            outcome = cancel_run(run, actor=actor(request), reason=form.cleaned_data["reason"])
        except NotCancelable as exc:
            messages.error(request, f"Run #{run.pk} not canceled: {exc}")
        else:
            if outcome == "canceled":
                messages.success(request, f"Run #{run.pk} canceled: it will not run.")
            else:
                messages.success(
                    request,
                    f"Run #{run.pk} asked to stop: it ends canceled at its next item or batch.",
                )
        return HttpResponseRedirect(run_url(run))
    return _page(
        request, "admin/jobs/console/cancel.html", f"Cancel run #{run.pk}", run=run, form=form
    )


def tenant_search(request: HttpRequest) -> JsonResponse:
    """The tenant picker's suggestions: at most 20, by key or name prefix."""
    _needs_view(request)
    term = request.GET.get("q", "")
    return JsonResponse(
        {"results": [{"key": k, "label": lbl} for k, lbl in tenants.search(term, limit=20)]}
    )


def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The run page's live part (status, progress with rate and ETA, counts,
    log), re-fetched every few seconds while the run is not finished."""
    _needs_view(request)
    run = get_object_or_404(JobRun, pk=pk)
    response = TemplateResponse(request, "admin/jobs/console/_run_live.html", run_live_context(run))
    if run.is_finished:
        response["X-Live-Done"] = "1"
    return response


def run_live_context(run: JobRun) -> dict[str, Any]:
    return {
        "run": run,
        "progress": progress_facts(run),
        "log_lines": run_log.lines_of(run.pk)[-200:],
        "live_url": reverse("jobs_run_live", args=[run.pk]),
        "refresh_seconds": LIVE_REFRESH_SECONDS,
        "created": humanize.when(run.created_at),
        "started": humanize.when(run.started_at),
        "finished": humanize.when(run.finished_at),
    }


def progress_facts(run: JobRun, *, now: Any = None) -> dict[str, Any]:
    """Done, total, percent, rate (items/s) and ETA, from what the run reported."""
    now = now or timezone.now()
    done, total = run.progress_done, run.progress_total
    facts: dict[str, Any] = {
        "done": done,
        "total": total,
        "percent": None,
        "rate": None,
        "eta": None,
    }
    if total:
        facts["percent"] = min(100, round(100 * done / total))
    if run.started_at and done:
        end = run.finished_at or now
        seconds = max((end - run.started_at).total_seconds(), 0.001)
        facts["rate"] = done / seconds
        if total and total > done and run.status == RunStatus.RUNNING:
            facts["eta"] = timedelta(seconds=round((total - done) / facts["rate"]))
    return facts


WINDOWS = {"24h": 24, "7d": 24 * 7}


def charts_page(request: HttpRequest) -> HttpResponse:
    """Runs per hour by outcome (24 h and 7 days), items processed, duration
    p50/p95 per job, queue depth per queue and the clusters."""
    _needs_view(request)
    names = [spec.name for spec in all_jobs()]
    job = request.GET.get("job", "")
    if job not in names:
        job = ""
    what = job or "all jobs"
    figures = []
    durations: list[dict[str, Any]] = []
    for label, hours in WINDOWS.items():
        data = console_stats.activity(job=job, hours=hours, with_durations=hours == 24)
        if hours == 24:
            durations = data.durations
        figures.append(
            {
                "title": f"Runs per hour of {what}, last {label}, by outcome",
                "svg": charts.stacked_bars(
                    title=f"runs per hour, {label}", hours=data.hours, series=data.by_outcome
                ),
                "total": sum(sum(v) for v in data.by_outcome.values()),
            }
        )
        figures.append(
            {
                "title": f"Items processed per hour by {what}, last {label}",
                "svg": charts.stacked_bars(
                    title=f"items per hour, {label}",
                    hours=data.hours,
                    series={"items": data.processed},
                    unit="",
                ),
                "total": sum(data.processed),
            }
        )
    slowest = max([d["p95"] for d in durations] or [0])
    for row in durations:
        row["p50_bar"] = charts.hbar(row["p50"], slowest, "#205493")
        row["p95_bar"] = charts.hbar(row["p95"], slowest, "#b26a00")
    return _page(
        request,
        "admin/jobs/console/charts.html",
        "Jobs charts",
        names=names,
        job=job,
        figures=figures,
        legend=charts.legend(["succeeded", "partial", "failed"]),
        durations=durations,
        queues=console_stats.queue_depths(),
        clusters=console_stats.clusters(),
    )

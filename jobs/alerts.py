"""Alerts: staff's rules evaluated at the end of every run and every minute.

Conditions (jobs.alert_models.AlertCondition): a run failed (or ended
partial); a retry policy's last attempt failed; silence (no successful run in
X hours, or a summary figure zero in every run of the last X days); excess (a
summary figure above a limit, or above K times its median over the previous N
runs); a schedule overdue.

An incident is a rule and a key (the job and tenant, or the schedule) while
the condition holds: one open incident per rule and key (a unique index), one
alert when it opens, one "resolved" notice when it clears. A rule and key
alerted within the rule's cooldown open a quiet incident, so a flapping job
does not spam. Dry runs never alert.

Every query is an indexed window: the run's job and status with
`finished_at` (JobRun's `(job, status, -finished_at)` index), the last
JOBS_ALERT_LOOKBACK_MINUTES of finished runs (`finished_at`), and a rule's
own open incidents, so the cost does not grow with the history.
"""

from __future__ import annotations

import logging
import statistics
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from jobs import custom_schedules
from jobs.alert_models import (
    RUN_CONDITIONS,
    AlertCondition,
    AlertDelivery,
    AlertIncident,
    AlertRule,
    DeliveryStatus,
    IncidentState,
    NoticeDelivery,
)
from jobs.context import JobContext
from jobs.deliveries import attempt_delivery, notice_secret
from jobs.models import JobRun, RunStatus, ScheduleState
from jobs.registry import UnknownJob, all_jobs, get_job, job
from jobs.retry import policy_for, retries_spent
from jobs.schedule_models import CustomSchedule
from jobs.schedules import is_overdue

logger = logging.getLogger(__name__)

OUTCOMES = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)
SILENCE_MAX_RUNS = 5000  # runs a figure-silence rule reads (an hourly job: 208 days)
LOOKBACK_MAX_RUNS = 500


def run_url(run_id: int) -> str:
    return settings.JOBS_ADMIN_BASE_URL.rstrip("/") + reverse(
        "admin:jobs_jobrun_change", args=[run_id]
    )


def figure_of(summary: Any, path: str) -> float | None:
    """A summary's number at a dotted path (`usage.hours`); None if absent."""
    value = summary
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _rules(*, job_name: str, conditions: tuple[str, ...]) -> list[AlertRule]:
    return list(
        AlertRule.objects.filter(enabled=True, condition__in=conditions).filter(
            Q(job="") | Q(job=job_name)
        )
    )


def _superseded(run: JobRun) -> bool:
    """A later finished run of the job and tenant decides its incidents."""
    return JobRun.objects.filter(
        job=run.job,
        tenant=run.tenant,
        status__in=OUTCOMES,
        dry_run=False,
        finished_at__gt=run.finished_at,
    ).exists()


def evaluate_run(
    run: JobRun, *, rules: list[AlertRule] | None = None, latest: bool = False
) -> None:
    """At the end of every run: the run conditions of the rules for its job.
    The minute's evaluation hands in the enabled rules it read and says when
    `run` is known to be its job and tenant's latest finished run."""
    if run.dry_run or run.status not in OUTCOMES or run.finished_at is None:
        return
    if rules is None:
        rules = _rules(job_name=run.job, conditions=RUN_CONDITIONS)
    else:
        rules = [r for r in rules if r.condition in RUN_CONDITIONS and r.job in ("", run.job)]
    if not rules or (not latest and _superseded(run)):
        return
    for rule in rules:
        try:
            _evaluate_on_run(rule, run)
        except Exception:  # one rule's trouble must not hide the others
            logger.exception("alert rule %r could not be evaluated on run #%s", rule.name, run.pk)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def _evaluate_on_run(rule: AlertRule, run: JobRun) -> None:
    key = f"{run.job}|{run.tenant}" if run.tenant else run.job
    who = f"{run.job}" + (f" [{run.tenant}]" if run.tenant else "")
    condition = rule.condition
    if condition in (AlertCondition.FAILED, AlertCondition.FAILED_OR_PARTIAL):
        bad = run.status == RunStatus.FAILED or (
            condition == AlertCondition.FAILED_OR_PARTIAL and run.status == RunStatus.PARTIAL
        )
        message = f"{who} {run.status} (run #{run.pk}): {_first_line(run.error)}".rstrip(": ")
        if run.status == RunStatus.PARTIAL:
            message = f"{who} partial (run #{run.pk}): {run.failed} items failed"
    elif condition == AlertCondition.RETRIES_SPENT:
        try:
            policy = policy_for(get_job(run.job).retry, run)
        except UnknownJob:
            return
        if run.status == RunStatus.FAILED and not retries_spent(policy, run):
            return  # another attempt comes: neither alert nor resolved
        bad = run.status == RunStatus.FAILED
        message = (
            f"{who} failed its last attempt ({run.attempt} of {policy.retries + 1}, "
            f"run #{run.pk}): {_first_line(run.error)}"
        )
    else:
        if run.status == RunStatus.FAILED:
            return
        value = figure_of(run.summary, rule.figure)
        if value is None:
            return
        if condition == AlertCondition.EXCESS_LIMIT:
            if rule.limit is None:
                return
            bad = value > rule.limit
            message = (
                f"{who}: {rule.figure} = {value:g}, above the limit {rule.limit:g} (run #{run.pk})"
            )
        else:
            previous = _previous_figures(run, rule.figure, rule.runs or 0)
            if not rule.factor or not rule.runs or len(previous) < rule.runs:
                return
            median = statistics.median(previous)
            bad = value > rule.factor * median
            message = (
                f"{who}: {rule.figure} = {value:g}, above {rule.factor:g} x its median "
                f"{median:g} of the previous {rule.runs} runs (run #{run.pk})"
            )
    if bad:
        open_incident(rule, key=key, message=message, run=run)
    else:
        resolve_incident(rule, key=key, run=run)


def _previous_figures(run: JobRun, figure: str, count: int) -> list[float]:
    summaries = (
        JobRun.objects.filter(
            job=run.job,
            tenant=run.tenant,
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTIAL],
            dry_run=False,
            finished_at__lt=run.finished_at,
        )
        .order_by("-finished_at")
        .values_list("summary", flat=True)[: count * 2]
    )
    values = [v for v in (figure_of(s, figure) for s in summaries) if v is not None]
    return values[:count]


def open_incident(
    rule: AlertRule, *, key: str, message: str, run: JobRun | None = None, detail: Any = None
) -> AlertIncident | None:
    """Open the rule's incident for `key` unless one is open; alert unless the
    rule and key alerted within the cooldown."""
    incidents = AlertIncident.objects.filter(rule=rule, key=key)
    if incidents.filter(state=IncidentState.OPEN).exists():
        return None
    now = timezone.now()
    quiet = incidents.filter(
        notified=True, opened_at__gte=now - timedelta(minutes=rule.cooldown_minutes)
    ).exists()
    try:
        with transaction.atomic():
            incident = AlertIncident.objects.create(
                rule=rule,
                key=key,
                opened_at=now,
                notified=not quiet,
                run=run,
                message=message,
                detail=detail or {},
            )
    except IntegrityError:
        return None  # another evaluator opened it
    logger.warning("alert %r opened for %s%s: %s", rule.name, key, " (cooldown)" * quiet, message)
    if incident.notified:
        _notify(incident, "alert")
    return incident


def resolve_incident(rule: AlertRule, *, key: str, run: JobRun | None = None) -> bool:
    incident = AlertIncident.objects.filter(rule=rule, key=key, state=IncidentState.OPEN).first()
    if incident is None:
        return False
    now = timezone.now()
    resolved = AlertIncident.objects.filter(pk=incident.pk, state=IncidentState.OPEN).update(
        state=IncidentState.RESOLVED, resolved_at=now
    )
    if not resolved:
        return False
    incident.state, incident.resolved_at = IncidentState.RESOLVED, now
    if run is not None:
        incident.detail = {**incident.detail, "resolved_by_run": run.pk}
        AlertIncident.objects.filter(pk=incident.pk).update(detail=incident.detail)
    logger.info("alert %r resolved for %s", rule.name, key)
    if incident.notified:
        _notify(incident, "resolved")
    return True


def _payload(incident: AlertIncident, kind: str) -> dict[str, Any]:
    rule = incident.rule
    job_name, _, tenant = incident.key.removeprefix("schedule:").partition("|")
    url = run_url(incident.run_id) if incident.run_id else ""
    if kind == "alert":
        text = f"[ALERT] {rule.name}: {incident.message}"
    else:
        text = f"[RESOLVED] {rule.name}: {incident.key} is back to normal"
        resolved_by = incident.detail.get("resolved_by_run")
        if resolved_by:
            url = run_url(resolved_by)
    if url:
        text += f" <{url}>"
    return {
        "text": text,
        "subject": text.split(" <")[0][:200],
        "kind": kind,
        "rule": rule.name,
        "condition": rule.condition,
        "job": job_name,
        "tenant": tenant,
        "incident": incident.pk,
        "key": incident.key,
        "message": incident.message,
        "run_id": incident.run_id,
        "run_url": url,
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "detail": incident.detail,
    }


def _notify(incident: AlertIncident, kind: str) -> None:
    try:
        with transaction.atomic():
            delivery = AlertDelivery.objects.create(
                incident=incident,
                kind=kind,
                channel=incident.rule.channel,
                target=incident.rule.target,
                payload=_payload(incident, kind),
                next_attempt_at=timezone.now(),
            )
    except IntegrityError:
        return  # this notice is already on its way
    deliver(delivery)


def deliver(delivery: AlertDelivery) -> bool:
    """One attempt at an alert delivery (jobs.deliveries), signed with its rule's secret."""
    return attempt_delivery(delivery, secret=delivery.incident.rule.secret)


def deliver_pending(*, limit: int = 100) -> int:
    """Alert and notice deliveries whose retry time has come; how many went out."""
    now = timezone.now()
    due = AlertDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).select_related("incident__rule")[:limit]
    sent = sum(deliver(d) for d in due)
    notices = NoticeDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).select_related("notice")[:limit]
    return sent + sum(attempt_delivery(d, secret=notice_secret(d.notice)) for d in notices)


def _scheduled_jobs(rule: AlertRule) -> list[str]:
    if rule.job:
        return [rule.job]
    return [spec.name for spec in all_jobs() if spec.schedule]


def _evaluate_silence(rule: AlertRule, job_name: str, now: datetime) -> None:
    runs = JobRun.objects.filter(job=job_name, dry_run=False)
    if rule.condition == AlertCondition.SILENCE_SUCCESS:
        if not rule.hours:
            return
        since = now - timedelta(hours=rule.hours)
        last = (
            runs.filter(status=RunStatus.SUCCEEDED)
            .order_by("-finished_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        # Never succeeded: silent only once it has been running that long.
        bad = runs.filter(created_at__lt=since).exists() if last is None else last < since
        when = f"{last:%Y-%m-%d %H:%M} UTC" if last else "never"
        message = f"{job_name}: no successful run in {rule.hours} h (last success: {when})"
    else:
        if not rule.days or not rule.figure:
            return
        since = now - timedelta(days=rule.days)
        summaries = runs.filter(
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTIAL], finished_at__gte=since
        ).values_list("summary", flat=True)[:SILENCE_MAX_RUNS]
        values = [v for v in (figure_of(s, rule.figure) for s in summaries) if v is not None]
        bad = bool(values) and all(v == 0 for v in values)
        message = (
            f"{job_name}: {rule.figure} was 0 in every run of the last {rule.days} days "
            f"({len(values)} runs)"
        )
    if bad:
        open_incident(rule, key=job_name, message=message)
    else:
        resolve_incident(rule, key=job_name)


def _evaluate_overdue(rule: AlertRule, now: datetime) -> None:
    states = ScheduleState.objects.select_related("schedule")
    if rule.job:
        states = states.filter(job=rule.job)
    for state in states:
        key = f"schedule:{state.job}"
        if is_overdue(state.schedule, state, now=now):
            open_incident(
                rule,
                key=key,
                message=(
                    f"schedule {state.job} is overdue: its slot "
                    f"{state.schedule.next_run:%Y-%m-%d %H:%M} UTC was not scheduled "
                    "(is a cluster running?)"
                ),
            )
        else:
            resolve_incident(rule, key=key)
    own = CustomSchedule.objects.all()
    if rule.job:
        own = own.filter(job=rule.job)
    for schedule in own.only("pk", "name", "job", "paused", "next_run"):
        key = f"schedule:{schedule.job}|{schedule.key}"
        if custom_schedules.is_overdue(schedule, now=now):
            open_incident(
                rule,
                key=key,
                message=(
                    f"schedule {schedule.name!r} of {schedule.job} is overdue: its slot "
                    f"{schedule.next_run:%Y-%m-%d %H:%M} UTC was not fired (is a cluster running?)"
                ),
            )
        else:
            resolve_incident(rule, key=key)


def evaluate_alerts(*, now: datetime | None = None) -> dict[str, int]:
    """Every rule once: recent runs (in case a run ended without its own
    evaluation, e.g. abandoned), silence, overdue; then due delivery retries."""
    now = now or timezone.now()
    rules = list(AlertRule.objects.filter(enabled=True))
    evaluated = 0
    if any(r.condition in RUN_CONDITIONS for r in rules):
        lookback = now - timedelta(minutes=settings.JOBS_ALERT_LOOKBACK_MINUTES)
        recent = JobRun.objects.filter(
            finished_at__gte=lookback, dry_run=False, status__in=OUTCOMES
        ).order_by("-finished_at")[:LOOKBACK_MAX_RUNS]
        seen: set[tuple[str, str]] = set()
        for run in recent:  # newest first: the first of each job and tenant is its latest
            if (run.job, run.tenant) not in seen:
                seen.add((run.job, run.tenant))
                evaluate_run(run, rules=rules, latest=True)
                evaluated += 1
    for rule in rules:
        try:
            if rule.condition in (AlertCondition.SILENCE_SUCCESS, AlertCondition.SILENCE_ZERO):
                for job_name in _scheduled_jobs(rule):
                    _evaluate_silence(rule, job_name, now)
            elif rule.condition == AlertCondition.OVERDUE:
                _evaluate_overdue(rule, now)
        except Exception:
            logger.exception("alert rule %r could not be evaluated", rule.name)
    delivered = deliver_pending()
    open_count = AlertIncident.objects.filter(state=IncidentState.OPEN).count()
    return {
        "rules": len(rules),
        "runs_evaluated": evaluated,
        "retried_deliveries": delivered,
        "open_incidents": open_count,
    }


@job("jobs.evaluate_alerts", schedule="* * * * *", queue="critical", timeout=120)
def evaluate_alerts_job(ctx: JobContext) -> dict:
    """Evaluate every alert rule and retry due deliveries (the platform's own job)."""
    if ctx.dry_run:  # dry runs never alert
        return {"dry_run": True, "rules": AlertRule.objects.filter(enabled=True).count()}
    return evaluate_alerts()

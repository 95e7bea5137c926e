"""`/health/`: can this deployment run its jobs right now?

Four checks, each independent: the database answers, the broker answers, a
cluster wrote a heartbeat recently (so something both schedules and executes
tasks), and no active schedule is overdue. 200 when all pass, else 503, so a
load balancer or uptime probe needs no parsing. Public, so it says what
failed but never how the parts are reached: exception details go to the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django_q.brokers import get_broker

from jobs.models import ClusterHeartbeat, ScheduleState
from jobs.schedules import is_overdue

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 3.0

Check = Callable[[datetime], dict[str, Any]]


def check_database(now: datetime) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def check_broker(now: datetime) -> dict[str, Any]:
    """Ping in a thread with a deadline: an unreachable Redis host may
    otherwise hold the probe for the OS connect timeout."""
    outcome: dict[str, Any] = {}

    def ping() -> None:
        try:
            broker = get_broker()
            outcome["broker"] = type(broker).__name__
            outcome["ok"] = bool(broker.ping())
        except Exception as exc:
            outcome["exc"] = exc

    worker = threading.Thread(target=ping, name="health-broker-ping", daemon=True)
    worker.start()
    worker.join(BROKER_TIMEOUT_SECONDS)
    if worker.is_alive():
        return {"ok": False, "error": f"no answer within {BROKER_TIMEOUT_SECONDS:g} s"}
    if "exc" in outcome:
        raise outcome["exc"]
    result = {"ok": outcome.get("ok", False), "broker": outcome.get("broker")}
    if not result["ok"]:
        result["error"] = "ping failed"
    return result


def check_cluster(now: datetime) -> dict[str, Any]:
    max_age = settings.JOBS_CLUSTER_HEARTBEAT_MAX_AGE_SECONDS
    latest = ClusterHeartbeat.objects.order_by("-seen_at").first()
    if latest is None:
        return {
            "ok": False,
            "max_age_seconds": max_age,
            "error": "no cluster heartbeat yet: is qcluster running and sync_schedules done?",
        }
    age = (now - latest.seen_at).total_seconds()
    result: dict[str, Any] = {
        "ok": age <= max_age,
        "cluster": latest.cluster,
        "last_seen": latest.seen_at.isoformat(),
        "age_seconds": round(age, 1),
        "max_age_seconds": max_age,
    }
    if not result["ok"]:
        result["error"] = f"last heartbeat is {int(age)} s old (max {max_age} s)"
    return result


def overdue_schedules(now: datetime) -> tuple[list[dict[str, Any]], int, list[str]]:
    """(overdue, how many schedules were checked, paused job names). Shared
    with the metrics so both agree on what overdue means."""
    overdue, paused, checked = [], [], 0
    for state in ScheduleState.objects.select_related("schedule").order_by("job"):
        checked += 1
        if state.paused:
            paused.append(state.job)
        if is_overdue(state.schedule, state, now=now):
            next_run = state.schedule.next_run
            overdue.append(
                {
                    "job": state.job,
                    "next_run": next_run.isoformat(),
                    "late_seconds": int((now - next_run) / timedelta(seconds=1)),
                }
            )
    return overdue, checked, paused


def check_schedules(now: datetime) -> dict[str, Any]:
    overdue, checked, paused = overdue_schedules(now)
    result: dict[str, Any] = {
        "ok": not overdue,
        "checked": checked,
        "overdue": overdue,
        "paused": paused,
        "grace_seconds": settings.JOBS_OVERDUE_GRACE_SECONDS,
    }
    if overdue:
        result["error"] = f"{len(overdue)} schedule(s) overdue: " + ", ".join(
            item["job"] for item in overdue
        )
    return result


CHECKS: dict[str, Check] = {
    "database": check_database,
    "broker": check_broker,
    "cluster": check_cluster,
    "schedules": check_schedules,
}


def run_checks(now: datetime | None = None) -> dict[str, Any]:
    """Every check runs even when one fails; a check that raises has failed."""
    now = now or timezone.now()
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check(now)
        except Exception as exc:
            logger.warning("health check %s raised", name, exc_info=True)
            results[name] = {"ok": False, "error": f"check raised {type(exc).__name__}"}
    healthy = all(result.get("ok") for result in results.values())
    return {
        "status": "ok" if healthy else "fail",
        "checked_at": now.isoformat(),
        "background_jobs_enabled": bool(settings.BACKGROUND_JOBS_ENABLED),
        "checks": results,
    }


@csrf_exempt
@never_cache
def health_view(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503; always JSON."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(
            {"error": f"method {request.method} not allowed; use GET"}, status=405
        )
        response["Allow"] = "GET, HEAD"
        return response
    report = run_checks()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)

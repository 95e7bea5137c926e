"""Health, split the Kubernetes way.

* `/health/live`: the process answers (200, no query): restart it if not.
* `/health/ready`: the database and the broker answer: what a load balancer
  checks before sending traffic. A stopped cluster does not fail it, so the
  web tier and the admin stay up to show what is wrong.
* `/health/`: the full report for monitoring: also a cluster wrote a
  heartbeat recently (so something both schedules and executes tasks), and
  no active schedule is overdue.

Each check is independent; 200 when all pass, else 503, so a probe needs no
parsing. Public, so it says what failed but never how the parts are reached:
exception details go to the log. No thread per request: the broker is pinged
with connect and read timeouts on its client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django_q.brokers import get_broker
from django_q.conf import Conf

from jobs import custom_schedules
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


_broker_clients: dict[str, Any] = {}


def _redis_client(url: str) -> Any:
    """A Redis client for the broker's URL with timeouts, made once per process
    (its connection pool is reused, so a probe costs one PING)."""
    client = _broker_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        _broker_clients[url] = client
    return client


def check_broker(now: datetime) -> dict[str, Any]:
    """PING the Redis broker within BROKER_TIMEOUT_SECONDS (connect and read
    timeouts on the socket); the ORM broker is the database itself."""
    url = Conf.REDIS if isinstance(Conf.REDIS, str) else None
    if not url:
        broker = get_broker()
        return {"ok": bool(broker.ping()), "broker": type(broker).__name__}
    try:
        answered = bool(_redis_client(url).ping())
    except redis.TimeoutError:
        return {
            "ok": False,
            "broker": "Redis",
            "error": f"no answer within {BROKER_TIMEOUT_SECONDS:g} s",
        }
    result = {"ok": answered, "broker": "Redis"}
    if not answered:
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
    """(overdue, how many schedules were checked, paused job names): the jobs'
    default schedules by the rule the metrics share (`is_overdue`), then
    staff's own schedules (jobs.custom_schedules.is_overdue, the same grace)."""
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
    for own in custom_schedules.overdue_schedules(now=now):
        overdue.append(
            {
                "job": own.job,
                "schedule": own.name,
                "tenant": own.tenant,
                "next_run": own.next_run.isoformat(),
                "late_seconds": int((now - own.next_run) / timedelta(seconds=1)),
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


READY_CHECKS = ("database", "broker")


def run_checks(now: datetime | None = None, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every check (or those named) runs even when one fails; a check that
    raises has failed."""
    now = now or timezone.now()
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        if names is not None and name not in names:
            continue
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


def _get_only(view: Callable[[HttpRequest], JsonResponse]) -> Callable[[HttpRequest], JsonResponse]:
    def wrapped(request: HttpRequest) -> JsonResponse:
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse(
                {"error": f"method {request.method} not allowed; use GET"}, status=405
            )
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    wrapped.__doc__ = view.__doc__
    return csrf_exempt(never_cache(wrapped))


@_get_only
def health_view(request: HttpRequest) -> JsonResponse:
    """The full report: 200 when every check passes, else 503; always JSON."""
    report = run_checks()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


@_get_only
def live_view(request: HttpRequest) -> JsonResponse:
    """The process answers. Touches nothing, so it fails only when the process does."""
    return JsonResponse({"status": "ok"})


@_get_only
def ready_view(request: HttpRequest) -> JsonResponse:
    """Database and broker reachable: may this instance take traffic?"""
    report = run_checks(names=READY_CHECKS)
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)

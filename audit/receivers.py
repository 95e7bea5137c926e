"""Audit records for what staff and API clients do to jobs.

`jobs` records every run, rerun, pause, resume and cron edit as a JobAction
but knows no business app, so the audit trail listens here: each new
JobAction writes one AuditTrail record in the same transaction.
"""

from __future__ import annotations

from typing import Any

from audit.middleware import current_request_id
from audit.services import record_audit
from jobs.models import JobAction, Trigger

RUN_ACTIONS = {"run", "dry_run", "rerun", "rerun_failed_items"}


def audit_actor(*, actor: str, trigger: str | None) -> str:
    """How a JobAction's actor signs the trail: "user:alice", "api", "cli:bob"."""
    if trigger == Trigger.API:
        return "api" if actor in ("", Trigger.API) else f"api:{actor}"
    if trigger in (Trigger.CLI, Trigger.SCHEDULE):
        return f"{trigger}:{actor}" if actor and actor != trigger else str(trigger)
    return f"user:{actor}"  # admin actions, pause, resume and cron edits


def _changes(action: JobAction) -> dict[str, Any]:
    detail = action.detail or {}
    if action.action == "pause":
        return {"paused": [False, True], "pause_reason": ["", detail.get("reason", "")]}
    if action.action == "resume":
        return {"paused": [True, False]}
    if action.action == "edit_cron":
        return {"cron": [detail.get("from"), detail.get("to")]}
    if action.action.startswith("api_key_"):
        if "changes" in detail:
            return dict(detail["changes"])
        if action.action == "api_key_create":
            return {"key": [None, detail.get("key")], "scopes": [None, detail.get("scopes")]}
        return {"revoked": [False, True]}
    if action.action in ("cancel", "cancel_requested"):
        after = "canceled" if action.action == "cancel" else "cancel requested"
        return {
            "status": [detail.get("status_before"), after],
            "cancel_reason": ["", detail.get("reason", "")],
        }
    if action.action == "confirmed":
        return {
            "confirmed": [False, True],
            "reason": ["", detail.get("reason", "")],
            "preview_run": [None, detail.get("preview_run")],
        }
    if action.action == "refuse_schedule":
        return {"refused_func": [None, detail.get("func")], "repeats": [None, 0]}
    return {
        "status": [None, "queued"],
        "job": [None, action.job],
        **{key: [None, value] for key, value in detail.items() if key != "trigger"},
    }


def audit_job_action(sender: type, instance: JobAction, created: bool, **kwargs: Any) -> None:
    """post_save of JobAction: one audit record per new action."""
    if not created or kwargs.get("raw"):
        return
    detail = instance.detail or {}
    is_run = instance.action in RUN_ACTIONS or instance.run_id is not None
    if instance.action.startswith("api_key_"):
        object_type, object_id = "jobs.apikey", detail.get("key", "")
    elif is_run:
        object_type, object_id = "jobs.jobrun", instance.run_id
    else:
        object_type, object_id = "jobs.schedule", instance.job
    record_audit(
        actor=audit_actor(actor=instance.actor, trigger=detail.get("trigger")),
        action=f"job.{instance.action}",
        object_type=object_type,
        object_id=object_id,
        changes=_changes(instance),
        tenant=str(detail.get("tenant") or ""),
        job_run_id=instance.run_id,
        request_id=current_request_id(),
        at=instance.at,
    )

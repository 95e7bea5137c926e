"""The renewal sync with Stripe (`subscriptions.sync_renewals`).

Stripe is read per tenant (its gateway, limiter and breaker), each
subscription's new state decided here (`decide_sync`), and written back by
the subscriptions app's own service (`subscriptions.services.stripe_sync`),
which owns the rows and their audit records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from payments.tenant_calls import ERROR, OK, SKIPPED, TenantCalls, TenantRunResult
from subscriptions.models import ReconciliationStatus as R
from subscriptions.models import SubscriptionStatus
from subscriptions.selectors import RUNNING_VALUES
from subscriptions.services.common import ACTIVE, CANCELED, PAST_DUE
from subscriptions.services.stripe_sync import (
    LocalSubscription,
    SyncDecision,
    SyncIssue,
    mark_sync_errors,
    write_sync,
)

# Stripe's subscription statuses, as ours. Those not listed change nothing locally
# and are reported as a mismatch.
STRIPE_STATUS = {
    "trialing": SubscriptionStatus.TRIALING.value,
    "active": ACTIVE,
    "past_due": PAST_DUE,
    "unpaid": PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED.value,
    "incomplete_expired": SubscriptionStatus.CANCELED.value,
}


@dataclass(frozen=True)
class RemoteSubscription:
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool


def remote_subscription(data: dict[str, Any]) -> RemoteSubscription:
    """Read a Stripe Subscription: the period sits on the subscription in older
    API versions (and localstripe), on its items since 2025-03-31."""
    start, end = data.get("current_period_start"), data.get("current_period_end")
    items = (data.get("items") or {}).get("data") or []
    if end is None and items:
        start = items[0].get("current_period_start")
        end = items[0].get("current_period_end")
    return RemoteSubscription(
        status=str(data.get("status") or ""),
        current_period_start=datetime.fromtimestamp(start, UTC) if start else None,
        current_period_end=datetime.fromtimestamp(end, UTC) if end else None,
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
    )


def _keep(
    local: LocalSubscription, recon: str, error: str = "", issue: SyncIssue | None = None
) -> SyncDecision:
    return SyncDecision(
        local=local,
        status=local.status,
        current_period_start=local.current_period_start,
        current_period_end=local.current_period_end,
        auto_renew=local.auto_renew,
        cancel_at_period_end=local.cancel_at_period_end,
        reconciliation_status=recon,
        error=error,
        issue=issue,
    )


def decide_sync(
    local: LocalSubscription, remote: RemoteSubscription, *, push_cancellations: bool
) -> SyncDecision:
    """Stripe is the authority on status and period; the local side on a
    cancellation not yet sent and on a period it already advanced (a payment
    reconciled before Stripe's renewal): those are mismatches, never overwritten."""
    remote_status = STRIPE_STATUS.get(remote.status)
    if remote_status is None or remote.current_period_end is None:
        return _keep(local, R.MISMATCH, f"Stripe status {remote.status!r} has no local equivalent")
    remote_canceling = remote_status == CANCELED or remote.cancel_at_period_end
    if local.status == CANCELED or (local.status in RUNNING_VALUES and not local.auto_renew):
        # Canceled here (or renewal turned off here): Stripe must follow, not lead.
        if not remote_canceling:
            decision = _keep(
                local,
                R.MISMATCH,
                "local cancellation not yet sent to Stripe",
                SyncIssue.CANCELLATION_NOT_SENT,
            )
            decision.push_cancellation = push_cancellations
            return decision
        if local.status == CANCELED:
            return _keep(local, R.SYNCED)
    if remote.current_period_end < local.current_period_end:
        return _keep(
            local,
            R.MISMATCH,
            f"Stripe period ends {remote.current_period_end:%Y-%m-%d %H:%M}, before the local "
            f"{local.current_period_end:%Y-%m-%d %H:%M}; local period kept",
        )
    start = remote.current_period_start or local.current_period_start
    return SyncDecision(
        local=local,
        status=remote_status,
        current_period_start=start
        if start < remote.current_period_end
        else local.current_period_start,
        current_period_end=remote.current_period_end,
        auto_renew=not remote_canceling,
        cancel_at_period_end=remote.cancel_at_period_end,
        reconciliation_status=R.SYNCED,
    )


@dataclass
class RenewalSyncResult(TenantRunResult):
    selected: int = 0
    fetched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    changed: int = 0
    cancellations_sent: int = 0
    cancellations_pending: int = 0


class RenewalSync(TenantCalls):
    """Brings Stripe's view of renewing subscriptions into their local rows, batch
    by batch: Stripe reads on a thread pool (per-tenant limiter and breaker in
    the gateway), decisions in Python, one guarded UPDATE per batch.

    A local cancellation Stripe has not heard of is sent to it (unless
    `push_cancellations` is off or it is a dry run) with a deterministic
    idempotency key, so a rerun after a crash never sends it twice.
    """

    item_kind = "subscription"
    not_done = "subscription(s) not synced"
    thread_name_prefix = "sync"

    def __init__(
        self,
        *,
        now: datetime,
        actor: str,
        job_run_id: int | None = None,
        dry_run: bool = False,
        push_cancellations: bool = True,
        concurrency: int = 4,
        on_item_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, on_item_failure=on_item_failure)
        self.now = now
        self.actor = actor
        self.job_run_id = job_run_id
        self.dry_run = dry_run
        self.push_cancellations = push_cancellations
        self.result = RenewalSyncResult()

    def _fetch(self, local: LocalSubscription) -> tuple[str, Any]:
        return self._call(
            local.organization_id,
            lambda gateway: remote_subscription(
                gateway.retrieve_subscription(local.stripe_subscription_id)
            ),
        )

    def _push(self, decision: SyncDecision) -> str:
        """Send a local cancellation; returns an error message, or "" when sent."""
        local = decision.local
        org = local.organization_id
        period_end = local.current_period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind, value = self._call(
            org,
            lambda gateway: gateway.set_cancel_at_period_end(
                local.stripe_subscription_id,
                cancel=True,
                idempotency_key=f"org:{org}:renewal:{local.id}:{period_end}",
            ),
        )
        return "" if kind == OK else value

    def _tally(self, org: int, outcome: str) -> None:
        self.result.count(org, outcome)
        if outcome != SKIPPED:
            self.result.outcomes[outcome] = self.result.outcomes.get(outcome, 0) + 1

    def run_batch(self, batch: list[LocalSubscription]) -> None:
        r = self.result
        r.selected += len(batch)
        self._prepare({s.organization_id for s in batch})
        fetched = self._map(self._fetch, batch)
        decisions: list[SyncDecision] = []
        errors: dict[int, str] = {}
        for local, (kind, value) in zip(batch, fetched, strict=True):
            org = local.organization_id
            if kind == SKIPPED:
                self._tally(org, SKIPPED)
                continue
            if kind == ERROR:
                errors[local.id] = value
                continue
            r.fetched += 1
            decision = decide_sync(local, value, push_cancellations=self.push_cancellations)
            if decision.push_cancellation:
                if self.dry_run:
                    r.cancellations_pending += 1
                else:
                    failure = self._push(decision)
                    if failure:
                        errors[local.id] = f"sending the local cancellation: {failure}"
                        continue
                    decision.cancel_at_period_end = True
                    decision.reconciliation_status = R.SYNCED
                    decision.error = ""
                    decision.issue = None
                    r.cancellations_sent += 1
            elif decision.issue is SyncIssue.CANCELLATION_NOT_SENT:
                r.cancellations_pending += 1
            decisions.append(decision)
            self._tally(org, str(decision.reconciliation_status).lower())
        for local in batch:
            if local.id in errors:
                self._item_failed(local.id, errors[local.id])
                self._tally(local.organization_id, ERROR)
        if self.dry_run:
            r.changed += sum(1 for d in decisions if d.changed_fields)
            return
        if errors:
            mark_sync_errors(errors=errors, now=self.now)
        written = write_sync(
            decisions=decisions, now=self.now, actor=self.actor, job_run_id=self.job_run_id
        )
        r.changed += written.changed
        r.audit_records += written.audit_records

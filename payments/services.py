"""Every write to payments: provider keys, and the reconciliation write-back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import BulkChange, record_audit, record_bulk_audit
from core.sql import update_from_values
from payments.crypto import encrypt, rotate
from payments.gateway import forget_tenant
from payments.models import (
    OPEN_STATUSES,
    Payment,
    PaymentProviderConfig,
    PaymentStatus,
    Provider,
)
from payments.selectors import OpenPayment
from payments.tenant_calls import ERROR, OK, SKIPPED, TenantCalls, TenantRunResult
from subscriptions.services.payment_outcomes import (
    mark_subscriptions_past_due,
    renew_paid_subscriptions,
)

CONFIG_OBJECT_TYPE = "payments.paymentproviderconfig"


def set_provider_keys(
    *,
    organization: Any,
    actor: str,
    secret_key: str | None = None,
    publishable_key: str | None = None,
    webhook_secret: str | None = None,
    enabled: bool | None = None,
    requests_per_second: float | None = None,
    provider: str = Provider.STRIPE,
) -> PaymentProviderConfig:
    """Create or change an organization's provider config. `None` leaves a value
    as it is. Secrets are encrypted here; the audit row says only which changed."""
    with transaction.atomic():
        config, created = PaymentProviderConfig.objects.select_for_update().get_or_create(
            organization=organization, defaults={"provider": provider}
        )
        changed: dict[str, Any] = {}
        if secret_key is not None:
            secret_key = secret_key.strip()
            config.secret_key_encrypted = encrypt(secret_key)
            config.secret_key_prefix = secret_key[:8] if len(secret_key) > 12 else ""
            config.secret_key_last4 = secret_key[-4:] if len(secret_key) > 12 else ""
            changed["secret_key"] = "changed"
        if webhook_secret is not None:
            config.webhook_secret_encrypted = encrypt(webhook_secret.strip())
            changed["webhook_secret"] = "changed"
        if publishable_key is not None and publishable_key != config.publishable_key:
            changed["publishable_key"] = [config.publishable_key, publishable_key]
            config.publishable_key = publishable_key.strip()
        if enabled is not None and enabled != config.enabled:
            changed["enabled"] = [config.enabled, enabled]
            config.enabled = enabled
        if requests_per_second is not None and (requests_per_second or None) != (
            config.requests_per_second
        ):
            changed["requests_per_second"] = [config.requests_per_second, requests_per_second]
            config.requests_per_second = requests_per_second or None
        config.updated_at = timezone.now()
        config.save()
        if changed or created:
            record_audit(
                actor=actor,
                action="payments.provider_config.created"
                if created
                else "payments.provider_config.changed",
                object_type=CONFIG_OBJECT_TYPE,
                object_id=config.pk,
                changes=changed,
                tenant=organization.key,
            )
    forget_tenant(organization.pk)
    return config


def reencrypt_secrets() -> int:
    """Encrypt every stored secret again with the first FIELD_ENCRYPTION_KEY
    (after a rotation); returns how many configs were rewritten."""
    done = 0
    with transaction.atomic():
        for config in PaymentProviderConfig.objects.select_for_update().order_by("pk"):
            config.secret_key_encrypted = rotate(config.secret_key_encrypted)
            config.webhook_secret_encrypted = rotate(config.webhook_secret_encrypted)
            config.save(update_fields=["secret_key_encrypted", "webhook_secret_encrypted"])
            done += 1
    return done


# --- reconciliation -------------------------------------------------------------------

PAYMENT_OBJECT_TYPE = "payments.payment"
OPEN = "open"  # checked, still waiting on the customer or Stripe: no transition
PER_TENANT_IN_SUMMARY = 50


def classify_intent(intent: dict[str, Any]) -> tuple[str, str]:
    """(local status or OPEN, failure reason) for a PaymentIntent.

    A failed attempt puts an intent back to requires_payment_method with a
    last_payment_error: that is a failed payment. requires_confirmation,
    requires_action and requires_capture still wait on someone: open.
    """
    status = intent.get("status")
    if status == "succeeded":
        return PaymentStatus.SUCCEEDED, ""
    if status == "canceled":
        return PaymentStatus.CANCELED, intent.get("cancellation_reason") or "canceled"
    if status == "processing":
        return PaymentStatus.PROCESSING, ""
    error = intent.get("last_payment_error")
    if status == "requires_payment_method" and error:
        return PaymentStatus.FAILED, (error.get("message") or error.get("code") or "failed")[:500]
    return OPEN, ""


@dataclass
class Checked:
    payment: OpenPayment
    outcome: str  # a PaymentStatus, OPEN, "error" or "skipped"
    reason: str = ""


@dataclass
class ReconcileResult(TenantRunResult):
    checked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    subscriptions_renewed: int = 0
    subscriptions_past_due: int = 0
    subscriptions_left_alone: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"stripe": 0.0, "write_back": 0.0})


class PaymentReconciler(TenantCalls):
    """Checks open payments against their PaymentIntents and writes the outcomes back.

    Stripe reads run on a thread pool (`concurrency`), each under its
    tenant's limiter and breaker; nothing in the threads touches the database.
    Each batch's outcomes are written in one transaction: one UPDATE ... FROM
    for every payment, bulk audit rows, set-based subscription changes. The
    write is guarded by the payment still being open, so a second run, or an
    overlapping one, transitions nothing twice.
    """

    item_kind = "payment"
    not_done = "payment(s) not checked"
    thread_name_prefix = "reconcile"

    def __init__(
        self,
        *,
        now: datetime,
        actor: str,
        job_run_id: int | None = None,
        dry_run: bool = False,
        concurrency: int = 8,
        on_item_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, on_item_failure=on_item_failure)
        self.now = now
        self.actor = actor
        self.job_run_id = job_run_id
        self.dry_run = dry_run
        self.result = ReconcileResult()

    def run_batch(self, batch: list[OpenPayment]) -> None:
        self.apply(self.check(batch))

    # --- Stripe ---------------------------------------------------------------

    def _check(self, payment: OpenPayment) -> Checked:
        kind, value = self._call(
            payment.organization_id,
            lambda gateway: gateway.retrieve_payment_intent(payment.provider_reference),
        )
        if kind != OK:
            return Checked(payment, kind, value)
        outcome, reason = classify_intent(value)
        return Checked(payment, outcome, reason)

    def check(self, payments: list[OpenPayment]) -> list[Checked]:
        self._prepare({p.organization_id for p in payments})
        started = time.perf_counter()
        checked = self._map(self._check, payments)
        self.result.seconds["stripe"] += time.perf_counter() - started
        return checked

    # --- the write-back -------------------------------------------------------

    def apply(self, checked: list[Checked]) -> None:
        r = self.result
        seen: list[Checked] = []
        for c in checked:
            r.count(c.payment.organization_id, c.outcome)
            if c.outcome == ERROR:
                self._item_failed(c.payment.id, c.reason)
            elif c.outcome != SKIPPED:
                r.checked += 1
                r.outcomes[c.outcome] = r.outcomes.get(c.outcome, 0) + 1
                seen.append(c)
        if self.dry_run or not seen:
            return
        # Known already when a run's batches came through _prepare; a caller
        # applying outcomes it learned elsewhere (a Stripe webhook) gets them here.
        self._learn_tenant_keys({c.payment.organization_id for c in seen})
        started = time.perf_counter()
        with transaction.atomic():
            self._write(seen)
        r.seconds["write_back"] += time.perf_counter() - started

    def _write(self, seen: list[Checked]) -> None:
        rows = [
            (
                c.payment.id,
                c.payment.status if c.outcome == OPEN else str(c.outcome),
                c.reason,
            )
            for c in seen
        ]
        open_sql = ", ".join(f"'{s.value}'" for s in OPEN_STATUSES)
        changed = update_from_values(
            table=Payment._meta.db_table,
            columns=[("id", "bigint"), ("status", "text"), ("reason", "text")],
            rows=rows,
            set_sql=(
                "status = v.status, "
                "failure_reason = CASE WHEN v.status = %(failed)s THEN v.reason "
                "WHEN v.status = %(canceled)s THEN v.reason ELSE t.failure_reason END, "
                "succeeded_at = CASE WHEN v.status = %(succeeded)s THEN %(now)s "
                "ELSE t.succeeded_at END, "
                "attempts = t.attempts + 1, last_checked_at = %(now)s, updated_at = %(now)s"
            ),
            where_sql=f"t.status IN ({open_sql})",
            params={
                "failed": PaymentStatus.FAILED.value,
                "canceled": PaymentStatus.CANCELED.value,
                "succeeded": PaymentStatus.SUCCEEDED.value,
                "now": self.now,
            },
            returning="id",
        )
        written = {row[0] for row in changed}
        transitions: dict[tuple[int, str, str], list[int]] = {}
        paid: list[int] = []
        unpaid: list[int] = []
        for c in seen:
            p = c.payment
            if p.id not in written or c.outcome == OPEN or c.outcome == p.status:
                continue
            transitions.setdefault((p.organization_id, p.status, str(c.outcome)), []).append(p.id)
            if p.subscription_id and c.outcome == PaymentStatus.SUCCEEDED:
                paid.append(p.subscription_id)
            elif p.subscription_id and c.outcome == PaymentStatus.FAILED:
                unpaid.append(p.subscription_id)
        self.result.audit_records += record_bulk_audit(
            (
                BulkChange(
                    tenant=self._tenant_keys.get(org, ""),
                    action=f"payment.{new}",
                    object_type=PAYMENT_OBJECT_TYPE,
                    object_ids=ids,
                    changes={"status": [old, new]},
                )
                for (org, old, new), ids in sorted(transitions.items())
            ),
            actor=self.actor,
            job_run_id=self.job_run_id,
            at=self.now,
        )
        if paid:
            renewed = renew_paid_subscriptions(
                subscription_ids=paid, now=self.now, actor=self.actor, job_run_id=self.job_run_id
            )
            self.result.subscriptions_renewed += renewed.changed
            self.result.subscriptions_left_alone += renewed.skipped
            self.result.audit_records += renewed.audit_records
        if unpaid:
            overdue = mark_subscriptions_past_due(
                subscription_ids=unpaid, now=self.now, actor=self.actor, job_run_id=self.job_run_id
            )
            self.result.subscriptions_past_due += overdue.changed
            self.result.subscriptions_left_alone += overdue.skipped
            self.result.audit_records += overdue.audit_records

"""Stripe webhooks: verify, store by id, then process once, in Stripe's order.

Receiving is quick so Stripe never times out: the event is verified with the
tenant's webhook signing secret (`stripe.Webhook.construct_event`, the SDK's
scheme and timestamp tolerance), stored by its id (a redelivery hits the
unique constraint and is acknowledged, nothing more) and a run of
payments.process_stripe_webhooks is enqueued for the tenant; that job (also
scheduled, as the backstop for a run that could not be enqueued or was
skipped because one was already running) processes what is pending.

Processing takes each pending event in `created` order, claims its row
(FOR UPDATE, so two runs never both apply it) and hands it to the handler
registered for its type. An event older than one already applied to the same
Stripe object (out of order) changes nothing. Handlers call the services
that own the rows: payment intents go through the reconciliation's write-back
(payments.services.PaymentReconciler.apply), subscriptions through the renewal
sync's decision code (payments.subscription_sync.decide_sync, then
subscriptions.services.stripe_sync.write_sync);
billing registers its invoice handlers (`register_webhook_handler`), since
payments may not import billing. Unknown types are stored and acknowledged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from payments.crypto import SecretUnreadable, decrypt
from payments.models import (
    OPEN_STATUSES,
    Payment,
    PaymentProviderConfig,
    StripeWebhookEvent,
    WebhookEventStatus,
)
from payments.selectors import OpenPayment
from payments.services import OPEN, Checked, PaymentReconciler, classify_intent
from payments.subscription_sync import decide_sync, remote_subscription
from subscriptions.selectors import subscription_to_sync
from subscriptions.services.stripe_sync import write_sync

logger = logging.getLogger(__name__)

ACTOR = "stripe-webhook"
TENANT_KEY = re.compile(r"[-a-zA-Z0-9_]{1,100}")
MAX_ATTEMPTS = 3  # a handler failing this often leaves its event failed


class WebhookRefused(Exception):
    """The request is refused (`status`) and nothing is stored."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Received:
    event: StripeWebhookEvent
    created: bool  # False: a redelivery, already stored


def receive_event(*, tenant_key: str, payload: bytes, signature: str) -> Received:
    """Verify and store one delivery; WebhookRefused (404/400) stores nothing."""
    config = (
        PaymentProviderConfig.objects.select_related("organization")
        .filter(organization__key=tenant_key)
        .exclude(webhook_secret_encrypted="")
        .first()
        if TENANT_KEY.fullmatch(tenant_key)  # a slug; anything else matches no tenant
        else None
    )
    if config is None:
        raise WebhookRefused("no such tenant with a webhook secret", status=404)
    if not signature:
        raise WebhookRefused("missing Stripe-Signature header", status=400)
    try:
        secret = decrypt(config.webhook_secret_encrypted)
        text = payload.decode("utf-8")
    except SecretUnreadable:
        logger.error("webhook secret of tenant %s cannot be decrypted", config.organization.key)
        raise WebhookRefused("the tenant's webhook secret cannot be read", status=400) from None
    except UnicodeDecodeError:
        raise WebhookRefused("the body is not UTF-8", status=400) from None
    try:
        stripe.Webhook.construct_event(
            text, signature, secret, tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookRefused(f"signature verification failed: {exc}"[:300], status=400) from None
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError):
        raise WebhookRefused("the body is not a Stripe event", status=400) from None
    fields = _event_fields(text)
    event, created = StripeWebhookEvent.objects.get_or_create(
        organization=config.organization, event_id=fields.pop("event_id"), defaults=fields
    )
    return Received(event, created)


def _event_fields(text: str) -> dict[str, Any]:
    """What is stored of a verified event; its shape is checked here."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise WebhookRefused("the body is not JSON", status=400) from None
    if not isinstance(data, dict):
        raise WebhookRefused("the body is not a Stripe event object", status=400)
    event_id, kind, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise WebhookRefused("the event has no id", status=400)
    if not isinstance(kind, str) or not kind or len(kind) > 100:
        raise WebhookRefused("the event has no type", status=400)
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**37:
        raise WebhookRefused("the event has no created timestamp", status=400)
    obj = (data.get("data") or {}).get("object") if isinstance(data.get("data"), dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if not _storable(data):
        raise WebhookRefused("the event holds a NUL or an unpaired surrogate", status=400)
    return {
        "event_id": event_id,
        "type": kind,
        "object_id": object_id[:255] if isinstance(object_id, str) else "",
        "created": datetime.fromtimestamp(created, UTC),
        "livemode": bool(data.get("livemode")),
        "payload": data,
    }


def _storable(value: Any, depth: int = 0) -> bool:
    """Whether PostgreSQL's jsonb takes it: no NUL, no unpaired UTF-16 surrogate."""
    if depth > 100:
        return False
    if isinstance(value, str):
        return "\x00" not in value and (value.isascii() or _encodes(value))
    if isinstance(value, dict):
        return all(_storable(k, depth + 1) and _storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v, depth + 1) for v in value)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- handlers ---------------------------------------------------------------------

Handler = Callable[["StripeWebhookEvent", dict[str, Any], "HandlerContext"], str]
_HANDLERS: dict[str, Handler] = {}


@dataclass(frozen=True)
class HandlerContext:
    now: datetime
    actor: str
    job_run_id: int | None


def register_webhook_handler(*types: str) -> Callable[[Handler], Handler]:
    """Declare the handler of these event types: `handler(event, object, ctx) -> outcome`."""

    def register(handler: Handler) -> Handler:
        for kind in types:
            _HANDLERS[kind] = handler
        return handler

    return register


def handled_types() -> list[str]:
    return sorted(_HANDLERS)


@register_webhook_handler(
    "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"
)
def apply_payment_intent(
    event: StripeWebhookEvent, obj: dict[str, Any], ctx: HandlerContext
) -> str:
    """The reconciliation's write-back, fed by the event's PaymentIntent."""
    row = (
        Payment.objects.filter(organization_id=event.organization_id, provider_reference=obj["id"])
        .values_list("id", "organization_id", "subscription_id", "provider_reference", "status")
        .first()
    )
    if row is None:
        return f"no payment for PaymentIntent {obj['id']}"
    payment = OpenPayment(*row)
    if payment.status not in OPEN_STATUSES:
        return f"payment {payment.id} is already {payment.status}"
    outcome, reason = classify_intent(obj)
    if outcome == OPEN:
        return f"payment {payment.id}: the PaymentIntent is still open"
    reconciler = PaymentReconciler(
        now=ctx.now, actor=ctx.actor, job_run_id=ctx.job_run_id, concurrency=1
    )
    reconciler.apply([Checked(payment, outcome, reason)])
    return f"payment {payment.id}: {payment.status} -> {outcome}"


@register_webhook_handler("customer.subscription.updated", "customer.subscription.deleted")
def apply_subscription(event: StripeWebhookEvent, obj: dict[str, Any], ctx: HandlerContext) -> str:
    """The renewal sync's decision, on the event's Subscription instead of a fetched one."""
    local = subscription_to_sync(
        organization_id=event.organization_id, stripe_subscription_id=obj["id"]
    )
    if local is None:
        return f"no subscription for Stripe subscription {obj['id']}"
    decision = decide_sync(local, remote_subscription(obj), push_cancellations=False)
    written = write_sync(
        decisions=[decision], now=ctx.now, actor=ctx.actor, job_run_id=ctx.job_run_id
    )
    changed = ", ".join(decision.changed_fields) if written.changed else "nothing changed"
    outcome = f"subscription {local.id}: {decision.reconciliation_status} ({changed})"
    return f"{outcome}: {decision.error}" if decision.error else outcome


# --- processing -------------------------------------------------------------------


@dataclass
class ProcessResult:
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retrying: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def pending_event_ids(*, organization_id: int | None = None, limit: int) -> list[int]:
    rows = StripeWebhookEvent.objects.filter(status=WebhookEventStatus.RECEIVED)
    if organization_id is not None:
        rows = rows.filter(organization_id=organization_id)
    return list(rows.order_by("created", "id").values_list("id", flat=True)[:limit])


def process_events(
    *,
    event_ids: list[int],
    actor: str = ACTOR,
    job_run_id: int | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> ProcessResult:
    """Apply each event once, in the order given (created order), each in its own
    transaction; a failing handler is retried by later runs up to MAX_ATTEMPTS."""
    result = ProcessResult()
    for event_id in event_ids:
        status = _process_one(event_id, actor=actor, job_run_id=job_run_id, on_failure=on_failure)
        if status is None:
            continue
        kind, state = status
        result.by_type[kind] = result.by_type.get(kind, 0) + 1
        if state == WebhookEventStatus.PROCESSED:
            result.processed += 1
        elif state == WebhookEventStatus.IGNORED:
            result.ignored += 1
        elif state == WebhookEventStatus.FAILED:
            result.failed += 1
        else:
            result.retrying += 1
    return result


def _process_one(
    event_id: int,
    *,
    actor: str,
    job_run_id: int | None,
    on_failure: Callable[[str, str], None] | None,
) -> tuple[str, str] | None:
    with transaction.atomic():
        event = (
            StripeWebhookEvent.objects.select_for_update(skip_locked=True)
            .select_related("organization")
            .filter(pk=event_id, status=WebhookEventStatus.RECEIVED)
            .first()
        )
        if event is None:  # done by another run meanwhile
            return None
        now = timezone.now()
        state, outcome = _decide(event, actor=actor, job_run_id=job_run_id, now=now)
        if state == "error":
            attempts = event.attempts + 1
            state = WebhookEventStatus.FAILED if attempts >= MAX_ATTEMPTS else "retrying"
            if on_failure is not None:
                on_failure(f"stripe_event:{event.event_id}", outcome)
            StripeWebhookEvent.objects.filter(pk=event.pk).update(
                attempts=F("attempts") + 1,
                outcome=outcome[:2000],
                status=WebhookEventStatus.FAILED
                if state == WebhookEventStatus.FAILED
                else WebhookEventStatus.RECEIVED,
                processed_at=now if state == WebhookEventStatus.FAILED else None,
            )
            return event.type, state
        StripeWebhookEvent.objects.filter(pk=event.pk).update(
            attempts=F("attempts") + 1, outcome=outcome[:2000], status=state, processed_at=now
        )
    return event.type, state


def _decide(
    event: StripeWebhookEvent, *, actor: str, job_run_id: int | None, now: datetime
) -> tuple[str, str]:
    """(status, outcome) for one claimed event; ("error", message) when its handler failed."""
    handler = _HANDLERS.get(event.type)
    if handler is None:
        return WebhookEventStatus.IGNORED, f"{event.type} is not handled; stored only"
    obj = (event.payload.get("data") or {}).get("object")
    if not isinstance(obj, dict) or not event.object_id:
        return WebhookEventStatus.IGNORED, "the event carries no object with an id"
    newer = (
        StripeWebhookEvent.objects.filter(
            organization_id=event.organization_id,
            object_id=event.object_id,
            status=WebhookEventStatus.PROCESSED,
            created__gt=event.created,
        )
        .order_by("-created")
        .values_list("event_id", flat=True)
        .first()
    )
    if newer is not None:
        return WebhookEventStatus.IGNORED, f"out of order: the newer event {newer} was applied"
    context = HandlerContext(now=now, actor=actor, job_run_id=job_run_id)
    try:
        with transaction.atomic():
            return WebhookEventStatus.PROCESSED, handler(event, obj, context)
    except Exception as exc:  # recorded on the event and the run, never lost
        logger.exception("stripe event %s (%s) failed", event.event_id, event.type)
        return "error", f"{type(exc).__name__}: {exc}"

"""POST /webhooks/stripe/<tenant key>: Stripe's deliveries, verified, stored, acknowledged."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from jobs.enqueue import enqueue_run
from jobs.models import Trigger
from payments.webhooks.jobs import JOB
from payments.webhooks.processing import ACTOR, WebhookRefused, receive_event

logger = logging.getLogger(__name__)


@csrf_exempt
def stripe_webhook(request: HttpRequest, tenant_key: str) -> JsonResponse:
    """200 once the event is stored (or was already); 400/404/405/413 store nothing."""
    if request.method != "POST":
        response = JsonResponse(
            {"error": f"method {request.method} not allowed; use POST"}, status=405
        )
        response["Allow"] = "POST"
        return response
    limit = settings.STRIPE_WEBHOOK_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"error": "invalid Content-Length header"}, status=400)
    if declared > limit:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    try:
        payload = request.body
    except RequestDataTooBig:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    if len(payload) > limit:
        return JsonResponse({"error": f"body larger than {limit} bytes"}, status=413)
    try:
        with transaction.atomic():
            received = receive_event(
                tenant_key=tenant_key,
                payload=payload,
                signature=request.headers.get("Stripe-Signature", ""),
            )
            if received.created:
                tenant = received.event.organization.key
                transaction.on_commit(lambda: _enqueue(tenant))
    except WebhookRefused as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    event = received.event
    return JsonResponse({"received": True, "id": event.event_id, "duplicate": not received.created})


def _enqueue(tenant: str) -> None:
    """A run for the tenant; if it cannot be enqueued, the schedule picks the event up."""
    try:
        enqueue_run(JOB, tenant=tenant, trigger=Trigger.API, triggered_by=ACTOR)
    except Exception:
        logger.exception("could not enqueue %s for %s; the schedule will process it", JOB, tenant)

"""SES feedback from SNS (/ses/events/): verified before anything changes.

django-ses's webhook accepts any SNS topic whose signature verifies when no
topic is configured, confirms subscriptions for them, and suppresses whatever
address a bounce names: anyone with an AWS account could stop the service
mailing any customer. This view, built on django-ses's own signature and
topic checks, is off (404) until AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS is set,
confirms subscriptions only for those topics, and lets a bounce or complaint
suppress an address only when its `mail.messageId` is a message the outbox
sent to that address. Every refusal is a 4xx with a JSON reason and a log
line; nothing is changed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django_ses import utils as ses_utils

from notifications.services import FeedbackRefused, record_ses_feedback

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # SNS messages are at most 256 KiB


def _refuse(status: int, message: str, notification: Any = None) -> JsonResponse:
    topic = notification.get("TopicArn") if isinstance(notification, dict) else None
    logger.warning("SES event refused (%s): %s; topic %s", status, message, str(topic)[:200])
    return JsonResponse({"error": message}, status=status)


@method_decorator(csrf_exempt, name="dispatch")
class SESEventView(View):
    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any):
        if not settings.AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS:
            return JsonResponse(
                {"error": "SES events are off: AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS is not set"},
                status=404,
            )
        return super().dispatch(request, *args, **kwargs)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any):
        response = JsonResponse(
            {"error": f"method {request.method} not allowed; use POST"}, status=405
        )
        response["Allow"] = "POST"
        return response

    def post(self, request: HttpRequest) -> JsonResponse:
        if len(request.body) > MAX_BODY_BYTES:
            return _refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            notification = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _refuse(400, "body is not a JSON SNS message")
        if not isinstance(notification, dict) or not all(
            isinstance(notification.get(k, ""), str) for k in ("Type", "TopicArn", "Message")
        ):
            return _refuse(400, "body is not an SNS message object", notification)
        if not ses_utils.verify_event_message(notification):
            return _refuse(400, "SNS signature verification failed", notification)
        if notification.get("TopicArn") not in settings.AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS:
            return _refuse(403, "SNS topic is not trusted", notification)
        kind = notification.get("Type")
        if kind == "SubscriptionConfirmation":
            if not ses_utils.is_trusted_sns_subscribe_url(notification.get("SubscribeURL")):
                return _refuse(400, "SubscribeURL is not an SNS endpoint", notification)
            ses_utils.confirm_sns_subscription(notification)
            return JsonResponse({"status": "subscription confirmed"})
        if kind == "UnsubscribeConfirmation":
            logger.info("SNS unsubscribe confirmation for %s", notification.get("TopicArn"))
            return JsonResponse({"status": "ignored"})
        if kind != "Notification":
            return _refuse(400, f"unknown SNS message type {str(kind)[:40]!r}", notification)
        return self.feedback(notification)

    def feedback(self, notification: dict[str, Any]) -> JsonResponse:
        try:
            message = json.loads(notification.get("Message") or "")
        except ValueError:
            return _refuse(400, "SNS Message is not JSON", notification)
        if not isinstance(message, dict):
            return _refuse(400, "SNS Message is not an SES event", notification)
        event = message.get("eventType", message.get("notificationType"))
        if event not in ("Bounce", "Complaint"):
            return JsonResponse({"status": "ignored", "event": str(event)[:40]})
        try:
            suppressed = record_ses_feedback(kind=event.lower(), message=message)
        except FeedbackRefused as exc:
            return _refuse(400, str(exc), notification)
        return JsonResponse({"status": "recorded", "suppressed": suppressed})

"""Where alerts and notices go: a registry of channels, and the webhook channel.

A channel is an object with `name`, `label`, `validate_target(target)` (raises
ValueError with a message for the admin form) and `send(target, secret,
payload)` which raises `DeliveryError` on failure (the platform retries with
backoff and records every attempt in AlertDelivery). Business apps register
theirs (notifications registers "email"), so jobs/ imports none of them.

Webhook: a JSON POST of the payload (which carries a Slack-compatible `text`),
signed with HMAC-SHA256 over `<timestamp>.<body>` using the rule's secret:

    X-Backoffice-Timestamp: 1796166000
    X-Backoffice-Signature: sha256=<hex digest>

A receiver recomputes the digest with its copy of the secret, compares in
constant time and refuses timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

SIGNATURE_HEADER = "X-Backoffice-Signature"
TIMESTAMP_HEADER = "X-Backoffice-Timestamp"
MAX_URL = 500


class DeliveryError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AlertChannel(Protocol):
    name: str
    label: str

    def validate_target(self, target: str) -> str: ...

    def send(self, target: str, secret: str, payload: dict[str, Any]) -> int | None: ...


_CHANNELS: dict[str, AlertChannel] = {}


def register_channel(channel: AlertChannel) -> None:
    _CHANNELS[channel.name] = channel


def get_channel(name: str) -> AlertChannel:
    try:
        return _CHANNELS[name]
    except KeyError:
        raise LookupError(f"unknown alert channel {name!r}") from None


def channel_choices() -> list[tuple[str, str]]:
    return sorted((c.name, c.label) for c in _CHANNELS.values())


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for this body at this timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age: int = 300) -> bool:
    """What a receiver does (and the tests): constant-time compare, fresh timestamp."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= max_age
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    name = "webhook"
    label = "Webhook (signed JSON POST)"

    def validate_target(self, target: str) -> str:
        target = target.strip()
        if len(target) > MAX_URL:
            raise ValueError(f"the webhook URL is longer than {MAX_URL} characters")
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("the webhook target must be an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook target must be an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; the secret signs each request")
        return target

    def send(self, target: str, secret: str, payload: dict[str, Any]) -> int | None:
        body = json.dumps(payload, cls=DjangoJSONEncoder, sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        timeout = settings.JOBS_WEBHOOK_TIMEOUT_SECONDS
        try:
            response = requests.post(
                target,
                data=body,
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception names the URL, which may hold a token: say only what kind.
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(
                f"webhook answered {response.status_code}", status_code=response.status_code
            )
        return response.status_code


register_channel(WebhookChannel())

"""The "email" alert channel: alerts and notices queued through the outbox,
so they are rate-limited, deduplicated and retried like all mail
(jobs.alert_channels holds the registry; registered in NotificationsConfig)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from notifications.services import EmailDraft, queue_bulk


def _addresses(target: str) -> list[str]:
    return [a.strip() for a in target.replace(";", ",").split(",") if a.strip()]


class EmailChannel:
    name = "email"
    label = "Email (through the outbox)"

    def validate_target(self, target: str) -> str:
        addresses = _addresses(target)
        if not addresses:
            raise ValueError("give one or more email addresses, comma-separated")
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValueError(f"{address!r} is not an email address") from None
        return ", ".join(addresses)

    def send(self, target: str, secret: str, payload: dict[str, Any]) -> int | None:
        """Queue one email per address; a delivery queued again is not sent twice."""
        lines = [payload.get("text", "")]
        for label, key in (("Job", "job"), ("Tenant", "tenant"), ("Run", "run_url")):
            if payload.get(key):
                lines.append(f"{label}: {payload[key]}")
        if payload.get("detail"):
            lines.append(f"Details: {payload['detail']}")
        queue_bulk(
            emails=[
                EmailDraft(
                    to=address,
                    kind="jobs.alert",
                    dedupe_key=f"jobs:notice:{payload['delivery']}:{address}"[:200],
                    subject=payload.get("subject") or payload.get("text", "")[:200],
                    body_text="\n\n".join(lines),
                )
                for address in _addresses(target)
            ]
        )
        return None

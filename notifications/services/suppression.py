"""The suppression list: addresses mail is never sent to, and the SES bounce and
complaint events that add to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Q

from notifications.models import EmailStatus, OutboundEmail, SuppressedAddress, SuppressionReason


def suppress_addresses(
    *, emails: Sequence[str], reason: str = SuppressionReason.MANUAL, note: str = ""
) -> int:
    """Add addresses to the suppression list (existing entries are kept); returns new ones.

    Mail still queued to them is marked `suppressed` now rather than at send time.
    """
    addresses = sorted({e.strip().lower() for e in emails if e and e.strip()})
    if not addresses:
        return 0
    with transaction.atomic():
        known = set(
            SuppressedAddress.objects.filter(email__in=addresses).values_list("email", flat=True)
        )
        SuppressedAddress.objects.bulk_create(
            [
                SuppressedAddress(email=a, reason=reason, note=note[:2000])
                for a in addresses
                if a not in known
            ],
            ignore_conflicts=True,
        )
        lowered = Q()
        for address in addresses:
            lowered |= Q(to__iexact=address)
        OutboundEmail.objects.filter(lowered, status=EmailStatus.QUEUED).update(
            status=EmailStatus.SUPPRESSED, last_error=f"address suppressed ({reason})"
        )
    return len([a for a in addresses if a not in known])


class FeedbackRefused(ValueError):
    """An SES event that names a message or recipient the outbox never sent."""


def record_ses_feedback(*, kind: str, message: dict[str, Any]) -> list[str]:
    """Apply a verified SES bounce or complaint event; returns the addresses suppressed.

    Only addresses the outbox sent that very message to (its `mail.messageId`
    is our `provider_message_id`) are suppressed, and only for permanent
    bounces and complaints. Anything else raises FeedbackRefused and changes
    nothing: a signed event of someone else's topic or message must not stop
    mail to our customers.
    """
    mail = message.get("mail") if isinstance(message.get("mail"), dict) else {}
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 255:
        raise FeedbackRefused("SES event has no mail.messageId")
    if kind == "bounce":
        event = message.get("bounce") if isinstance(message.get("bounce"), dict) else {}
        listed, reason = event.get("bouncedRecipients"), SuppressionReason.BOUNCE
        note = event.get("bounceSubType", "")
    else:
        event = message.get("complaint") if isinstance(message.get("complaint"), dict) else {}
        listed, reason = event.get("complainedRecipients"), SuppressionReason.COMPLAINT
        note = event.get("complaintFeedbackType", "")
    if not isinstance(listed, list) or not listed:
        raise FeedbackRefused(f"SES {kind} event names no recipients")
    addresses = []
    for item in listed:
        address = item.get("emailAddress") if isinstance(item, dict) else None
        if not isinstance(address, str) or not address.strip() or len(address) > 254:
            raise FeedbackRefused(f"SES {kind} event has a recipient without an emailAddress")
        addresses.append(address.strip().lower())
    sent_to = {
        to.lower()
        for to in OutboundEmail.objects.filter(provider_message_id=message_id).values_list(
            "to", flat=True
        )
    }
    if not sent_to:
        raise FeedbackRefused(f"mail.messageId {message_id[:80]!r} is not a message we sent")
    strangers = [a for a in addresses if a not in sent_to]
    if strangers:
        raise FeedbackRefused(
            f"message {message_id[:80]!r} was not sent to {strangers[0][:80]}; nothing suppressed"
        )
    if kind == "bounce" and event.get("bounceType") != "Permanent":
        return []  # transient: SES retries; the address stays
    suppress_addresses(emails=addresses, reason=reason, note=str(note or "")[:2000])
    return addresses

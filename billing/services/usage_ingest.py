"""Usage from the API: a batch of events checked one by one, stored at once.

Each event gets its own answer, so one bad event never drops the batch:
`accepted` (stored now), `duplicate` (its organization already has an event
with that idempotency key, or an earlier event of this batch has it) or
`rejected` with the reason. The accepted ones are stored by
billing.services.usage.store_usage_events, the one writer of usage events:
one multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING` per batch (the
database's unique constraint decides what is a duplicate, so two clients
racing with the same event count it once) that also marks already
aggregated hours late, exactly as a recorded event does.

The checks are plain Python over dicts, one pass, with the organizations and
metrics looked up once per batch: the API's throughput is this loop plus
that statement (bench `ingest_usage`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.models import AggregationType
from billing.selectors import metric_aggregations
from billing.services.usage import UsageEventIn, store_usage_events
from subscriptions.models import Organization

EVENT_FIELDS = frozenset(
    {"organization", "metric", "quantity", "occurred_at", "idempotency_key", "value_key"}
)
MAX_KEY = 128  # UsageEvent.idempotency_key / value_key max_length
MAX_QUANTITY = 2**63 - 1  # BigIntegerField

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"


class Rejected(Exception):
    """One event cannot be stored; the message is its reason."""


@dataclass
class IngestResult:
    """Per-event outcomes in the batch's order, and their counts."""

    results: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "results": self.results,
        }


def ingest_usage_events(
    *,
    events: Sequence[Any],
    may_write: Callable[[str], bool] = lambda organization: True,
    now: datetime | None = None,
) -> IngestResult:
    """Check and store a batch of events as the API receives them (parsed JSON).

    `may_write(organization key)` says whether the caller may report usage for
    that organization (its API key's scope pattern); an event for one it may
    not is rejected like an unknown one, so a key learns nothing of others.
    """
    now = now or timezone.now()
    newest = now + timedelta(seconds=settings.USAGE_EVENT_FUTURE_SKEW_SECONDS)
    oldest = now - timedelta(days=settings.USAGE_EVENT_RETENTION_DAYS)
    # Only string keys a database can compare: a list is unhashable, and a NUL
    # or a lone surrogate makes PostgreSQL refuse the whole lookup (both found
    # by schemathesis).
    named = [e.get("organization") for e in events if isinstance(e, dict)]
    keys = {k for k in named if isinstance(k, str) and k and len(k) <= 100 and storable_text(k)}
    organizations = dict(
        Organization.objects.filter(key__in=keys).values_list("key", "id") if keys else ()
    )
    allowed = {key: may_write(key) for key in organizations}
    metrics = metric_aggregations()
    context = _Checks(organizations, allowed, metrics, oldest, newest)

    outcome: list[tuple[str, Any]] = []  # (status, event or reason) per index
    seen: set[tuple[int, str]] = set()
    candidates: list[UsageEventIn] = []
    for raw in events:
        try:
            event = context.check(raw)
        except Rejected as exc:
            outcome.append((REJECTED, str(exc)))
            continue
        identity = (event.organization_id, event.idempotency_key)
        if identity in seen:
            outcome.append((DUPLICATE, None))
            continue
        seen.add(identity)
        candidates.append(event)
        outcome.append((ACCEPTED, identity))

    stored = store_usage_events(events=candidates)
    result = IngestResult()
    for index, (status, detail) in enumerate(outcome):
        if status == ACCEPTED and detail not in stored:
            status = DUPLICATE
        if status == ACCEPTED:
            result.accepted += 1
            result.results.append({"index": index, "status": ACCEPTED})
        elif status == DUPLICATE:
            result.duplicates += 1
            result.results.append({"index": index, "status": DUPLICATE})
        else:
            result.rejected += 1
            result.results.append({"index": index, "status": REJECTED, "reason": detail})
    return result


@dataclass(frozen=True)
class _Checks:
    organizations: dict[str, int]
    allowed: dict[str, bool]
    metrics: dict[str, str]
    oldest: datetime
    newest: datetime

    def check(self, raw: Any) -> UsageEventIn:
        if not isinstance(raw, dict):
            raise Rejected("an event must be a JSON object")
        if not EVENT_FIELDS.issuperset(raw):
            unknown = sorted(set(raw) - EVENT_FIELDS)[0]
            raise Rejected(f"unknown field {unknown[:100]!r}; allowed: {', '.join(_FIELDS_SORTED)}")
        org_key = _string(raw, "organization", required=True)
        org_id = self.organizations.get(org_key)
        if org_id is None or not self.allowed.get(org_key):
            raise Rejected(f"unknown organization {org_key[:100]!r}")
        metric = _string(raw, "metric", required=True)
        kind = self.metrics.get(metric)
        if kind is None:
            raise Rejected(f"unknown metric {metric[:100]!r}")
        quantity = raw.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            if isinstance(quantity, float) and quantity.is_integer():
                quantity = int(quantity)
            else:
                raise Rejected("quantity must be an integer")
        if quantity < 0:
            raise Rejected("quantity must not be negative")
        if quantity > MAX_QUANTITY:
            raise Rejected(f"quantity must be at most {MAX_QUANTITY}")
        occurred_at = _timestamp(raw.get("occurred_at"))
        if occurred_at > self.newest:
            raise Rejected(
                f"occurred_at {occurred_at.isoformat()} is in the future (more than "
                f"{settings.USAGE_EVENT_FUTURE_SKEW_SECONDS} s ahead of the server's clock)"
            )
        if occurred_at < self.oldest:
            raise Rejected(
                f"occurred_at {occurred_at.isoformat()} is older than the event retention "
                f"(USAGE_EVENT_RETENTION_DAYS={settings.USAGE_EVENT_RETENTION_DAYS})"
            )
        key = _string(raw, "idempotency_key", required=True)
        value_key = _string(raw, "value_key", required=False)
        if kind == AggregationType.UNIQUE_COUNT and not value_key:
            raise Rejected(f"{metric} counts distinct values: the event needs a value_key")
        return UsageEventIn(
            organization_id=org_id,
            metric=metric,
            occurred_at=occurred_at,
            idempotency_key=key,
            quantity=quantity,
            value_key=value_key,
        )


_FIELDS_SORTED = sorted(EVENT_FIELDS)


def _string(raw: dict[str, Any], name: str, *, required: bool) -> str:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise Rejected(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string")
    if len(value) > MAX_KEY:
        raise Rejected(f"{name} is longer than {MAX_KEY} characters")
    if "\x00" in value:
        raise Rejected(f"{name} may not contain NUL (\\u0000) characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected(f"{name} may not contain unpaired UTF-16 surrogates") from None
    return value


def storable_text(value: str) -> bool:
    """Whether PostgreSQL stores (and compares) this text: no NUL, no lone surrogate."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise Rejected("occurred_at must be an ISO 8601 timestamp with a time zone")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"occurred_at {value[:64]!r} is not an ISO 8601 timestamp") from None
    if at.tzinfo is None:
        raise Rejected("occurred_at needs a time zone (e.g. 2026-11-01T10:00:00Z)")
    return at

"""API keys: how they look, how their scopes read, and the writes on them.

A key is `bo_live_<lookup>_<secret>`: 12 and 40 characters of [A-Za-z0-9]
(about 238 random bits of secret). The `bo_live_` prefix makes a leaked key
easy to search for (secret scanners, logs); `lookup` is its public id, stored
and indexed; the whole key is stored only as its SHA-256 (a fast hash is
enough for a random secret of that length: there is nothing to guess from).

Scopes are strings, `resource:action[:pattern]`, or `*` for everything:

* `jobs:run:<glob>` starts runs of the jobs whose names match the glob (and
  reads them); `jobs:read:<glob>` lists those jobs and reads their runs;
  without a pattern, every job: `jobs:run`, `jobs:read`.
* `<resource>:*` is every action on a resource.
* Another app adds its resource with `register_scope_resource("usage",
  actions={"write": (), "read": ()})`, so `usage:write` and `usage:read` are
  then valid scopes: the stored list needs no new column.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from jobs.models import ApiKey, JobAction

KEY_PREFIX = "bo_live_"
LOOKUP_LENGTH = 12
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits
KEY_PATTERN = re.compile(
    rf"{KEY_PREFIX}(?P<lookup>[A-Za-z0-9]{{{LOOKUP_LENGTH}}})_[A-Za-z0-9]{{{SECRET_LENGTH}}}"
)
ALL_SCOPES = "*"
MAX_SCOPES = 50
MAX_SCOPE_LENGTH = 200

# resource -> {action: actions it implies}
_RESOURCES: dict[str, dict[str, tuple[str, ...]]] = {}


def register_scope_resource(name: str, *, actions: Mapping[str, Sequence[str]]) -> None:
    """Declare a resource whose scopes keys may hold (`name:action[:pattern]`)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"scope resource {name!r} must be lower-case letters, digits or _")
    _RESOURCES[name] = {action: tuple(implied) for action, implied in actions.items()}


register_scope_resource("jobs", actions={"run": ("read",), "read": ()})


def scope_resources() -> dict[str, tuple[str, ...]]:
    """Every resource and its actions, for forms and messages."""
    return {name: tuple(actions) for name, actions in sorted(_RESOURCES.items())}


@dataclass(frozen=True)
class Scope:
    resource: str
    action: str  # "*" for every action
    pattern: str | None  # None for every object

    def actions(self) -> set[str]:
        declared = _RESOURCES.get(self.resource, {})
        if self.action == "*":
            return set(declared)
        return {self.action, *declared.get(self.action, ())}


def parse_scope(text: str) -> Scope | None:
    """A Scope, or None for `*`. Raises ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a scope must be a non-empty string")
    text = text.strip()
    if text == ALL_SCOPES:
        return None
    if len(text) > MAX_SCOPE_LENGTH or not text.isprintable() or " " in text:
        raise ValueError(f"scope {text[:60]!r} is not a printable word of at most 200 characters")
    resource, _, rest = text.partition(":")
    action, _, pattern = rest.partition(":")
    if resource not in _RESOURCES:
        known = ", ".join(sorted(_RESOURCES))
        raise ValueError(f"scope {text!r}: unknown resource {resource!r} (known: {known})")
    if action != "*" and action not in _RESOURCES[resource]:
        known = ", ".join([*_RESOURCES[resource], "*"])
        raise ValueError(f"scope {text!r}: {resource} has no action {action!r} (known: {known})")
    return Scope(resource, action, pattern or None)


def clean_scopes(scopes: Iterable[str]) -> list[str]:
    """Validated, stripped and de-duplicated, in the order given."""
    cleaned: list[str] = []
    for text in scopes:
        parse_scope(text)
        if text.strip() not in cleaned:
            cleaned.append(text.strip())
    if not cleaned:
        raise ValueError("a key needs at least one scope (e.g. jobs:read)")
    if len(cleaned) > MAX_SCOPES:
        raise ValueError(f"a key holds at most {MAX_SCOPES} scopes")
    return cleaned


def grants(scopes: Iterable[str], required: str) -> bool:
    """Whether `scopes` allow `required` (`resource:action` or
    `resource:action:object`, e.g. `jobs:run:billing.generate_monthly_invoices`).
    A required scope without an object asks for the action on anything at all
    (the catalogue then shows only what the patterns match)."""
    resource, _, rest = required.partition(":")
    action, _, obj = rest.partition(":")
    for text in scopes:
        try:
            scope = parse_scope(text)
        except ValueError:
            continue  # a scope no longer understood grants nothing
        if scope is None:
            return True
        if scope.resource != resource or action not in scope.actions():
            continue
        if not obj or scope.pattern is None or fnmatch.fnmatchcase(obj, scope.pattern):
            return True
    return False


# --- keys --------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    secret: str  # the whole key; shown once, never stored


def create_api_key(
    *,
    name: str,
    owner: str,
    scopes: Sequence[str],
    actor: str,
    expires_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
) -> NewKey:
    """Make a key; the returned secret is the only copy of it."""
    cleaned = clean_scopes(scopes)
    lookup = _random(LOOKUP_LENGTH)
    secret = f"{KEY_PREFIX}{lookup}_{_random(SECRET_LENGTH)}"
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            name=name,
            owner=owner,
            lookup=lookup,
            secret_hash=hash_key(secret),
            scopes=cleaned,
            expires_at=expires_at,
            rate_limit_per_minute=rate_limit_per_minute,
            created_by=actor,
        )
        _record(actor, "api_key_create", api_key, scopes=cleaned)
    return NewKey(api_key=api_key, secret=secret)


def revoke_api_key(*, api_key: ApiKey, actor: str) -> bool:
    """Revoke now; False when it already was. A revoked key answers 401."""
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor
        )
        if changed:
            _record(actor, "api_key_revoke", api_key)
    api_key.refresh_from_db()
    return bool(changed)


def record_key_change(*, api_key: ApiKey, actor: str, changes: dict[str, list]) -> None:
    """An edit of name, owner, scopes, expiry or rate limit, for the audit trail."""
    _record(actor, "api_key_change", api_key, changes=changes)


def _record(actor: str, action: str, api_key: ApiKey, **detail: object) -> None:
    JobAction.objects.create(
        actor=actor,
        action=action,
        job="",
        detail={"trigger": "admin", "key": api_key.prefix, "name": api_key.name, **detail},
    )

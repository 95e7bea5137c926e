"""Who is calling the JSON API, and may they: one place for every endpoint.

`authenticate(request)` reads `Authorization: Bearer <key>` and returns the
ApiClient (an ApiKey, or the bootstrap JOBS_API_TOKEN with every scope), or
raises ApiAuthError: 401 for a missing, malformed, unknown, revoked or expired
key, 429 (with Retry-After) past the key's requests per minute.
`require_scope(client, "jobs:run:<job>")` raises 403 naming the missing
scope. `api_key_required("usage:write")` wraps a view with both and answers
the refusals as JSON; the view finds the caller in `request.api_client`.

A key is found by its lookup id (one indexed query) and its hash compared in
constant time; an unknown id is compared against a dummy hash so it takes as
long. The rate limit is a fixed one-minute window per key in Django's cache
(Redis in production, so it holds across processes and machines): one atomic
`incr` per request.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from jobs.api_keys import ALL_SCOPES, KEY_PATTERN, KEY_PREFIX, grants, hash_key
from jobs.models import ApiKey

logger = logging.getLogger(__name__)

BOOTSTRAP_NAME = "JOBS_API_TOKEN"
LAST_USED_GRANULARITY = timedelta(seconds=60)
_DUMMY_HASH = hash_key(f"{KEY_PREFIX}dummy")


@dataclass(frozen=True)
class ApiClient:
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int  # 0: unlimited
    key_id: int | None = None  # None for the bootstrap token
    prefix: str = ""

    @property
    def rate_key(self) -> str:
        return self.prefix or "bootstrap"  # the lookup id: never reused, unlike a pk

    def may(self, scope: str) -> bool:
        return grants(self.scopes, scope)


@dataclass
class ApiAuthError(Exception):
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": self.message, **self.extra}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def _unauthorized(message: str, *, invalid: bool = True) -> ApiAuthError:
    challenge = 'Bearer realm="api"'
    if invalid:
        challenge += ', error="invalid_token"'
    return ApiAuthError(401, message, {"WWW-Authenticate": challenge})


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise _unauthorized(
            "missing bearer token: send 'Authorization: Bearer <API key>'", invalid=False
        )
    return given


def authenticate(request: HttpRequest) -> ApiClient:
    """The caller, or ApiAuthError (401, or 429 past its rate)."""
    given = bearer_token(request)
    client = _client_for(given)
    check_rate(client)
    return client


def _client_for(given: str) -> ApiClient:
    if given.startswith(KEY_PREFIX):
        return _key_client(given)
    bootstrap = settings.JOBS_API_TOKEN or ""
    if bootstrap and _same(given, bootstrap):
        return ApiClient(
            name=BOOTSTRAP_NAME,
            scopes=(ALL_SCOPES,),
            rate_limit_per_minute=default_rate_limit(),
        )
    if given.lower().startswith("bo_") and "_" in given[3:]:
        raise _unauthorized(f"wrong key prefix: API keys of this service start with {KEY_PREFIX}")
    raise _unauthorized("invalid bearer token")


def _key_client(given: str) -> ApiClient:
    match = KEY_PATTERN.fullmatch(given)
    if match is None:
        raise _unauthorized(
            f"malformed API key: expected {KEY_PREFIX}<12 letters or digits>_<40 letters or digits>"
        )
    key = ApiKey.objects.filter(lookup=match["lookup"]).first()
    # An unknown id is compared too (against a dummy), so both take as long.
    matches = _same(hash_key(given), key.secret_hash if key is not None else _DUMMY_HASH)
    if key is None or not matches:
        raise _unauthorized("invalid API key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise _unauthorized(f"API key {key.name!r} was revoked at {key.revoked_at:%Y-%m-%d %H:%M}Z")
    if key.expires_at is not None and key.expires_at <= now:
        raise _unauthorized(f"API key {key.name!r} expired at {key.expires_at:%Y-%m-%d %H:%M}Z")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_GRANULARITY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)  # at most once a minute
    limit = key.rate_limit_per_minute
    return ApiClient(
        name=key.name,
        scopes=tuple(key.scopes or ()),
        rate_limit_per_minute=default_rate_limit() if limit is None else limit,
        key_id=key.pk,
        prefix=key.prefix,
    )


def _same(given: str, expected: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and a header may hold any.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def default_rate_limit() -> int:
    return int(settings.JOBS_API_RATE_LIMIT_PER_MINUTE)


def check_rate(client: ApiClient) -> None:
    """Count this request in the key's minute; 429 with Retry-After past its limit."""
    limit = client.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // 60)
    bucket = f"jobs:api-rate:{client.rate_key}:{window}"
    cache.add(bucket, 0, timeout=120)
    try:
        count = cache.incr(bucket)
    except ValueError:  # expired between add and incr
        cache.add(bucket, 1, timeout=120)
        count = 1
    if count > limit:
        retry_after = max(1, int(60 - now % 60 + 0.999))
        raise ApiAuthError(
            429,
            f"rate limit of {limit} requests per minute exceeded for key {client.name!r}; "
            f"retry in {retry_after} s",
            {"Retry-After": str(retry_after)},
        )


def require_scope(client: ApiClient, scope: str) -> None:
    """403 naming `scope` unless the client holds it."""
    if not client.may(scope):
        raise ApiAuthError(
            403,
            f"API key {client.name!r} lacks the scope {scope}",
            extra={"missing_scope": scope},
        )


View = Callable[..., Any]


def api_key_required(scope: str | None = None) -> Callable[[View], View]:
    """For a JSON endpoint: authenticate, rate-limit, check `scope` (if fixed),
    set `request.api_client`; refusals answer JSON with their status."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            try:
                client = authenticate(request)
                if scope:
                    require_scope(client, scope)
            except ApiAuthError as exc:
                return exc.response()
            request.api_client = client  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapper

    return decorate

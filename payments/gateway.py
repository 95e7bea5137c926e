"""The one place that talks to Stripe.

Every call goes through a `TenantGateway`, which gives it:

* the tenant's own `StripeClient` (keys from its PaymentProviderConfig),
  pointed at `STRIPE_API_BASE`;
* the SDK's network retries with exponential backoff on 409, 429, 5xx and
  connection errors (`STRIPE_MAX_NETWORK_RETRIES`);
* deterministic idempotency keys on every write, chosen by the caller from
  what the call does (`org:<id>:renewal:<subscription>:<period_end>`), so a
  rerun or a crash never charges, invoices or creates twice;
* a circuit breaker per tenant (pybreaker): after `STRIPE_BREAKER_FAIL_MAX`
  failed calls in a row its calls fail at once with `CircuitOpen` for
  `STRIPE_BREAKER_RESET_SECONDS`, so broken keys or an outage are recorded
  quickly instead of retried for an hour, and other tenants go on;
* a rate limit per tenant shared by every worker (Redis when `REDIS_URL` is
  set), `STRIPE_RATE_LIMIT_PER_SECOND` or the config's own.

Whatever the SDK raises leaves here as a `GatewayError` with a readable
message that never holds a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import pybreaker
import stripe
from django.conf import settings

from core.ratelimit import SendRateLimiter
from payments.crypto import SecretUnreadable, decrypt
from payments.models import PaymentProviderConfig, Provider

logger = logging.getLogger(__name__)
# The SDK logs every request at INFO: thousands of lines per reconciliation run.
logging.getLogger("stripe").setLevel(logging.WARNING)
T = TypeVar("T")


# --- errors -------------------------------------------------------------------------


class GatewayError(Exception):
    """A Stripe call failed. `retryable`: a later attempt may succeed."""

    retryable = False

    def __init__(self, message: str, *, code: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class GatewayNotConfigured(GatewayError):
    """The organization has no enabled, readable provider config."""


class CircuitOpen(GatewayError):
    """The tenant's breaker is open: calls fail at once until it resets."""

    retryable = True


class GatewayUnavailable(GatewayError):
    """Network error or a 5xx after the SDK's retries."""

    retryable = True


class GatewayRateLimited(GatewayError):
    """Stripe answered 429 after the SDK's retries."""

    retryable = True


class GatewayThrottled(GatewayError):
    """Our own per-tenant limiter had no room within the wait allowed."""

    retryable = True


class GatewayAuthError(GatewayError):
    """The tenant's keys were refused (401/403)."""


class GatewayRequestError(GatewayError):
    """Stripe refused the request itself (400, 404, idempotency conflict)."""


class CardDeclined(GatewayError):
    """The payment method was declined (402)."""


# Business answers: they say nothing about the health of the tenant's account.
_NOT_BREAKER_FAILURES = (GatewayRequestError, CardDeclined, GatewayThrottled)


def _wrap(exc: stripe.StripeError, what: str) -> GatewayError:
    status = exc.http_status
    detail = exc.user_message or type(exc).__name__
    message = f"Stripe {what}: {detail}" + (f" (HTTP {status})" if status else "")
    code = exc.code or ""
    if isinstance(exc, stripe.CardError):
        cls: type[GatewayError] = CardDeclined
    elif isinstance(exc, (stripe.InvalidRequestError, stripe.IdempotencyError)):
        cls = GatewayRequestError
    elif isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        cls = GatewayAuthError
    elif isinstance(exc, stripe.RateLimitError) or status == 429:
        cls = GatewayRateLimited
    elif isinstance(exc, (stripe.APIConnectionError, stripe.APIError)):
        cls = GatewayUnavailable
    else:
        cls = GatewayError
    return cls(message, code=code, http_status=status)


# --- the HTTP client: the SDK's retries, plus 429 -----------------------------------


class RetryingHttpClient(stripe.RequestsClient):
    """The SDK's requests client, also retrying 429 and with configurable backoff."""

    def _should_retry(
        self,
        response: Any,
        api_connection_error: Any,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        if response is not None and num_retries < (max_network_retries or 0):
            _, status_code, _ = response
            if status_code == 429:
                return True
        return super()._should_retry(
            response, api_connection_error, num_retries, max_network_retries
        )

    def _sleep_time_seconds(self, num_retries: int) -> float:
        initial = settings.STRIPE_RETRY_INITIAL_DELAY_SECONDS
        ceiling = settings.STRIPE_RETRY_MAX_DELAY_SECONDS
        delay = min(initial * (2 ** (num_retries - 1)), ceiling)
        return max(initial, delay * 0.5 * (1 + random.uniform(0, 1)))


# --- per-tenant state: clients, breakers, limiters -----------------------------------

_lock = threading.Lock()
_clients: dict[tuple[int, str, str], stripe.StripeClient] = {}
_breakers: dict[int, pybreaker.CircuitBreaker] = {}
_limiters: dict[tuple[int, float], SendRateLimiter] = {}


def reset_gateways() -> None:
    """Forget cached clients, breakers and limiters (tests, key changes)."""
    with _lock:
        _clients.clear()
        _breakers.clear()
        _limiters.clear()


def forget_tenant(organization_id: int) -> None:
    """Drop one tenant's cached clients, breaker and limiters (its keys changed)."""
    with _lock:
        for key in [k for k in _clients if k[0] == organization_id]:
            del _clients[key]
        for key in [k for k in _limiters if k[0] == organization_id]:
            del _limiters[key]
        _breakers.pop(organization_id, None)


def breaker_for(organization_id: int) -> pybreaker.CircuitBreaker:
    with _lock:
        breaker = _breakers.get(organization_id)
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=settings.STRIPE_BREAKER_FAIL_MAX,
                reset_timeout=settings.STRIPE_BREAKER_RESET_SECONDS,
                exclude=list(_NOT_BREAKER_FAILURES),
                name=f"stripe:org{organization_id}",
            )
            _breakers[organization_id] = breaker
        return breaker


def _limiter_for(organization_id: int, per_second: float) -> SendRateLimiter:
    with _lock:
        limiter = _limiters.get((organization_id, per_second))
        if limiter is None:
            limiter = SendRateLimiter(
                per_second=per_second,
                key=f"stripe-rate:org{organization_id}",
                redis_url=settings.REDIS_URL,
            )
            _limiters[(organization_id, per_second)] = limiter
        return limiter


def _client_for(organization_id: int, secret_key: str) -> stripe.StripeClient:
    api_base = settings.STRIPE_API_BASE.rstrip("/")
    fingerprint = hashlib.sha256(secret_key.encode()).hexdigest()
    with _lock:
        client = _clients.get((organization_id, fingerprint, api_base))
        if client is None:
            client = stripe.StripeClient(
                secret_key,
                base_addresses={"api": api_base},
                max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
                http_client=RetryingHttpClient(timeout=settings.STRIPE_TIMEOUT_SECONDS),
            )
            _clients[(organization_id, fingerprint, api_base)] = client
        return client


def _raise(exc: BaseException) -> None:
    raise exc


def _noop() -> None:
    return None


# --- the gateway --------------------------------------------------------------------


@dataclass
class TenantGateway:
    """Stripe for one organization. Thread-safe: one may serve a thread pool."""

    organization_id: int
    tenant_key: str
    client: stripe.StripeClient
    breaker: pybreaker.CircuitBreaker
    limiter: SendRateLimiter

    def call(self, what: str, fn: Callable[[stripe.StripeClient], T]) -> T:
        """Run one SDK call under the tenant's limiter and breaker.

        Closed breaker: the call runs outside the breaker's lock (so a tenant's
        calls run in parallel) and its outcome is reported to it after. Open or
        half-open: the breaker decides (fail fast, or one trial call).
        """
        if self.breaker.current_state != pybreaker.STATE_CLOSED:
            try:
                return self.breaker.call(self._attempt, what, fn)
            except pybreaker.CircuitBreakerError as exc:
                raise self._open(what) from exc
        try:
            result = self._attempt(what, fn)
        except GatewayError as exc:
            try:
                self.breaker.call(_raise, exc)
            except pybreaker.CircuitBreakerError as tripped:
                logger.warning(
                    "stripe breaker opened for tenant %s after: %s", self.tenant_key, exc
                )
                raise self._open(what, cause=exc) from tripped
            raise
        if self.breaker.fail_counter:
            # Reset the failure count. If another thread opened the breaker
            # meanwhile, that stands; this call still succeeded.
            with contextlib.suppress(pybreaker.CircuitBreakerError):
                self.breaker.call(_noop)
        return result

    def _open(self, what: str, cause: Exception | None = None) -> CircuitOpen:
        reason = f" (last error: {cause})" if cause else ""
        return CircuitOpen(
            f"Stripe {what}: circuit open for tenant {self.tenant_key}, "
            f"calls fail fast for {settings.STRIPE_BREAKER_RESET_SECONDS:g}s{reason}"
        )

    def _attempt(self, what: str, fn: Callable[[stripe.StripeClient], T]) -> T:
        if self.limiter.acquire(timeout=settings.STRIPE_RATE_LIMIT_WAIT_SECONDS) is None:
            raise GatewayThrottled(f"Stripe {what}: tenant {self.tenant_key} rate limit, no room")
        try:
            return fn(self.client)
        except stripe.StripeError as exc:
            raise _wrap(exc, what) from None

    # --- reads ----------------------------------------------------------------

    # Reads go through the SDK's raw_request (same retries, errors and
    # headers) and stay plain JSON: building StripeObjects costs about as much
    # CPU as the HTTP call itself, which shows at thousands of reads per run.

    def _get(self, what: str, path: str) -> dict[str, Any]:
        return self.call(what, lambda c: c.raw_request("get", path).data)

    def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        return self._get(
            f"retrieve PaymentIntent {payment_intent_id}",
            f"/v1/payment_intents/{quote(payment_intent_id, safe='')}",
        )

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._get(
            f"retrieve Subscription {subscription_id}",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}",
        )

    # --- writes: each with the caller's deterministic idempotency key ----------

    def set_cancel_at_period_end(
        self, subscription_id: str, *, cancel: bool, idempotency_key: str
    ) -> dict[str, Any]:
        return self.call(
            f"update Subscription {subscription_id}",
            lambda c: c.v1.subscriptions.update(
                subscription_id,
                params={"cancel_at_period_end": cancel},
                options={"idempotency_key": idempotency_key},
            ).to_dict(),
        )

    def create_invoice(
        self,
        *,
        idempotency_key: str,
        customer_email: str,
        customer_name: str,
        currency: str,
        lines: list[tuple[str, int]],
        metadata: dict[str, str],
        description: str = "",
    ) -> str:
        """Create a draft invoice with one item per (description, amount in minor
        units) line; returns its Stripe id.

        Every write carries a key derived from `idempotency_key`, so calling
        again with the same key (a rerun, a retry after a crash) creates nothing
        new within Stripe's idempotency window (24 h).
        """
        customer_id = self.find_or_create_customer(email=customer_email, name=customer_name)
        params: dict[str, Any] = {"customer": customer_id, "metadata": dict(metadata)}
        if description:
            params["description"] = description
        invoice = self.call(
            "create Invoice",
            lambda c: c.v1.invoices.create(
                params=params, options={"idempotency_key": f"{idempotency_key}:invoice"}
            ),
        )
        for i, (text, amount_minor) in enumerate(lines):
            item = {
                "customer": customer_id,
                "invoice": invoice.id,
                "amount": int(amount_minor),
                "currency": currency.lower(),
                "description": text,
            }
            self.call(
                "create InvoiceItem",
                lambda c, item=item, i=i: c.v1.invoice_items.create(
                    params=item, options={"idempotency_key": f"{idempotency_key}:line:{i}"}
                ),
            )
        return invoice.id

    def void_invoice(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        credit_memo: str = "",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Withdraw an invoice as far as Stripe allows for its state: a draft is
        deleted, an open one voided, a paid one gets a credit note of its whole
        amount to the customer's balance (with `credit_memo`). Returns what
        happened: "deleted", "voided", "credit note <id>" or "already
        <status>" (void and uncollectible invoices are left as they are)."""
        path = f"/v1/invoices/{quote(invoice_id, safe='')}"
        try:
            invoice = self._get(f"retrieve Invoice {invoice_id}", path)
        except GatewayRequestError as exc:
            if exc.http_status == 404:
                return "already deleted"
            raise
        status = invoice.get("status")
        if status == "draft":
            self.call(f"delete Invoice {invoice_id}", lambda c: c.raw_request("delete", path))
            return "deleted"
        if status == "open":
            self.call(
                f"void Invoice {invoice_id}",
                lambda c: c.raw_request(
                    "post", f"{path}/void", idempotency_key=f"{idempotency_key}:void"
                ),
            )
            return "voided"
        if status == "paid" and credit_memo:
            amount = int(invoice.get("total") or 0)
            note = self._credit_note(
                invoice_id,
                amount_minor=amount,
                paid=True,
                memo=credit_memo,
                idempotency_key=f"{idempotency_key}:credit",
                metadata=metadata or {},
            )
            return f"credit note {note}"
        return f"already {status}"

    def credit_invoice(
        self,
        invoice_id: str,
        *,
        amount_minor: int,
        currency: str,
        memo: str,
        idempotency_key: str,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Credit part of an invoice as Stripe allows for its state: a draft
        gets a negative invoice item, an open or paid one a credit note (a
        paid one's amount goes to the customer's balance). Returns what
        happened: "credit item <id>", "credit note <id>" or "not credited:
        <status>"."""
        path = f"/v1/invoices/{quote(invoice_id, safe='')}"
        invoice = self._get(f"retrieve Invoice {invoice_id}", path)
        status = invoice.get("status")
        if status == "draft":
            item = self.call(
                "create InvoiceItem",
                lambda c: c.v1.invoice_items.create(
                    params={
                        "customer": invoice["customer"],
                        "invoice": invoice_id,
                        "amount": -int(amount_minor),
                        "currency": currency.lower(),
                        "description": memo,
                    },
                    options={"idempotency_key": f"{idempotency_key}:item"},
                ),
            )
            return f"credit item {item.id}"
        if status in ("open", "paid"):
            note = self._credit_note(
                invoice_id,
                amount_minor=amount_minor,
                paid=status == "paid",
                memo=memo,
                idempotency_key=f"{idempotency_key}:credit",
                metadata=metadata or {},
            )
            return f"credit note {note}"
        return f"not credited: {status}"

    def _credit_note(
        self,
        invoice_id: str,
        *,
        amount_minor: int,
        paid: bool,
        memo: str,
        idempotency_key: str,
        metadata: dict[str, str],
    ) -> str:
        params: dict[str, Any] = {
            "invoice": invoice_id,
            "amount": int(amount_minor),
            "memo": memo,
            "metadata": dict(metadata),
        }
        if paid:  # Stripe needs to know where a paid invoice's money goes
            params["credit_amount"] = int(amount_minor)
        note = self.call(
            "create CreditNote",
            lambda c: c.raw_request(
                "post", "/v1/credit_notes", idempotency_key=idempotency_key, **params
            ),
        )
        return note.data["id"]

    def find_or_create_customer(self, *, email: str, name: str) -> str:
        """The tenant's Stripe customer for `email`; created once."""
        found = self.call(
            "list Customers",
            lambda c: c.v1.customers.list(params={"email": email, "limit": 1}),
        )
        if found.data:
            return found.data[0].id
        digest = hashlib.sha256(email.lower().encode()).hexdigest()[:24]
        customer = self.call(
            "create Customer",
            lambda c: c.v1.customers.create(
                params={"email": email, "name": name},
                options={"idempotency_key": f"org:{self.organization_id}:customer:{digest}"},
            ),
        )
        return customer.id


def gateway_for(organization: Any) -> TenantGateway | None:
    """The organization's gateway, or None when it has no enabled Stripe config.

    `organization`: an Organization or its id. Raises GatewayNotConfigured when
    the config is enabled but its key cannot be read.
    """
    organization_id = getattr(organization, "pk", organization)
    config = (
        PaymentProviderConfig.objects.filter(
            organization_id=organization_id, enabled=True, provider=Provider.STRIPE
        )
        .select_related("organization")
        .first()
    )
    if config is None:
        return None
    try:
        secret_key = decrypt(config.secret_key_encrypted)
    except SecretUnreadable as exc:
        raise GatewayNotConfigured(
            f"tenant {config.organization.key}: {exc}; set its keys again"
        ) from None
    per_second = config.requests_per_second or settings.STRIPE_RATE_LIMIT_PER_SECOND
    return TenantGateway(
        organization_id=organization_id,
        tenant_key=config.organization.key,
        client=_client_for(organization_id, secret_key),
        breaker=breaker_for(organization_id),
        limiter=_limiter_for(organization_id, per_second),
    )


def require_gateway(organization: Any) -> TenantGateway:
    gateway = gateway_for(organization)
    if gateway is None:
        key = getattr(organization, "key", organization)
        raise GatewayNotConfigured(f"tenant {key} has no enabled Stripe configuration")
    return gateway

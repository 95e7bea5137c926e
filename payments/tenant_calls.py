"""The per-run set of tenant gateways with their thread pool.

A job that calls Stripe for many tenants' items (payments.reconcile,
subscriptions.sync_renewals) needs the same machinery every run: one gateway
per organization; tenants whose config cannot be read, or whose breaker opens,
set aside as broken (their items skipped, not failed one by one); one thread
pool kept for the whole run; per-tenant tallies; and at the end one item
failure per broken tenant. `TenantCalls` is that machinery, `run_batches` its
job side (item reruns, tenant interleaving, batches and progress).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from payments.gateway import CircuitOpen, GatewayError, TenantGateway, gateway_for
from subscriptions.selectors import tenant_keys

if TYPE_CHECKING:
    from jobs.context import JobContext

T = TypeVar("T")
R = TypeVar("R")

OK = "ok"
SKIPPED = "skipped"  # the tenant is broken: not called, reported once per tenant
ERROR = "error"  # this call failed: an item failure


class TenantItem(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def organization_id(self) -> int: ...


ItemT = TypeVar("ItemT", bound=TenantItem)


@dataclass
class TenantRunResult:
    """The tallies every tenant run keeps; a subclass adds its own."""

    errors: int = 0
    skipped: int = 0
    audit_records: int = 0
    tenants: int = 0
    per_tenant: dict[int, dict[str, int]] = field(default_factory=dict)
    tenant_failures: dict[int, str] = field(default_factory=dict)

    def count(self, organization_id: int, outcome: str) -> None:
        """One item's outcome for its tenant; skipped and errors also in total."""
        tenant = self.per_tenant.setdefault(organization_id, {})
        tenant[outcome] = tenant.get(outcome, 0) + 1
        if outcome == SKIPPED:
            self.skipped += 1
        elif outcome == ERROR:
            self.errors += 1


class TenantCalls:
    """Base of a run's Stripe work over many tenants' items.

    A subclass sets `result`, implements `run_batch`, and in it calls
    `_prepare` for the batch's organizations and `_call` for each Stripe call
    (on the run's pool through `_map`). The job closes the run (`close`) and
    then calls `finish`. Nothing here touches the database from a thread.
    """

    item_kind = "item"  # item failures are keyed "<item_kind>:<id>"
    not_done = "item(s) not done"  # what a broken tenant's skipped items missed
    thread_name_prefix = "tenant-calls"
    result: TenantRunResult

    def __init__(
        self, *, concurrency: int, on_item_failure: Callable[[str, str], None] | None
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.on_item_failure = on_item_failure or (lambda key, error: None)
        self._gateways: dict[int, TenantGateway | None] = {}
        self._tenant_keys: dict[int, str] = {}
        self._broken: dict[int, str] = {}
        # One pool for the whole run: its threads keep their HTTP connections
        # from batch to batch (a pool per batch would reconnect every time).
        self._pool: ThreadPoolExecutor | None = None

    def run_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def finish(self) -> None:
        """Record one failure per tenant whose gateway failed or whose breaker opened."""
        self.result.tenants = len(self._gateways)
        for org, message in sorted(self._broken.items()):
            skipped = self.result.per_tenant.get(org, {}).get(SKIPPED, 0)
            self.result.tenant_failures[org] = message
            self.on_item_failure(
                f"tenant:{self.tenant_key(org)}", f"{message}; {skipped} {self.not_done}"
            )

    def tenant_key(self, organization_id: int) -> str:
        return self._tenant_keys.get(organization_id, str(organization_id))

    def by_tenant_key(self, by_organization: dict[int, T]) -> dict[str, T]:
        """`by_organization` keyed by tenant key, in organization order (for summaries)."""
        return {self.tenant_key(org): value for org, value in sorted(by_organization.items())}

    def _item_failed(self, item_id: int, error: str) -> None:
        self.on_item_failure(f"{self.item_kind}:{item_id}", error)

    def _learn_tenant_keys(self, organization_ids: set[int]) -> None:
        """Tenant keys (for audit records and summaries) of organizations not seen yet."""
        missing = organization_ids - set(self._tenant_keys)
        if missing:
            self._tenant_keys.update(tenant_keys(missing))

    def _prepare(self, organization_ids: set[int]) -> None:
        """Gateways and tenant keys for the organizations not seen yet this run;
        one whose config cannot be read is broken from the start."""
        new = organization_ids - set(self._gateways)
        self._learn_tenant_keys(new)
        for org_id in sorted(new):
            try:
                self._gateways[org_id] = gateway_for(org_id)
            except GatewayError as exc:
                self._gateways[org_id] = None
                self._broken[org_id] = str(exc)

    def _call(self, organization_id: int, call: Callable[[TenantGateway], Any]) -> tuple[str, Any]:
        """(OK, what `call` returned); (SKIPPED, why) when the tenant is broken or
        its breaker opens now; (ERROR, message) when this one call failed."""
        gateway = self._gateways.get(organization_id)
        if organization_id in self._broken or gateway is None:
            return SKIPPED, self._broken.get(organization_id, "no Stripe gateway")
        try:
            return OK, call(gateway)
        except CircuitOpen as exc:
            self._broken.setdefault(organization_id, str(exc))
            return SKIPPED, str(exc)
        except GatewayError as exc:
            return ERROR, str(exc)

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """`fn` over `items`, on the run's pool when there is more than one."""
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.concurrency, thread_name_prefix=self.thread_name_prefix
            )
        return list(self._pool.map(fn, items))


def interleave_by_tenant(items: list[T]) -> list[T]:
    """Round-robin over tenants (items with `organization_id`), so concurrent
    calls spread over every tenant's rate limit instead of queueing on one."""
    by_tenant: dict[int, list[T]] = {}
    for item in items:
        by_tenant.setdefault(item.organization_id, []).append(item)  # type: ignore[attr-defined]
    queues = list(by_tenant.values())
    out: list[T] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def run_batches(ctx: JobContext, run: TenantCalls, items: list[ItemT], *, batch_size: int) -> int:
    """The job side: keep the items an item rerun asks for (`<item_kind>:<id>`
    or `tenant:<key>`), interleave them by tenant, run them batch by batch with
    progress, close the pool and record the broken tenants. Returns how many
    items were run."""
    if ctx.only_items is not None:
        keys = tenant_keys(i.organization_id for i in items)
        items = [
            i
            for i in items
            if ctx.should_process(f"{run.item_kind}:{i.id}")
            or ctx.should_process(f"tenant:{keys.get(i.organization_id)}")
        ]
    items = interleave_by_tenant(items)
    ctx.progress(0, len(items))
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            run.run_batch(batch)
            ctx.progress(start + len(batch), len(items))
    finally:
        run.close()
    run.finish()
    return len(items)

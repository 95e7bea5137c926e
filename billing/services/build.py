"""What an invoice bills: plan fees, priced usage, late usage of earlier months, tax.

The policy, in one place:

* Plan fees. A monthly plan's fee is billed for the calendar month, prorated
  by the days its subscription was billable in it (started or ended mid-month:
  `days / days in the month` of the fee, rounded half up). A yearly plan's fee
  is billed once, in full, in the month its yearly period starts. A
  subscription is billable from the earlier of its creation and its current
  period's start until it ends (canceled: `canceled_at`; expired or suspended:
  `expired_at`); trialing subscriptions are never billed. A tenant whose
  Stripe already bills the plan fees (Organization.stripe_bills_plan_fees)
  gets no fee here for its Stripe-linked subscriptions: usage lines only.
* Usage. One set of lines per priced metric with usage in the month, priced
  by the organization's main plan (its dearest billable subscription's) with
  the price's charge model (billing.services.pricing). Metrics without a price
  on that plan are not billed.
* Late usage. A month already invoiced whose usage changed afterwards
  (UsageRevision) is rechecked on the organization's next invoice: the units
  above what the usage ledger (BilledUsage) says was billed are billed as
  adjustment lines naming that month, at that month's prices.
* Tax. The organization's rate (or INVOICE_TAX_RATE_BPS) on the subtotal,
  rounded half up, named (its tax name or INVOICE_TAX_NAME); none, with a
  reverse-charge note, when INVOICE_SELLER_COUNTRY is set and the buyer has a
  tax id and a different country.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db.models import Q

from billing.models import BilledUsage, Invoice, InvoiceLineKind, InvoiceStatus
from billing.selectors import billed_usage, next_usage_revisions, usage_revisions, usage_totals
from billing.services.pdf import format_money
from billing.services.pricing import Price, charges, prices_of_plans
from subscriptions.models import (
    Organization,
    PlanInterval,
    Subscription,
    SubscriptionStatus,
)

S = SubscriptionStatus
# Trials are free; every other status was billable until it ended.
NOT_BILLED = (S.TRIALING,)
ENDED_AT = {S.CANCELED: "canceled_at", S.EXPIRED: "expired_at", S.SUSPENDED: "expired_at"}


class NothingToBill(ValueError):
    """The organization has nothing to bill in the period."""


# --- periods --------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: date  # first day of the month
    end: date  # first day of the next month (exclusive)

    @classmethod
    def of_month(cls, month: date) -> Period:
        start = month.replace(day=1)
        end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        return cls(start, end)

    @classmethod
    def parse(cls, text: str) -> Period:
        """ "2026-01" -> January 2026; anything else is a ValueError naming the format."""
        try:
            year, month = (int(part) for part in text.strip().split("-"))
            return cls.of_month(date(year, month, 1))
        except (TypeError, ValueError):
            raise ValueError(f"month must be YYYY-MM, got {text!r}") from None

    @classmethod
    def before_slot(cls, slot: datetime) -> Period:
        """The month before the slot's month (UTC): the 1 Feb run bills January."""
        day = slot.astimezone(UTC).date().replace(day=1)
        previous = date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, 1)
        return cls.of_month(previous)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"

    @property
    def name(self) -> str:
        return f"{self.start:%B %Y}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, 1, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return datetime(self.end.year, self.end.month, 1, tzinfo=UTC)


# --- drafts ----------------------------------------------------------------------


@dataclass
class LineDraft:
    kind: str
    description: str
    quantity: int
    unit_price_minor: int
    amount_minor: int
    metric: str = ""
    unit: str = ""
    adjusts_period_start: date | None = None
    reason: str = ""
    added_by: str = ""


@dataclass(frozen=True)
class UsageBilling:
    """A usage-ledger row the invoice writes when it is finalized."""

    period_start: date
    metric: str
    revision: int
    quantity: int
    amount_minor: int


@dataclass
class InvoiceDraft:
    organization_id: int
    organization_key: str
    period: Period
    currency: str
    lines: list[LineDraft]
    tax_minor: int = 0
    tax_rate_bps: int = 0
    tax_name: str = ""
    reverse_charge: bool = False
    price_plan_id: int | None = None
    usage: list[UsageBilling] = field(default_factory=list)
    # UsageRevision versions this draft's usage read covers: removed when it is
    # finalized (a newer version means a rebuild it did not see).
    revisions: dict[date, int] = field(default_factory=dict)

    @property
    def subtotal_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.tax_minor

    def retax(self) -> None:
        self.tax_minor = tax_for(self.subtotal_minor, self.tax_rate_bps)


# --- tax -----------------------------------------------------------------------------


def tax_for(subtotal_minor: int, rate_bps: int) -> int:
    """`rate_bps` of the subtotal, rounded half up, in integers."""
    if not rate_bps or subtotal_minor <= 0:
        return 0
    return (subtotal_minor * rate_bps + 5_000) // 10_000


@dataclass(frozen=True)
class TaxTerms:
    rate_bps: int
    name: str
    reverse_charge: bool


def validate_tax_rate(rate_bps: object) -> int:
    if isinstance(rate_bps, bool) or not isinstance(rate_bps, int):
        raise ValueError(f"a tax rate is a whole number of basis points, got {rate_bps!r}")
    if not 0 <= rate_bps <= 10_000:
        raise ValueError(f"a tax rate is between 0 and 10000 bps (100%), got {rate_bps}")
    return rate_bps


def tax_terms(org: Organization) -> TaxTerms:
    """The organization's tax: its own rate or INVOICE_TAX_RATE_BPS, its name,
    and reverse charge for a buyer with a tax id in another country than the
    seller's (INVOICE_SELLER_COUNTRY)."""
    name = org.tax_name or settings.INVOICE_TAX_NAME
    seller = settings.INVOICE_SELLER_COUNTRY
    if seller and org.tax_id and org.country and org.country != seller:
        return TaxTerms(0, name, True)
    rate = org.tax_rate_bps if org.tax_rate_bps is not None else settings.INVOICE_TAX_RATE_BPS
    return TaxTerms(validate_tax_rate(rate), name, False)


# --- plan fees --------------------------------------------------------------------


def billable_span(sub: Subscription) -> tuple[datetime, datetime | None]:
    """When the subscription was billable: from the earlier of its creation and
    its current period's start, until it ended (None: it has not)."""
    start = min(sub.created_at, sub.current_period_start)
    end_field = ENDED_AT.get(sub.status)
    return start, (getattr(sub, end_field) if end_field else None)


def billable_days(sub: Subscription, period: Period) -> tuple[date, date] | None:
    """(first, last) day of the period the subscription was billable on, or None."""
    if sub.status in NOT_BILLED:
        return None
    start, end = billable_span(sub)
    first = max(period.start, start.astimezone(UTC).date())
    last = period.end - timedelta(days=1)
    if end is not None:
        last = min(last, (end.astimezone(UTC) - timedelta(microseconds=1)).date())
    return (first, last) if first <= last else None


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def plan_fee(sub: Subscription, period: Period) -> LineDraft | None:
    """The subscription's plan-fee line in the period, by the policy above."""
    plan = sub.plan
    days = billable_days(sub, period)
    if days is None:
        return None
    if plan.interval == PlanInterval.YEAR:
        starts = sub.current_period_start
        start, end = billable_span(sub)
        if not (period.start_at <= starts < period.end_at):
            return None
        if not (start <= starts and (end is None or starts < end)):
            return None
        last = (sub.current_period_end.astimezone(UTC) - timedelta(days=1)).date()
        return LineDraft(
            kind=InvoiceLineKind.PLAN,
            description=f"{plan.name} plan (yearly), {starts.astimezone(UTC):%d %b %Y} to "
            f"{last:%d %b %Y}",
            quantity=1,
            unit="year",
            unit_price_minor=plan.price_minor,
            amount_minor=plan.price_minor,
        )
    first, last = days
    count = (last - first).days + 1
    if count == period.days:
        amount, text = plan.price_minor, f"{plan.name} plan (monthly), {period.name}"
    else:
        amount = _round_half_up(plan.price_minor * count, period.days)
        text = (
            f"{plan.name} plan (monthly), {first:%d %b} to {last:%d %b %Y}: {count} of "
            f"{period.days} days (full month {format_money(plan.price_minor, plan.currency)})"
        )
    return LineDraft(
        kind=InvoiceLineKind.PLAN,
        description=text,
        quantity=1,
        unit="month",
        unit_price_minor=amount,
        amount_minor=amount,
    )


def _subscriptions(
    organization_ids: Sequence[int], period: Period
) -> dict[int, list[Subscription]]:
    """Subscriptions that may have been billable in the period, per organization
    (the exact days are worked out per subscription)."""
    started = Q(created_at__lt=period.end_at) | Q(current_period_start__lt=period.end_at)
    not_ended = (
        Q(status__in=[S.ACTIVE, S.PAST_DUE])
        | Q(status=S.CANCELED, canceled_at__gt=period.start_at)
        | Q(status__in=[S.EXPIRED, S.SUSPENDED], expired_at__gt=period.start_at)
    )
    rows = (
        Subscription.objects.filter(organization_id__in=organization_ids)
        .filter(started & not_ended)
        .select_related("plan")
        .order_by("organization_id", "-plan__price_minor", "id")
    )
    by_org: dict[int, list[Subscription]] = defaultdict(list)
    for sub in rows:
        if billable_days(sub, period) is not None:
            by_org[sub.organization_id].append(sub)
    return by_org


# --- usage and late usage ---------------------------------------------------------


def _usage_lines(
    price: Price, *, metric: str, total: int, already: tuple[int, int]
) -> tuple[list[LineDraft], int, int]:
    """Lines for `total` units of the period, less what other invoices already
    billed of it (`already`: quantity, amount). Returns (lines, quantity, amount)
    for the ledger."""
    lines = [
        LineDraft(
            kind=InvoiceLineKind.USAGE,
            description=c.description,
            metric=metric,
            quantity=c.quantity,
            unit=c.unit,
            unit_price_minor=c.unit_price_minor,
            amount_minor=c.amount_minor,
        )
        for c in charges(price, upto=total)
    ]
    quantity, amount = already
    if amount or quantity:
        lines.append(
            LineDraft(
                kind=InvoiceLineKind.ADJUSTMENT,
                description=f"{price.metric_name}: {quantity:,} {price.units} billed before "
                "as late usage on another invoice",
                metric=metric,
                quantity=1,
                unit="",
                unit_price_minor=-amount,
                amount_minor=-amount,
            )
        )
    return lines, total - quantity, sum(line.amount_minor for line in lines)


def _late_lines(
    price: Price, *, metric: str, period: Period, total: int, billed: int
) -> tuple[list[LineDraft], int]:
    lines = [
        LineDraft(
            kind=InvoiceLineKind.ADJUSTMENT,
            description=f"Late usage of {period.name}: {c.description}",
            metric=metric,
            quantity=c.quantity,
            unit=c.unit,
            unit_price_minor=c.unit_price_minor,
            amount_minor=c.amount_minor,
            adjusts_period_start=period.start,
        )
        for c in charges(price, upto=total, after=billed)
    ]
    return lines, sum(line.amount_minor for line in lines)


@dataclass
class _Late:
    """Months before the period to recheck, per organization, and the invoices
    that billed them."""

    periods: dict[int, set[date]] = field(default_factory=lambda: defaultdict(set))
    invoices: dict[tuple[int, date], Invoice] = field(default_factory=dict)
    totals: dict[tuple[int, date, str], int] = field(default_factory=dict)


def _late_months(
    ids: Sequence[int],
    period: Period,
    revisions: dict[tuple[int, date], int],
    replacing: dict[int, int],
) -> _Late:
    late = _Late()
    for (org_id, month), _ in revisions.items():
        if month < period.start:
            late.periods[org_id].add(month)
    if replacing:
        # What a replaced invoice adjusted is billed again by its successor.
        for org_id, month in (
            BilledUsage.objects.filter(invoice_id__in=list(replacing.values()))
            .exclude(period_start=period.start)
            .values_list("organization_id", "period_start")
        ):
            late.periods[org_id].add(month)
    months = {m for ms in late.periods.values() for m in ms}
    if not months:
        return late
    for invoice in Invoice.objects.filter(
        organization_id__in=list(late.periods), period_start__in=months
    ).exclude(status=InvoiceStatus.VOID):
        late.invoices[(invoice.organization_id, invoice.period_start)] = invoice
    for month in sorted(months):
        month_period = Period.of_month(month)
        org_ids = [o for o, ms in late.periods.items() if month in ms]
        for (org_id, code), total in usage_totals(
            organization_ids=org_ids, start=month_period.start_at, end=month_period.end_at
        ).items():
            late.totals[(org_id, month, code)] = total
    return late


# --- the build ---------------------------------------------------------------------


class NoInvoice(str):
    """Why an organization gets no invoice for the period: a skip (nothing to
    bill), or a `BuildFailure`. The text is what summaries show."""

    is_failure = False

    @property
    def message(self) -> str:
        return str(self)


class BuildFailure(NoInvoice):
    """The organization should be invoiced but cannot be (bad data): a failure
    of the run, not a skip. Reads "error: <message>" in summaries."""

    is_failure = True

    def __new__(cls, message: str) -> BuildFailure:
        return super().__new__(cls, f"error: {message}")

    @property
    def message(self) -> str:
        return str(self).removeprefix("error: ")


def build_drafts(
    *,
    organizations: Sequence[Organization],
    period: Period,
    replacing: dict[int, int] | None = None,
) -> tuple[dict[int, InvoiceDraft], dict[int, NoInvoice]]:
    """The invoices the organizations would get for the period, and why others
    get none (a `BuildFailure` is a failure, not a skip).

    `replacing` ({organization id: invoice id}): invoices being regenerated;
    what they billed does not count as billed.
    """
    replacing = replacing or {}
    ids = [org.pk for org in organizations]
    # Revisions first, usage after: a rebuild this read misses has a newer version.
    revisions = usage_revisions(organization_ids=ids, through=period.start)
    subscriptions = _subscriptions(ids, period)
    usage = usage_totals(organization_ids=ids, start=period.start_at, end=period.end_at)
    late = _late_months(ids, period, revisions, replacing)
    plan_ids = {subs[0].plan_id for subs in subscriptions.values()}
    plan_ids |= {inv.price_plan_id for inv in late.invoices.values() if inv.price_plan_id}
    prices = prices_of_plans(sorted(plan_ids))
    months = {period.start} | {m for ms in late.periods.values() for m in ms}
    exclude = list(replacing.values())
    billed = billed_usage(organization_ids=ids, periods=months, exclude_invoice_ids=exclude)
    next_revision = next_usage_revisions(organization_ids=ids, periods=months)
    usage_by_org: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for (org_id, code), total in sorted(usage.items()):
        usage_by_org[org_id].append((code, total))

    drafts: dict[int, InvoiceDraft] = {}
    reasons: dict[int, NoInvoice] = {}
    for org in organizations:
        subs = subscriptions.get(org.pk)
        if not subs:
            reasons[org.pk] = NoInvoice("no billable subscription in the period")
            continue
        currencies = {sub.plan.currency for sub in subs}
        if len(currencies) > 1:
            found = ", ".join(sorted(currencies))
            reasons[org.pk] = BuildFailure(f"subscriptions in several currencies ({found})")
            continue
        main = subs[0].plan
        try:
            terms = tax_terms(org)
        except ValueError as exc:
            reasons[org.pk] = BuildFailure(str(exc))
            continue
        draft = InvoiceDraft(
            organization_id=org.pk,
            organization_key=org.key,
            period=period,
            currency=main.currency,
            lines=[],
            tax_rate_bps=terms.rate_bps,
            tax_name=terms.name,
            reverse_charge=terms.reverse_charge,
            price_plan_id=main.pk,
            revisions={month: version for (o, month), version in revisions.items() if o == org.pk},
        )
        stripe_bills = org.stripe_bills_plan_fees
        for sub in subs:
            if stripe_bills and sub.stripe_subscription_id:
                continue  # Stripe bills this fee
            line = plan_fee(sub, period)
            if line is not None:
                draft.lines.append(line)
        for code, total in usage_by_org.get(org.pk, ()):
            price = prices.get((main.pk, code))
            if price is None or total <= 0:
                continue
            key = (org.pk, period.start, code)
            lines, quantity, amount = _usage_lines(
                price, metric=code, total=total, already=billed.get(key, (0, 0))
            )
            draft.lines += lines
            draft.usage.append(
                UsageBilling(period.start, code, next_revision.get(key, 0), quantity, amount)
            )
        _add_late_usage(draft, org, late, prices, billed, next_revision)
        if not any(line.amount_minor for line in draft.lines):
            reasons[org.pk] = NoInvoice(
                "nothing to bill (no plan fee and no priced usage in the period)"
            )
            continue
        draft.retax()
        drafts[org.pk] = draft
    return drafts, reasons


def _add_late_usage(
    draft: InvoiceDraft,
    org: Organization,
    late: _Late,
    prices: dict[tuple[int, str], Price],
    billed: dict[tuple[int, date, str], tuple[int, int]],
    next_revision: dict[tuple[int, date, str], int],
) -> None:
    """Adjustment lines for the late usage of months this organization was
    already invoiced for. A month whose invoice is still a draft is left to
    that draft; a month never invoiced has nothing to adjust."""
    for month in sorted(late.periods.get(org.pk, ())):
        invoice = late.invoices.get((org.pk, month))
        if invoice is None:
            continue  # never billed: its revision goes with this draft's
        if invoice.status == InvoiceStatus.DRAFT or invoice.currency != draft.currency:
            draft.revisions.pop(month, None)  # left for that month's own invoice
            continue
        codes = sorted(code for (o, m, code) in late.totals if (o, m) == (org.pk, month))
        for code in codes:
            price = prices.get((invoice.price_plan_id, code)) if invoice.price_plan_id else None
            key = (org.pk, month, code)
            total = late.totals[key]
            done = billed.get(key, (0, 0))[0]
            if price is None or total <= done:
                continue
            lines, amount = _late_lines(
                price, metric=code, period=Period.of_month(month), total=total, billed=done
            )
            if not lines:  # e.g. the late units fit in a package already billed
                continue
            draft.lines += lines
            draft.usage.append(
                UsageBilling(month, code, next_revision.get(key, 0), total - done, amount)
            )

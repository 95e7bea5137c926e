"""Metric prices: the charge models, their validation, and the lines they bill.

A price turns a period total into invoice lines (`charges`), each with a
quantity in the unit the price names, a unit price and an amount, and a
description that says the model in words:

* per unit: `quantity` units at `unit_price_minor` each;
* package: `unit_price_minor` per block of `package_size` units; a partial
  block counts as a whole one ("0.25 EUR per 1,000 calls" bills 1,793 calls as
  2 blocks, 0.50 EUR);
* graduated: tiers 0-1,000, 1,001-10,000, 10,001 and above; each unit costs
  the price of the tier it falls in (one line per tier used).

`charges(after=B, upto=T)` bills the units above B up to T, which is what an
adjustment for late usage needs: units already billed keep the price they
were billed at, and the late ones cost what they would have cost on the
original invoice (the next tier, the next block).

Prices are written through `set_metric_price` (the admin validates with the
same `validate_price`), which refuses an unknown model, negative or
overlapping tiers, a package size of 0 with a ValueError and writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from django.db import transaction

from billing.models import BillableMetric, ChargeModel, PlanMetricPrice, PriceTier
from billing.services.pdf import format_money
from subscriptions.models import Plan


@dataclass(frozen=True)
class Tier:
    first_unit: int
    last_unit: int | None  # inclusive; None: and above
    unit_price_minor: int

    @property
    def label(self) -> str:
        if self.last_unit is None:
            return f"{self.first_unit:,} and above"
        return f"{self.first_unit:,}\u2013{self.last_unit:,}"

    @property
    def floor(self) -> int:
        """Units below this tier: a total of `floor + n` puts n units in it."""
        return 0 if self.first_unit == 0 else self.first_unit - 1


@dataclass(frozen=True)
class Price:
    """A PlanMetricPrice detached from the ORM, with what its lines need to say."""

    charge_model: str
    currency: str
    metric_name: str
    unit: str  # the metric's unit, e.g. "calls"
    unit_price_minor: int = 0
    package_size: int = 1
    tiers: tuple[Tier, ...] = ()

    @property
    def units(self) -> str:
        return self.unit or "units"

    def describe(self) -> str:
        """The price as a person reads it: "25.00 EUR per 1,000 calls (package, ...)"."""
        money = format_money(self.unit_price_minor, self.currency)
        if self.charge_model == ChargeModel.PER_UNIT:
            return f"{money} per unit ({self.units})"
        if self.charge_model == ChargeModel.PACKAGE:
            return (
                f"{money} per {self.package_size:,} {self.units} "
                "(package; a partial package is billed as a whole one)"
            )
        tiers = "; ".join(
            f"{t.label}: {format_money(t.unit_price_minor, self.currency)} each"
            if t.unit_price_minor
            else f"{t.label}: free"
            for t in self.tiers
        )
        return f"graduated per {self.unit or 'unit'}: {tiers}"


@dataclass(frozen=True)
class Charge:
    """One priced line."""

    description: str
    quantity: int
    unit: str
    unit_price_minor: int
    amount_minor: int


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def charges(price: Price, *, upto: int, after: int = 0) -> list[Charge]:
    """The lines for the units above `after` up to `upto` (both period totals)."""
    if upto <= after:
        return []
    name = price.metric_name
    if price.charge_model == ChargeModel.PER_UNIT:
        quantity = upto - after
        return [
            Charge(
                description=f"{name} \u2014 per unit",
                quantity=quantity,
                unit=price.units,
                unit_price_minor=price.unit_price_minor,
                amount_minor=quantity * price.unit_price_minor,
            )
        ]
    if price.charge_model == ChargeModel.PACKAGE:
        size = price.package_size
        packages = _ceil_div(upto, size) - _ceil_div(after, size)
        if packages <= 0:
            return []  # the late units fit in a package already billed
        units = upto - after
        return [
            Charge(
                description=(
                    f"{name} \u2014 package of {size:,} {price.units}: {units:,} {price.units} "
                    "(a partial package is billed as a whole one)"
                ),
                quantity=packages,
                unit=f"{size:,} {price.units}",
                unit_price_minor=price.unit_price_minor,
                amount_minor=packages * price.unit_price_minor,
            )
        ]
    if price.charge_model == ChargeModel.GRADUATED:
        lines = []
        for number, tier in enumerate(price.tiers, start=1):
            top = upto if tier.last_unit is None else min(upto, tier.last_unit)
            bottom = max(after, tier.floor)
            quantity = top - bottom
            if quantity <= 0:
                continue
            lines.append(
                Charge(
                    description=(
                        f"{name} \u2014 graduated, tier {number} ({tier.label} {price.units})"
                    ),
                    quantity=quantity,
                    unit=price.units,
                    unit_price_minor=tier.unit_price_minor,
                    amount_minor=quantity * tier.unit_price_minor,
                )
            )
        return lines
    raise ValueError(f"unknown charge model {price.charge_model!r}")


# --- validation and writes -------------------------------------------------------


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return value


def validate_tiers(tiers: Sequence[Tier]) -> list[Tier]:
    """Tiers sorted by their first unit, or a ValueError saying what is wrong:
    the first must start at 0, each next one right after the previous one ends
    (no overlap, no gap), only the last is open-ended, no negative number."""
    if not tiers:
        raise ValueError("a graduated price needs at least one tier")
    for tier in tiers:
        _as_int(tier.first_unit, "a tier's first unit")
        _as_int(tier.unit_price_minor, "a tier's unit price")
        if tier.last_unit is not None:
            _as_int(tier.last_unit, "a tier's last unit")
        if tier.first_unit < 0 or (tier.last_unit is not None and tier.last_unit < 0):
            raise ValueError(f"tier {tier.label}: units cannot be negative")
        if tier.unit_price_minor < 0:
            raise ValueError(f"tier {tier.label}: the unit price cannot be negative")
        if tier.last_unit is not None and tier.last_unit < tier.first_unit:
            raise ValueError(f"tier {tier.first_unit:,}-{tier.last_unit:,} ends before it starts")
    ordered = sorted(tiers, key=lambda t: t.first_unit)
    if ordered[0].first_unit != 0:
        raise ValueError(f"the first tier must start at 0, not {ordered[0].first_unit:,}")
    for previous, tier in pairwise(ordered):
        if previous.last_unit is None:
            raise ValueError(
                f"tier {previous.label} has no end but tier {tier.label} follows it; "
                "only the last tier is open-ended"
            )
        expected = previous.last_unit + 1
        if tier.first_unit < expected:
            raise ValueError(f"tiers {previous.label} and {tier.label} overlap")
        if tier.first_unit > expected:
            raise ValueError(
                f"tiers {previous.label} and {tier.label} leave a gap: "
                f"the next tier must start at {expected:,}"
            )
    if ordered[-1].last_unit is not None:
        raise ValueError(
            f"the last tier ({ordered[-1].label}) must be open-ended (no last unit), "
            "so every quantity has a price"
        )
    return ordered


def validate_price(
    *,
    charge_model: str,
    unit_price_minor: Any = 0,
    package_size: Any = 1,
    tiers: Sequence[Tier] = (),
) -> list[Tier]:
    """ValueError naming the problem, or the price's tiers in order ([] unless graduated)."""
    if charge_model not in ChargeModel.values:
        raise ValueError(
            f"unknown charge model {charge_model!r}; use one of {', '.join(ChargeModel.values)}"
        )
    _as_int(unit_price_minor, "the unit price")
    _as_int(package_size, "the package size")
    if unit_price_minor < 0:
        raise ValueError("the unit price cannot be negative")
    if charge_model == ChargeModel.PACKAGE and package_size < 1:
        raise ValueError(f"the package size must be at least 1 unit, got {package_size}")
    if charge_model == ChargeModel.GRADUATED:
        return validate_tiers(tiers)
    if tiers:
        raise ValueError(f"only graduated prices have tiers, not {charge_model} prices")
    return []


def set_metric_price(
    *,
    plan: Plan,
    metric: BillableMetric,
    charge_model: str,
    unit_price_minor: int = 0,
    package_size: int = 1,
    tiers: Sequence[Tier | Mapping[str, Any]] = (),
) -> PlanMetricPrice:
    """Create or replace the metric's price on the plan (tiers included), in
    one transaction; bad input is a ValueError and writes nothing."""
    tier_list = [t if isinstance(t, Tier) else Tier(**t) for t in tiers]
    ordered = validate_price(
        charge_model=charge_model,
        unit_price_minor=unit_price_minor,
        package_size=package_size,
        tiers=tier_list,
    )
    with transaction.atomic():
        price, _ = PlanMetricPrice.objects.update_or_create(
            plan=plan,
            metric=metric,
            defaults={
                "charge_model": charge_model,
                "unit_price_minor": unit_price_minor,
                "package_size": package_size if charge_model == ChargeModel.PACKAGE else 1,
            },
        )
        price.tiers.all().delete()
        PriceTier.objects.bulk_create(
            [
                PriceTier(
                    price=price,
                    first_unit=t.first_unit,
                    last_unit=t.last_unit,
                    unit_price_minor=t.unit_price_minor,
                )
                for t in ordered
            ]
        )
    return price


def prices_of_plans(plan_ids: Sequence[int]) -> dict[tuple[int, str], Price]:
    """{(plan id, metric code): Price} for the plans, tiers included (two queries)."""
    rows = list(
        PlanMetricPrice.objects.filter(plan_id__in=list(plan_ids)).select_related("metric", "plan")
    )
    tiers: dict[int, list[Tier]] = {}
    for tier in PriceTier.objects.filter(price__in=rows).order_by("price_id", "first_unit"):
        tiers.setdefault(tier.price_id, []).append(
            Tier(tier.first_unit, tier.last_unit, tier.unit_price_minor)
        )
    return {(row.plan_id, row.metric.code): price_of(row, tiers.get(row.pk, [])) for row in rows}


def price_of(row: PlanMetricPrice, tiers: Sequence[Tier] | None = None) -> Price:
    if tiers is None:
        tiers = [Tier(t.first_unit, t.last_unit, t.unit_price_minor) for t in row.tiers.all()]
    return Price(
        charge_model=row.charge_model,
        currency=row.plan.currency,
        metric_name=row.metric.name,
        unit=row.metric.unit,
        unit_price_minor=row.unit_price_minor,
        package_size=row.package_size,
        tiers=tuple(tiers),
    )

"""An independent "MRR at an instant" evaluator for the property tests.

Written apart from the normaliser on purpose: it imports nothing from ``nrr.domain``
(no pricing, no history, no months helper) and never reads invoice lines. It works from
the truth the test generator records while it drives the Stripe world (which item had
which price and quantity from when to when, which discount applied when, when a trial
ran and when revenue ended), the price and coupon objects as Stripe shows them, and the
definitions (docs/revenue-definitions.md) read directly:

- MRR of an item = unit_amount x quantity / months per interval (month 1, year 12);
- a subscription counts from its start, not during its trial, until its revenue ends;
- ``percent_off`` scales; ``amount_off`` comes off once per billing interval, shared among
  the items of that interval in proportion to their amounts, never below zero;
  ``once`` coupons never change MRR (policy ``discounts=recurring``, the default).

Amounts are exact :class:`Fraction` of minor units.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

END_OF_TIME = 2**62


@dataclass
class ItemTruth:
    item_id: str
    price_id: str
    quantity: int
    start: int
    end: int = END_OF_TIME


@dataclass
class DiscountTruth:
    coupon_id: str
    start: int
    end: int = END_OF_TIME


@dataclass
class SubscriptionTruth:
    sub_id: str
    customer_id: str
    currency: str
    start: int
    trial_end: int | None = None
    revenue_end: int = END_OF_TIME
    items: list[ItemTruth] = field(default_factory=list)
    discounts: list[DiscountTruth] = field(default_factory=list)

    def item(self, item_id: str) -> ItemTruth:
        """The item's state in force now (the last one recorded)."""
        return [i for i in self.items if i.item_id == item_id][-1]

    def change_item(self, item_id: str, at: int, *, price_id: str | None = None,
                    quantity: int | None = None) -> None:
        current = self.item(item_id)
        current.end = at
        self.items.append(ItemTruth(item_id, price_id or current.price_id,
                                    current.quantity if quantity is None else quantity, at))


@dataclass
class Truth:
    """Every subscription the generator made, per customer."""

    subscriptions: list[SubscriptionTruth] = field(default_factory=list)

    def of(self, customer_id: str) -> list[SubscriptionTruth]:
        return [s for s in self.subscriptions if s.customer_id == customer_id]

    def instants(self, customer_id: str) -> set[int]:
        """Every instant where the customer's MRR can change."""
        found: set[int] = set()
        for sub in self.of(customer_id):
            found.update((sub.start, sub.revenue_end))
            if sub.trial_end is not None:
                found.add(sub.trial_end)
            for item in sub.items:
                found.update((item.start, item.end))
            for disc in sub.discounts:
                found.update((disc.start, disc.end))
        return {t for t in found if t < END_OF_TIME}


MONTHS = {"month": Fraction(1), "year": Fraction(12)}


def mrr_at(truth: Truth, customer_id: str, at: int, prices: Mapping[str, Mapping[str, Any]],
           coupons: Mapping[str, Mapping[str, Any]]) -> dict[str, Fraction]:
    """The customer's MRR at ``at`` per currency (minor units, exact)."""
    result: dict[str, Fraction] = {}
    for sub in truth.of(customer_id):
        if not sub.start <= at < sub.revenue_end:
            continue
        if sub.trial_end is not None and at < sub.trial_end:
            continue
        # amount per interval, grouped by interval length
        groups: dict[Fraction, dict[str, Fraction]] = {}
        for item in sub.items:
            if item.start <= at < item.end:
                price = prices[item.price_id]
                months = MONTHS[price["recurring"]["interval"]] * price["recurring"]["interval_count"]
                amount = Fraction(price["unit_amount"]) * item.quantity
                groups.setdefault(months, {})[item.item_id] = amount
        for disc in sub.discounts:
            if not disc.start <= at < disc.end:
                continue
            coupon = coupons[disc.coupon_id]
            if coupon["duration"] == "once":
                continue
            for amounts in groups.values():
                if coupon["percent_off"] is not None:
                    factor = 1 - Fraction(Decimal(str(coupon["percent_off"]))) / 100
                    for key in amounts:
                        amounts[key] *= factor
                else:
                    total = sum(amounts.values(), Fraction(0))
                    if total <= 0:
                        continue
                    off = min(Fraction(coupon["amount_off"]), total)
                    for key in amounts:
                        amounts[key] -= off * amounts[key] / total
        value = sum((amount / months for months, amounts in groups.items()
                     for amount in amounts.values()), Fraction(0))
        if value:
            result[sub.currency] = result.get(sub.currency, Fraction(0)) + value
    return result


def rate_on(rates: Iterable[tuple[date, str, Decimal]], currency: str, day: date) -> Fraction:
    """The latest rate on or before ``day`` (the reporting currency is 1)."""
    if currency == "usd":
        return Fraction(1)
    table = sorted((d, r) for d, c, r in rates if c == currency)
    position = bisect_right([d for d, _ in table], day)
    assert position, f"no {currency} rate on or before {day}"
    return Fraction(table[position - 1][1])


def month_first_instant(month: str) -> int:
    year, mon = (int(p) for p in month.split("-"))
    return int(datetime(year, mon, 1, tzinfo=UTC).timestamp())


def next_month(month: str) -> str:
    year, mon = (int(p) for p in month.split("-"))
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"

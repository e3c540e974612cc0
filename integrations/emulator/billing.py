"""Stripe's billing rules, once, for every simulated history in the project.

The generated accounts (:mod:`integrations.emulator.generator`, used by the demo, the sync
tests and the benchmarks) and the tests' scripted world (``tests/stripe_world.py``) decide
*what* happens to a subscription and *when*; this module says *how Stripe bills it*:

- :func:`add_interval`: the next period boundary, calendar-aware on the billing anchor's
  day (Jan 31 -> Feb 28 -> Mar 31);
- :func:`amount_for`: what a price charges for a quantity over one whole period (per unit
  with ``unit_amount_decimal`` and ``transform_quantity``, graduated or volume tiers, a
  currency option's amounts);
- :func:`prorated`: each half of the proration pair of a mid-period
  change (a credit for the unused time on the old state, a charge for the remaining time
  on the new one);
- :func:`discount_applications`: which attached discounts a new invoice applies to which
  lines, in Stripe's order;
- :func:`apply_discounts`: discount amounts on an invoice's lines (item discounts, then the
  subscription's, then the customer's; a percentage of what is left of each line, an
  amount off in the invoice's currency once per invoice, shared among the lines in
  proportion to what is left of them);
- :func:`add_taxes`: a line's tax, computed on its amount after discounts: included in
  the amount for a tax-inclusive price, added on top for a tax-exclusive one;
- :func:`total_invoice`: an invoice's lines in no fixed order (as Stripe's, the credit half
  of a proration is not always first) and its totals.

Written from Stripe's documentation (``/work/shared/docs/stripe-api-notes.md``,
``revenue-definitions.md``), never from the product's code: a simulated amount must not
come from the code it is used to test.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, TypeVar

JSON = dict[str, Any]
_Line = TypeVar("_Line")

_DAY = 86_400


def add_interval(instant: int, interval: str, count: int = 1, *,
                 anchor_day: int | None = None) -> int:
    """``instant`` plus ``count`` billing intervals (``day``, ``week``, ``month`` or
    ``year``; ``count`` may be negative), months clamped to the month's end on the
    billing anchor's day (``anchor_day``, default the day of ``instant``)."""
    if interval == "day":
        return instant + _DAY * count
    if interval == "week":
        return instant + 7 * _DAY * count
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    months = count * (12 if interval == "year" else 1)
    moment = datetime.fromtimestamp(instant, tz=UTC)
    years, month0 = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + years, month0 + 1
    day = min(anchor_day or moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _half_even(value: Fraction) -> int:
    # Python's round() of a Fraction rounds half to even, as Stripe rounds minor units.
    return round(value)


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def amount_for(price: Mapping[str, Any], quantity: int | None, currency: str | None = None
               ) -> int:
    """What ``price`` charges for ``quantity`` over one whole period in ``currency`` (its
    ``currency_options`` when another currency), in minor units rounded half-even: per
    unit (``unit_amount_decimal``, after ``transform_quantity``) or tiered (graduated or
    volume, flat amounts included)."""
    qty = quantity or 0
    body: Mapping[str, Any] = price
    if currency and currency != price["currency"] and price.get("currency_options"):
        body = {**price, **price["currency_options"][currency]}
    transform = price.get("transform_quantity")
    if transform:
        whole, rest = divmod(qty, transform["divide_by"])
        qty = whole + (1 if rest and transform["round"] == "up" else 0)
    total = Decimal(0)
    if price.get("billing_scheme") == "tiered":
        tiers = body.get("tiers") or []
        if price.get("tiers_mode") == "volume":
            for t in tiers:
                if t["up_to"] in (None, "inf") or qty <= t["up_to"]:
                    total = _dec(t["unit_amount_decimal"]) * qty + _dec(t["flat_amount_decimal"])
                    break
        else:
            lower = 0
            for t in tiers:
                unbounded = t["up_to"] in (None, "inf")
                upper = qty if unbounded else min(qty, t["up_to"])
                if upper > lower:
                    total += (_dec(t["unit_amount_decimal"]) * (upper - lower)
                              + _dec(t["flat_amount_decimal"]))
                lower = upper if unbounded else t["up_to"]
                if lower >= qty:
                    break
    else:
        total = _dec(body.get("unit_amount_decimal")) * qty
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def prorated(full_period_amount: int, start: int, end: int, at: int) -> int:
    """The part of a whole period's amount for the time left at ``at`` in [start, end),
    rounded half-even (Stripe's proration of an unchanged rate)."""
    if end <= start:
        return 0
    return _half_even(full_period_amount * Fraction(end - at, end - start))


def _room(line: Mapping[str, Any]) -> int:
    """What is left of a line after the discounts already on it."""
    return int(line["amount"]) - sum(int(d["amount"]) for d in line["discount_amounts"])


def apply_discounts(applications: Iterable[tuple[Mapping[str, Any], Mapping[str, Any],
                                                 Sequence[JSON], bool]],
                    *, currency: str) -> dict[str, int]:
    """Put discount amounts on invoice lines; returns the total taken off per discount id.

    ``applications`` are ``(discount, coupon, lines, line_level)`` in Stripe's order: each
    item's own discounts (on that item's lines, ``line_level``: listed in the lines'
    ``discounts``), then the subscription's, then the customer's (on every line; the
    caller lists them in the invoice's ``discounts``). Only discountable lines with
    something left are discounted. A
    ``percent_off`` coupon takes its percentage of what is left of each line (half-even);
    an ``amount_off`` coupon applies once to the invoice, only in its own currency, shared
    among the lines in proportion to what is left of them (largest remainders get the odd
    minor units) and never more than is left.
    """
    totals: dict[str, int] = {}
    for disc, coupon, lines, line_level in applications:
        targets = [line for line in lines if line.get("discountable", True) and _room(line) > 0]
        if line_level:
            for line in targets:
                if disc["id"] not in line["discounts"]:
                    line["discounts"].append(disc["id"])
        if not targets:
            continue
        offs: list[int]
        if coupon.get("percent_off") is not None:
            percent = Fraction(str(coupon["percent_off"]))
            offs = [min(_room(line), _half_even(_room(line) * percent / 100))
                    for line in targets]
        else:
            if (coupon.get("currency") or currency) != currency:
                continue
            rooms = [_room(line) for line in targets]
            budget = min(int(coupon.get("amount_off") or 0), sum(rooms))
            shares = [Fraction(budget * room, sum(rooms)) for room in rooms]
            offs = [int(share) for share in shares]
            by_remainder = sorted(range(len(targets)),
                                  key=lambda i: (-(shares[i] - offs[i]), i))
            for i in by_remainder[: budget - sum(offs)]:
                offs[i] += 1
        for line, off in zip(targets, offs, strict=True):
            if off <= 0:
                continue
            line["discount_amounts"].append({"amount": off, "discount": disc["id"]})
            totals[disc["id"]] = totals.get(disc["id"], 0) + off
    return totals


Application = tuple[Mapping[str, Any], Mapping[str, Any], list[JSON], bool]


def discount_applications(lines: Sequence[JSON], *, at: int,
                          item_discounts: Mapping[str, Sequence[str]],
                          subscription_discounts: Sequence[str],
                          customer_discounts: Sequence[str],
                          discounts: Mapping[str, Mapping[str, Any]],
                          coupons: Mapping[str, Mapping[str, Any]],
                          used_once: Container[str] = ()) -> list[Application]:
    """Which attached discounts a new invoice made at ``at`` applies to which of its
    ``lines``, in Stripe's order, for :func:`apply_discounts`: each item's own discounts
    (``item_discounts`` by subscription item id) on that item's lines, then the
    subscription's, then the customer's, on every line of the subscription; each list in
    its attached order. A discount applies while it is in force (``start <= at < end``); a
    ``once`` discount no more once it has taken something off (``used_once``). Lines that
    are not discountable (proration lines) are left alone by :func:`apply_discounts`."""
    def in_force(ids: Sequence[str]) -> list[Mapping[str, Any]]:
        found = []
        for did in ids:
            body = discounts[did]
            if did in used_once and coupons[body["source"]["coupon"]]["duration"] == "once":
                continue
            if body["start"] <= at and (body["end"] is None or at < body["end"]):
                found.append(body)
        return found

    item_lines: dict[str, list[JSON]] = {}
    sub_lines: list[JSON] = []
    for line in lines:
        details = (line.get("parent") or {}).get("subscription_item_details")
        if details is None:
            continue
        sub_lines.append(line)
        item_lines.setdefault(details["subscription_item"], []).append(line)
    applications: list[Application] = []
    for item_id, own in item_lines.items():
        applications.extend((body, coupons[body["source"]["coupon"]], own, True)
                            for body in in_force(item_discounts.get(item_id, ())))
    for ids in (subscription_discounts, customer_discounts):
        applications.extend((body, coupons[body["source"]["coupon"]], sub_lines, False)
                            for body in in_force(ids))
    return applications


def discount_and_tax(lines: Sequence[JSON], applications: Iterable[Application], *,
                     currency: str, tax_percent: Mapping[str, Decimal],
                     prices: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """A new invoice's lines discounted (:func:`apply_discounts`) then taxed
    (:func:`add_taxes`); returns the total taken off per discount id."""
    totals = apply_discounts(applications, currency=currency)
    add_taxes(lines, tax_percent, prices)
    return totals


def inclusive_tax(discounted_amount: int, percent: Decimal | int) -> JSON:
    """A line's ``taxes[]`` entry for a tax-inclusive price, as Stripe computes it: the tax
    is included in what is charged after discounts, so it is taken out of the line's
    amount minus its discount amounts (not out of the amount before discounts)."""
    taxable = (Decimal(discounted_amount) / (1 + Decimal(percent) / 100)).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN)
    return {"amount": discounted_amount - int(taxable), "tax_behavior": "inclusive",
            "taxable_amount": int(taxable), "type": "tax_rate_details",
            "tax_rate_details": {"tax_rate": "txr_vat"}, "taxability_reason": "standard_rated"}


def exclusive_tax(discounted_amount: int, percent: Decimal | int) -> JSON:
    """A line's ``taxes[]`` entry for a tax-exclusive price: the tax is added on top of what
    is charged after discounts (the line's ``amount`` does not hold it; the invoice's
    ``total`` does)."""
    tax = (Decimal(discounted_amount) * Decimal(percent) / 100).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN)
    return {"amount": int(tax), "tax_behavior": "exclusive", "taxable_amount": discounted_amount,
            "type": "tax_rate_details", "tax_rate_details": {"tax_rate": "txr_sales"},
            "taxability_reason": "standard_rated"}


def add_taxes(lines: Iterable[JSON], percent_by_price: Mapping[str, Decimal],
              prices: Mapping[str, Mapping[str, Any]]) -> None:
    """Give every line of a price with a known tax rate its tax, inclusive or exclusive as
    the price says (``unspecified`` is not taxed), computed on the line's amount after its
    discounts (so call this after :func:`apply_discounts`). Proration credits get a
    negative tax, as Stripe gives them."""
    for line in lines:
        pricing = line.get("pricing") or {}
        price_id = (pricing.get("price_details") or {}).get("price")
        if not isinstance(price_id, str) or line["amount"] == 0:
            continue
        percent = percent_by_price.get(price_id)
        behavior = (prices.get(price_id) or {}).get("tax_behavior")
        if percent is None or behavior not in ("inclusive", "exclusive"):
            continue
        compute = inclusive_tax if behavior == "inclusive" else exclusive_tax
        line["taxes"] = [compute(_room(line), percent)]


def in_no_order(lines: Sequence[_Line], rng: random.Random) -> list[_Line]:
    """An invoice's lines in a seeded random order: Stripe's lines carry no order (the
    credit half of a proration is not always first)."""
    return rng.sample(list(lines), len(lines)) if len(lines) > 1 else list(lines)


def total_invoice(invoice: JSON, lines: Sequence[JSON], discount_totals: Mapping[str, int]
                  ) -> None:
    """Set ``invoice``'s lines' ``invoice`` and its totals from ``lines`` (already
    discounted and taxed): ``subtotal`` (the lines' amounts, before discounts),
    ``total`` (after discounts, with exclusive taxes added; inclusive ones are in the
    amounts already), ``total_excluding_tax``, ``total_taxes``,
    ``total_discount_amounts`` and what is due."""
    for line in lines:
        line["invoice"] = invoice["id"]
    subtotal = sum(int(line["amount"]) for line in lines)
    discounted = subtotal - sum(discount_totals.values())
    taxes = [tax for line in lines for tax in line["taxes"]]
    inclusive = sum(int(t["amount"]) for t in taxes if t.get("tax_behavior") == "inclusive")
    exclusive = sum(int(t["amount"]) for t in taxes if t.get("tax_behavior") == "exclusive")
    total = discounted + exclusive
    invoice.update(
        subtotal=subtotal, subtotal_excluding_tax=subtotal - inclusive, total=total,
        total_excluding_tax=discounted - inclusive,
        total_taxes=[dict(tax) for tax in taxes],
        total_discount_amounts=[{"amount": v, "discount": k} for k, v in discount_totals.items()],
        amount_due=max(total, 0), amount_remaining=max(total, 0))

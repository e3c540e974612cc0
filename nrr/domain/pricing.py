"""MRR of subscription items at one state, exactly (docs: "MRR of one subscription item").

All arithmetic is in :class:`Fraction` of minor units; callers round once with
:func:`nrr.domain.money.to_micro`.

- months per interval = ``interval_count`` x (month 1, year 12, week 12/52, day 12/365).
- per_unit: ``unit_amount_decimal`` x quantity, ``transform_quantity`` applied first
  (divide_by, then round up or down).
- tiered graduated: each tier charges its units plus its flat amount when any unit falls
  in it; volume: every unit at the tier holding the quantity plus that tier's flat amount.
  A quantity of 0 charges nothing (no unit falls in any tier).
- a subscription currency other than the price's uses ``currency_options[currency]``; a
  missing option makes the item unpriceable (:class:`PricingError`).
- metered (``usage_type=metered``): policy ``exclude`` -> 0; ``invoiced`` -> the amount
  invoiced for the last closed usage period (after discounts, without inclusive tax),
  given by the caller.
- tax-inclusive prices: Stripe computes the tax on the amount after discounts, so the tax
  part is taken out last: MRR = discounted amount x ``net_share`` (the part of a line's
  amount after discounts that is not tax, i.e. 1 / (1 + rate)), read from the invoice
  lines' inclusive taxes; when unknown nothing can be taken out.
- discounts (policy ``discounts``): per billing interval, item discounts first in their
  listed order, then subscription discounts in listed order, then customer discounts.
  ``percent_off`` scales; ``amount_off`` comes off once per interval, never below zero; a
  subscription- or customer-level ``amount_off`` is shared among the items in proportion
  to their amounts at that point. Which discounts are in force at an instant (start, end,
  duration, policy) is decided by :func:`discount_in_force`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from nrr.domain.records import Coupon, Discount, Price, Tier

MONTHS_PER_UNIT: dict[str, Fraction] = {
    "month": Fraction(1),
    "year": Fraction(12),
    "week": Fraction(12, 52),
    "day": Fraction(12, 365),
}


class PricingError(ValueError):
    """The item cannot be priced (unknown interval, missing currency option, ...)."""


@lru_cache(maxsize=256)
def months_per_interval(interval: str | None, interval_count: int) -> Fraction:
    if interval not in MONTHS_PER_UNIT:
        raise PricingError(f"unknown recurring interval {interval!r}")
    if interval_count <= 0:
        raise PricingError(f"interval_count {interval_count} is not positive")
    return MONTHS_PER_UNIT[interval] * interval_count


@lru_cache(maxsize=4096)
def _decimal_fraction(value: Decimal) -> Fraction:
    return Fraction(value)


def _frac(value: Decimal | None) -> Fraction:
    return _decimal_fraction(value) if value is not None else Fraction(0)


def billed_quantity(price: Price, quantity: int | None) -> int:
    qty = quantity or 0
    transform = price.transform_quantity
    if transform is not None:
        whole, rest = divmod(qty, transform.divide_by)
        qty = whole + (1 if rest and transform.round == "up" else 0)
    return qty


def _tiered(tiers: Sequence[Tier], mode: str | None, qty: int) -> Fraction:
    if not tiers:
        raise PricingError("tiered price without tiers (list prices with expand[]=data.tiers)")
    if qty <= 0:
        return Fraction(0)
    if mode == "volume":
        for tier in tiers:
            if tier.up_to is None or qty <= tier.up_to:
                return _frac(tier.unit_amount_decimal) * qty + _frac(tier.flat_amount_decimal)
        raise PricingError(f"quantity {qty} is above the last tier")
    if mode not in (None, "graduated"):
        raise PricingError(f"unknown tiers_mode {mode!r}")
    total = Fraction(0)
    lower = 0
    for tier in tiers:
        upper = qty if tier.up_to is None else min(qty, tier.up_to)
        if upper > lower:
            total += _frac(tier.unit_amount_decimal) * (upper - lower) + _frac(tier.flat_amount_decimal)
        if tier.up_to is None or tier.up_to >= qty:
            return total
        lower = tier.up_to
    raise PricingError(f"quantity {qty} is above the last tier")


def tax_inclusive(price: Price, currency: str) -> bool:
    """Is the price tax-inclusive in ``currency`` (its currency option may say otherwise)?"""
    if currency != price.currency:
        option = price.currency_options.get(currency)
        if option is not None and option.tax_behavior:
            return option.tax_behavior == "inclusive"
    return price.tax_behavior == "inclusive"


def interval_amount(price: Price, quantity: int | None, currency: str) -> Fraction:
    """Recurring amount per billing interval in ``currency`` minor units, before discounts
    (tax included for tax-inclusive prices: it is taken out after discounts, see
    :class:`PricedItem`)."""
    unit = price.unit_amount_decimal
    tiers = price.tiers
    if currency != price.currency:
        option = price.currency_options.get(currency)
        if option is None:
            raise PricingError(f"price {price.id} is in {price.currency} and has no "
                               f"currency_options for {currency}")
        unit, tiers = option.unit_amount_decimal, option.tiers
        if price.billing_scheme == "tiered" and not tiers:
            raise PricingError(f"price {price.id} has no tiers for {currency} in currency_options "
                               f"(expand currency_options.{currency}.tiers)")
    qty = billed_quantity(price, quantity)
    if price.billing_scheme == "tiered":
        amount = _tiered(tiers, price.tiers_mode, qty)
    elif price.billing_scheme == "per_unit":
        if unit is None:
            raise PricingError(f"per_unit price {price.id} has no unit_amount_decimal")
        amount = _frac(unit) * qty
    else:
        raise PricingError(f"unknown billing_scheme {price.billing_scheme!r}")
    return amount


@dataclass(frozen=True, slots=True)
class PricedItem:
    """One item at one state, ready for discounts: ``amount`` per interval of ``months``.

    ``net_share``: for a tax-inclusive price, the part of the amount after discounts that
    is not tax (1 / (1 + rate)); applied after every discount, as Stripe taxes the
    discounted amount. None: nothing to take out.
    """

    item_id: str
    amount: Fraction
    months: Fraction
    net_share: Fraction | None = None


def discount_in_force(discount: Discount, coupon: Coupon, at: int, policy: str,
                      *, interval_end: int | None = None) -> bool:
    """Does ``discount`` reduce MRR at ``at`` under policy ``discounts``?

    ``recurring``: forever always, repeating from start until end (start +
    duration_in_months when ``end`` is missing is the caller's job: ``Discount.end``), once
    never. ``all``: as recurring, and once over the first billing period after its start
    (``interval_end`` = end of that period). ``none``: never. A removal (``removed_at``)
    ends any discount. A discount's ``start`` and ``end`` win over invoice periods.
    """
    if policy == "none":
        return False
    start = discount.start if discount.start is not None else -(2**62)
    if at < start:
        return False
    if discount.removed_at is not None and at >= discount.removed_at:
        return False
    if coupon.duration == "once":
        return policy == "all" and interval_end is not None and at < interval_end
    if discount.end is not None and at >= discount.end:
        return False
    return coupon.duration in ("forever", "repeating")


def coupon_amount_off(coupon: Coupon, currency: str) -> Fraction | None:
    if coupon.amount_off is None:
        return None
    if coupon.currency is None or coupon.currency == currency:
        return Fraction(coupon.amount_off)
    if currency in coupon.amount_off_by_currency:
        return Fraction(coupon.amount_off_by_currency[currency])
    return Fraction(0)  # an amount coupon in another currency cannot apply


def _apply_one(amounts: dict[str, Fraction], coupon: Coupon, currency: str) -> None:
    """Apply one coupon to the items in ``amounts`` (shared in proportion for amount_off)."""
    if coupon.percent_off is not None:
        factor = 1 - Fraction(coupon.percent_off) / 100
        for key in amounts:
            amounts[key] = max(Fraction(0), amounts[key] * factor)
        return
    off = coupon_amount_off(coupon, currency)
    if not off:
        return
    total = sum(amounts.values(), Fraction(0))
    if total <= 0:
        return
    taken = min(off, total)
    for key in amounts:
        amounts[key] = max(Fraction(0), amounts[key] - taken * amounts[key] / total)


def discounted_mrr(items: Sequence[PricedItem], currency: str,
                   item_coupons: Mapping[str, Sequence[Coupon]],
                   subscription_coupons: Sequence[Coupon],
                   customer_coupons: Sequence[Coupon] = ()) -> dict[str, Fraction]:
    """MRR per item id (minor units, exact) after discounts, for the coupons in force.

    Discounts work per billing interval (an amount_off comes off once per interval), so
    items are grouped by interval length before subscription/customer discounts share.
    """
    if not subscription_coupons and not customer_coupons and not any(item_coupons.values()):
        return {item.item_id: _net(item, item.amount) / item.months for item in items}
    amounts: dict[str, Fraction] = {}
    for item in items:
        value = item.amount
        single = {item.item_id: value}
        for coupon in item_coupons.get(item.item_id, ()):
            _apply_one(single, coupon, currency)
        amounts[item.item_id] = single[item.item_id]
    by_months: dict[Fraction, dict[str, Fraction]] = {}
    for item in items:
        by_months.setdefault(item.months, {})[item.item_id] = amounts[item.item_id]
    by_id = {item.item_id: item for item in items}
    result: dict[str, Fraction] = {}
    for months, group in by_months.items():
        for coupon in [*subscription_coupons, *customer_coupons]:
            _apply_one(group, coupon, currency)
        for key, value in group.items():
            result[key] = _net(by_id[key], value) / months
    return result


def _net(item: PricedItem, discounted: Fraction) -> Fraction:
    """The discounted amount without its inclusive tax."""
    return discounted if item.net_share is None else discounted * item.net_share


def item_mrr(price: Price, quantity: int | None, currency: str, *, coupons: Sequence[Coupon] = (),
             net_share: Fraction | None = None) -> Fraction:
    """MRR of a single licensed item with its coupons (item discounts), exact minor units."""
    months = months_per_interval(price.interval, price.interval_count)
    amount = interval_amount(price, quantity, currency)
    item = PricedItem("item", amount, months, net_share if tax_inclusive(price, currency) else None)
    return discounted_mrr([item], currency, {"item": coupons}, ())["item"]

"""Item MRR rules: tiers, transform_quantity, currency_options, currencies, tax, metered."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from nrr.domain.history import customer_history
from nrr.services.fx import RateBook
from nrr.settings import Policies
from tests.normalise.conftest import facts, major, mrr
from tests.stripe_world import World, tier, ts

TIERS = [tier(5, unit_amount=1_000, flat_amount=500), tier(10, unit_amount=800),
         tier(None, unit_amount=500, flat_amount=300)]


def _subscribed(quantity: int | None, *, sub_currency: str | None = None, **price: object) -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_1", **price)  # type: ignore[arg-type]
    world.subscribe("cus_1", [("price_1", quantity)], at=ts(2025, 1, 1), currency=sub_currency)
    world.advance(ts(2025, 3, 1))
    return world


def test_graduated_tiers_charge_each_tier_plus_its_flat_amount() -> None:
    world = _subscribed(12, billing_scheme="tiered", tiers_mode="graduated", tiers=TIERS)
    # 5 x 10 + 5 flat, 5 x 8, 2 x 5 + 3 flat
    assert mrr(world, ts(2025, 1, 10)) == Decimal("108.00")


def test_volume_tiers_charge_every_unit_at_the_holding_tier() -> None:
    world = _subscribed(12, billing_scheme="tiered", tiers_mode="volume", tiers=TIERS)
    assert mrr(world, ts(2025, 1, 10)) == Decimal("63.00")  # 12 x 5 + 3 flat
    world = _subscribed(4, billing_scheme="tiered", tiers_mode="volume", tiers=TIERS)
    assert mrr(world, ts(2025, 1, 10)) == Decimal("45.00")  # 4 x 10 + 5 flat


def test_transform_quantity_divides_then_rounds_up() -> None:
    world = _subscribed(25, unit_amount=2_000, transform_quantity=(10, "up"))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(60)


def test_transform_quantity_divides_then_rounds_down() -> None:
    world = _subscribed(25, unit_amount=2_000, transform_quantity=(10, "down"))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(40)


def test_unit_amount_decimal_keeps_fractions_of_a_cent() -> None:
    world = _subscribed(3, unit_amount=None, unit_amount_decimal="33.3333")
    assert mrr(world, ts(2025, 1, 10)) == Decimal("0.999999")


def test_currency_options_price_the_subscription_currency() -> None:
    world = _subscribed(1, sub_currency="eur", unit_amount=10_000, currency_options={"eur": {"unit_amount": 9_000}})
    assert mrr(world, ts(2025, 1, 10), currency="eur") == Decimal(90)
    assert mrr(world, ts(2025, 1, 10), currency="usd") == Decimal(0)


def test_zero_decimal_currency_jpy() -> None:
    world = _subscribed(1, currency="jpy", unit_amount=12_000, interval="year")
    assert mrr(world, ts(2025, 1, 10), currency="jpy") == Decimal(1_000)  # 12,000 yen a year
    rates = RateBook.from_rows("usd", [(date(2024, 12, 31), "jpy", Decimal("0.0067"))])
    rows = facts(world, last_month="2025-01", rates=rates)
    assert major(rows["2025-01"].closing_mrr_micro) == Decimal("6.70")


def test_three_decimal_currency_kwd() -> None:
    world = _subscribed(1, currency="kwd", unit_amount=12_000, interval="year")
    # 12.000 KWD a year is 1.000 KWD a month (minor unit 1/1000).
    assert mrr(world, ts(2025, 1, 10), currency="kwd") == Decimal(1)
    rates = RateBook.from_rows("usd", [(date(2025, 1, 1), "kwd", Decimal("3.25"))])
    rows = facts(world, last_month="2025-01", rates=rates)
    assert major(rows["2025-01"].closing_mrr_micro) == Decimal("3.25")


def test_interval_count_two_years() -> None:
    world = _subscribed(1, unit_amount=240_000, interval="year", interval_count=2)
    assert mrr(world, ts(2025, 1, 10)) == Decimal(100)


def test_day_interval() -> None:
    world = _subscribed(1, unit_amount=100, interval="day")
    assert mrr(world, ts(2025, 1, 10)) == Decimal("30.41666667")  # 1.00 x 365 / 12


def test_tax_inclusive_price_takes_the_tax_out() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_1", unit_amount=12_000, tax_behavior="inclusive")
    world.inclusive_tax_percent["price_1"] = Decimal(20)
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 2, 1))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(100)


def test_tax_exclusive_price_is_mrr_as_is() -> None:
    world = _subscribed(1, unit_amount=12_000, tax_behavior="exclusive")
    assert mrr(world, ts(2025, 1, 10)) == Decimal(120)


def _metered() -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_base", unit_amount=2_000)
    world.add_price("price_api", unit_amount=10, usage_type="metered")
    sub = world.subscribe("cus_1", [("price_base", 1), ("price_api", None)], at=ts(2025, 1, 1))
    sub.record_usage(sub.item_ids[1], 500, at=ts(2025, 1, 20))
    sub.record_usage(sub.item_ids[1], 300, at=ts(2025, 2, 20))
    world.advance(ts(2025, 3, 15))
    return world


def test_metered_excluded_by_default() -> None:
    world = _metered()
    data = world.customer_data("cus_1")
    assert [it.quantity for it in data.subscriptions[0].items] == [1, None]
    assert mrr(world, ts(2025, 2, 10)) == Decimal(20)


def test_metered_invoiced_uses_last_closed_usage_period() -> None:
    world = _metered()
    assert mrr(world, ts(2025, 1, 25), metered="invoiced") == Decimal(20)  # nothing closed yet
    assert mrr(world, ts(2025, 2, 10), metered="invoiced") == Decimal(70)  # 20 + January: 500 x 0.10
    assert mrr(world, ts(2025, 3, 10), metered="invoiced") == Decimal(50)  # 20 + February: 300 x 0.10


def test_price_without_the_subscription_currency_is_skipped_with_the_reason() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_usd", unit_amount=1_000, currency_options={"eur": {"unit_amount": 900}})
    world.add_price("price_usd_only", unit_amount=2_000)
    sub = world.subscribe("cus_1", [("price_usd", 1)], at=ts(2025, 1, 1), currency="eur")
    world.advance(ts(2025, 2, 1))
    world.lives[sub.id].items[0].price_id = "price_usd_only"  # an account edited behind our back
    data = world.customer_data("cus_1")
    lines = tuple(replace(line, price_id="price_usd_only") for line in data.lines)
    result = customer_history(replace(data, lines=lines))
    assert result.points.get("eur", ()) == ()
    assert [s.reason for s in result.skips] == ["price price_usd_only is in usd and has no currency_options for eur"]


def test_metered_usage_is_not_a_ledger_change_when_excluded() -> None:
    world = _metered()
    result = customer_history(world.customer_data("cus_1"))
    assert [c.cause for c in result.ledger] == ["new_subscription", "new_subscription"]
    invoiced = customer_history(world.customer_data("cus_1"), Policies(metered="invoiced"))
    assert [c.cause for c in invoiced.ledger][2:] == ["price_change", "price_change"]


def _seats_with_inclusive_tax(*, seed: int, coupon: bool) -> World:
    """One seat of 120.00 including 20 % tax from January 1st, two from January 16th; the
    proration lines carry their taxes, the credit a negative one, as Stripe's do."""
    world = World(seed=seed)
    world.add_customer("cus_1")
    world.add_price("price_1", unit_amount=12_000, tax_behavior="inclusive")
    world.tax_percent["price_1"] = Decimal(20)
    if coupon:
        world.add_coupon("co_half", percent_off=50, duration="forever")
    sub = world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1),
                          coupons=["co_half"] if coupon else [])
    sub.change_quantity(sub.item_ids[0], 2, at=ts(2025, 1, 16))
    world.advance(ts(2025, 3, 1))
    return world


@pytest.mark.parametrize("seed", range(3))
def test_tax_inclusive_seat_change_keeps_the_exact_net_share(seed: int) -> None:
    world = _seats_with_inclusive_tax(seed=seed, coupon=False)
    taxed = [line for inv in world.invoices for line in inv["lines"]["data"]
             if line["parent"]["subscription_item_details"]["proration"]]
    # 1 seat for 16 of 31 days: -6194 with -1032 tax; 2 seats: 12387 with 2065 tax, whose
    # share (10322 / 12387) would make 199.99.
    assert sorted((line["amount"], line["taxes"][0]["amount"]) for line in taxed) == [
        (-6_194, -1_032), (12_387, 2_065)]
    assert mrr(world, ts(2025, 1, 10)) == Decimal(100)  # 120 / 1.2
    assert mrr(world, ts(2025, 1, 20)) == Decimal(200)  # 2 x 120 / 1.2
    assert mrr(world, ts(2025, 2, 10)) == Decimal(200)


def test_tax_inclusive_seat_change_with_a_discount_keeps_the_exact_net_share() -> None:
    world = _seats_with_inclusive_tax(seed=0, coupon=True)
    assert mrr(world, ts(2025, 1, 10)) == Decimal(50)  # 120 x 50 % / 1.2
    assert mrr(world, ts(2025, 1, 20)) == Decimal(100)  # 2 x 120 x 50 % / 1.2


def test_tax_exclusive_taxes_are_not_mrr_nor_invoiced_usage() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_base", unit_amount=2_000, tax_behavior="exclusive")
    world.add_price("price_api", unit_amount=10, usage_type="metered", tax_behavior="exclusive")
    world.tax_percent.update(price_base=Decimal(20), price_api=Decimal(20))
    sub = world.subscribe("cus_1", [("price_base", 1), ("price_api", None)], at=ts(2025, 1, 1))
    sub.record_usage(sub.item_ids[1], 500, at=ts(2025, 1, 20))
    sub.change_quantity(sub.item_ids[0], 3, at=ts(2025, 1, 25))
    world.advance(ts(2025, 2, 15))
    # February's invoice: 3 x 20.00 + January's 500 x 0.10, each with 20 % on top.
    february = [inv for inv in world.invoices if inv["created"] == ts(2025, 2, 1)]
    assert [inv["total"] for inv in february] == [13_200]
    assert mrr(world, ts(2025, 1, 10)) == Decimal(20)
    assert mrr(world, ts(2025, 2, 10)) == Decimal(60)
    assert mrr(world, ts(2025, 2, 10), metered="invoiced") == Decimal(110)  # 60 + 50, no tax

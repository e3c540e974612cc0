"""Discount rules and the ``discounts`` policy (recurring / all / none)."""

from __future__ import annotations

from decimal import Decimal

from tests.normalise.conftest import history, mrr
from tests.stripe_world import World, ts


def _world() -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_100", unit_amount=10_000)
    world.add_price("price_60", unit_amount=6_000)
    world.add_price("price_40", unit_amount=4_000)
    world.add_price("price_50", unit_amount=5_000)
    return world


def test_percent_off_forever_scales_the_amount() -> None:
    world = _world()
    world.add_coupon("co", percent_off=25, duration="forever")
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 3, 5)) == Decimal(75)


def test_amount_off_never_below_zero_and_zero_is_not_paying() -> None:
    world = _world()
    world.add_coupon("co", amount_off=15_000, currency="usd", duration="forever")
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 2, 5)) == Decimal(0)
    assert history(world).points.get("usd", ()) == ()


def test_amount_off_is_per_billing_interval() -> None:
    world = _world()
    world.add_price("price_year", unit_amount=120_000, interval="year")
    world.add_coupon("co", amount_off=12_000, currency="usd", duration="forever")
    world.subscribe("cus_1", [("price_year", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 2, 5)) == Decimal(90)  # (1,200 - 120) / 12


def test_repeating_discount_lasts_duration_in_months() -> None:
    world = _world()
    world.add_coupon("co", percent_off=50, duration="repeating", duration_in_months=2)
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 15), coupons=["co"])
    world.advance(ts(2025, 6, 1))
    assert mrr(world, ts(2025, 3, 14, 23)) == Decimal(50)
    assert mrr(world, ts(2025, 3, 15)) == Decimal(100)  # the discount's end wins


def test_once_discount_never_changes_mrr_under_recurring() -> None:
    world = _world()
    world.add_coupon("co", percent_off=25, duration="once")
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 5)) == Decimal(100)


def test_once_discount_reduces_the_first_period_under_all() -> None:
    world = _world()
    world.add_coupon("co", percent_off=25, duration="once")
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 5), discounts="all") == Decimal(75)
    assert mrr(world, ts(2025, 2, 5), discounts="all") == Decimal(100)


def test_policy_none_ignores_discounts() -> None:
    world = _world()
    world.add_coupon("co", percent_off=25, duration="forever")
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 5), discounts="none") == Decimal(100)
    assert mrr(world, ts(2025, 1, 5), discounts="all") == Decimal(75)


def test_item_discounts_apply_before_subscription_discounts() -> None:
    world = _world()
    world.add_coupon("co_item", amount_off=1_000, currency="usd", duration="forever")
    world.add_coupon("co_sub", percent_off=50, duration="forever")
    sub = world.subscribe("cus_1", [("price_50", 1)], at=ts(2025, 1, 1), coupons=["co_sub"])
    sub.add_discount("co_item", at=ts(2025, 1, 1), item_id=sub.item_ids[0])
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 2, 5)) == Decimal(20)  # (50 - 10) x 50 %, not 50 x 50 % - 10


def test_subscription_amount_off_is_shared_in_proportion() -> None:
    world = _world()
    world.add_coupon("co", amount_off=2_000, currency="usd", duration="forever")
    world.subscribe("cus_1", [("price_60", 1), ("price_40", 1)], at=ts(2025, 1, 1), coupons=["co"])
    world.advance(ts(2025, 2, 1))
    result = history(world)
    assert mrr(world, ts(2025, 1, 5)) == Decimal(80)
    by_price = {i.price_id: i.mrr_micro for i in result.intervals}
    assert by_price == {"price_60": 48 * 100_000_000, "price_40": 32 * 100_000_000}


def test_customer_discounts_apply_after_subscription_discounts() -> None:
    world = _world()
    world.add_coupon("co_sub", amount_off=1_000, currency="usd", duration="forever")
    world.add_coupon("co_cus", percent_off=50, duration="forever")
    world.add_customer_discount("cus_1", "co_cus", at=ts(2025, 1, 1))
    world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co_sub"])
    world.advance(ts(2025, 2, 1))
    assert mrr(world, ts(2025, 1, 5)) == Decimal(45)  # (100 - 10) x 50 %


def test_discount_start_wins_over_invoice_periods() -> None:
    world = _world()
    world.add_coupon("co", percent_off=20, duration="forever")
    sub = world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1))
    sub.add_discount("co", at=ts(2025, 1, 20))
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 19)) == Decimal(100)
    assert mrr(world, ts(2025, 1, 20)) == Decimal(80)
    causes = [c.cause for c in history(world).ledger]
    assert causes == ["new_subscription", "discount_start"]


def test_removed_discount_seen_stops_at_the_removal_event() -> None:
    world = _world()
    world.add_coupon("co", percent_off=20, duration="forever")
    sub = world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    sub.remove_discount(sub.discount_ids[0], at=ts(2025, 2, 10), seen=True)
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 2, 9)) == Decimal(80)
    assert mrr(world, ts(2025, 2, 10)) == Decimal(100)
    end = [c for c in history(world).ledger if c.cause == "discount_end"]
    assert end and end[0].effective_at == ts(2025, 2, 10)


def test_removed_discount_unseen_stops_at_first_cycle_invoice_without_it() -> None:
    world = _world()
    world.add_coupon("co", percent_off=20, duration="forever")
    sub = world.subscribe("cus_1", [("price_100", 1)], at=ts(2025, 1, 1), coupons=["co"])
    sub.remove_discount(sub.discount_ids[0], at=ts(2025, 2, 10))
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 2, 20)) == Decimal(80)
    assert mrr(world, ts(2025, 3, 1)) == Decimal(100)

"""The normalisation examples of the definitions page, from Stripe-shaped objects."""

from __future__ import annotations

from decimal import Decimal

from tests.normalise.conftest import facts, major, mrr
from tests.stripe_world import World, ts


def _world(**price: object) -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_1", **price)  # type: ignore[arg-type]
    return world


def test_1200_a_year_is_100_a_month() -> None:
    world = _world(unit_amount=120_000, interval="year")
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 2, 1)) == Decimal(100)


def test_90_every_3_months_is_30() -> None:
    world = _world(unit_amount=9_000, interval="month", interval_count=3)
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 8, 1))
    assert mrr(world, ts(2025, 2, 1)) == Decimal(30)
    assert mrr(world, ts(2025, 7, 15)) == Decimal(30)


def test_10_a_week_is_43_33() -> None:
    world = _world(unit_amount=1_000, interval="week")
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 2, 1))
    value = mrr(world, ts(2025, 1, 20))
    # 10 x 52 / 12 = 43.333... kept to the micro-cent, shown as 43.33.
    assert value == Decimal("43.33333333")
    assert value.quantize(Decimal("0.01")) == Decimal("43.33")


def test_5_seats_at_12_is_60() -> None:
    world = _world(unit_amount=1_200)
    world.subscribe("cus_1", [("price_1", 5)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 2, 1))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(60)


def test_20_percent_off_forever_on_100_is_80() -> None:
    world = _world(unit_amount=10_000)
    world.add_coupon("co_20", percent_off=20, duration="forever")
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1), coupons=["co_20"])
    world.advance(ts(2025, 6, 1))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(80)
    assert mrr(world, ts(2025, 5, 10)) == Decimal(80)


def test_10_off_for_3_months_on_50_then_expansion_of_10() -> None:
    world = _world(unit_amount=5_000)
    world.add_coupon("co_10", amount_off=1_000, currency="usd", duration="repeating", duration_in_months=3)
    world.subscribe("cus_1", [("price_1", 1)], at=ts(2025, 1, 1), coupons=["co_10"])
    world.advance(ts(2025, 6, 1))
    for month in (1, 2, 3):
        assert mrr(world, ts(2025, month, 10)) == Decimal(40)
    assert mrr(world, ts(2025, 4, 10)) == Decimal(50)
    rows = facts(world, last_month="2025-05")
    assert rows["2025-01"].movement == "new" and major(rows["2025-01"].movement_micro) == 40
    assert rows["2025-02"].movement is None and rows["2025-03"].movement is None
    # The discount ends at 2025-04-01 00:00, which belongs to April.
    assert rows["2025-04"].movement == "expansion"
    assert major(rows["2025-04"].movement_micro) == Decimal(10)
    assert major(rows["2025-04"].closing_mrr_micro) == Decimal(50)

"""The recompute's reading of the mirror matches the domain's reading of the Stripe objects."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from nrr.domain.history import select_state_lines
from nrr.services.recompute import load_catalogue, load_chunk
from tests.recompute.conftest import store_world
from tests.stripe_world import World, ts


def build_world() -> World:
    world = World()
    world.add_customer("cus_a", country="DE")
    world.add_customer("cus_b")
    world.add_price("price_seat", unit_amount=1_200)
    world.add_price("price_pro", unit_amount=4_900)
    world.add_coupon("co_20", percent_off=20, duration="repeating", duration_in_months=3)
    first = world.subscribe("cus_a", [("price_seat", 5)], at=ts(2025, 1, 10), coupons=["co_20"])
    first.change_quantity(first.item_ids[0], 8, at=ts(2025, 3, 15))
    first.change_price(first.item_ids[0], "price_pro", at=ts(2025, 6, 2))
    first.cancel_at_period_end(at=ts(2025, 8, 20))
    world.subscribe("cus_b", [("price_seat", 2)], at=ts(2025, 2, 1))
    world.advance(ts(2025, 11, 5))
    return world


def test_loaded_records_equal_the_domain_parse_of_the_objects(session: Session) -> None:
    world = build_world()
    store_world(session, world)
    catalogue = load_catalogue(session, livemode=False)
    data, lines_read = load_chunk(session, ["cus_a", "cus_b"], catalogue, livemode=False)
    for cid in ("cus_a", "cus_b"):
        expected = world.customer_data(cid)
        got = data[cid]
        assert got.customer == expected.customer
        assert [replace(s, state_at=None) for s in got.subscriptions] == \
               [replace(s, state_at=None) for s in expected.subscriptions]
        for did, discount in expected.discounts.items():
            assert got.discounts[did] == discount
        # The SQL selection is the domain's select_state_lines, line for line.
        expected_lines = {line.id: line for line in select_state_lines(expected.lines)}
        assert got.lines, "no state lines read"
        assert {line.id: line for line in got.lines} == expected_lines
        assert set(got.prices) >= {p for p in expected.prices}
    assert lines_read == sum(len(d.lines) for d in data.values())


def test_repeated_cycle_lines_are_not_read(session: Session) -> None:
    world = World()
    world.add_customer("cus_a")
    world.add_price("price_seat", unit_amount=1_000)
    world.subscribe("cus_a", [("price_seat", 3)], at=ts(2024, 1, 1))
    world.advance(ts(2025, 12, 15))
    store_world(session, world)
    catalogue = load_catalogue(session, livemode=False)
    data, _ = load_chunk(session, ["cus_a"], catalogue, livemode=False)
    all_lines = world.customer_data("cus_a").lines
    assert len(all_lines) == 24
    kept = sorted((line.period_start, line.quantity) for line in data["cus_a"].lines)
    starts = sorted(line.period_start for line in all_lines)
    # The first and the last cycle line say everything a constant state needs (lines come
    # in no particular order: ids carry none).
    assert kept == [(starts[0], 3), (starts[-1], 3)]


def test_other_mode_objects_are_left_out(session: Session) -> None:
    world = build_world()
    live = World(livemode=True)
    live.add_customer("cus_live")
    live.add_price("price_live", unit_amount=500)
    live.subscribe("cus_live", [("price_live", 1)], at=ts(2025, 1, 1))
    live.advance(ts(2025, 3, 1))
    store_world(session, world)
    store_world(session, live)
    catalogue = load_catalogue(session, livemode=False)
    assert "price_live" not in catalogue.prices
    data, _ = load_chunk(session, ["cus_live"], catalogue, livemode=False)
    assert data["cus_live"].subscriptions == () and data["cus_live"].lines == ()

"""The state-line selection contract (history module docstring) and changes without proration."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from nrr.domain.history import customer_history, select_state_lines
from nrr.domain.records import InvoiceLine
from nrr.settings import Policies
from tests.normalise.conftest import history, mrr
from tests.stripe_world import World, ts


def _line(lid: str, start: int, end: int, *, price: str = "p", quantity: int | None = 1, status: str = "paid",
          proration: bool = False, amount: int = 100) -> InvoiceLine:
    return InvoiceLine(id=lid, invoice_id=f"in_{lid}", invoice_status=status, customer_id="cus_1",
                       subscription_id="sub_1", subscription_item_id="si_1", price_id=price, quantity=quantity,
                       period_start=start, period_end=end, amount=amount, currency="usd", proration=proration)


def test_selection_keeps_firsts_lasts_changes_gaps_and_prorations() -> None:
    lines = [
        _line("a", 0, 10), _line("b", 10, 20), _line("c", 20, 30),          # run: a..c
        _line("d", 30, 40, quantity=2), _line("e", 40, 50, quantity=2),     # key change at d
        _line("f", 60, 70, quantity=2), _line("g", 70, 80, quantity=2),     # gap 50..60
        _line("h", 80, 90, quantity=2), _line("i", 90, 100, quantity=2, status="open"),
        _line("j", 100, 110, quantity=2, status="open"),
        _line("x", 35, 40, quantity=3, proration=True), _line("y", 35, 40, quantity=2, proration=True, amount=-5),
    ]
    kept = {line.id: line for line in select_state_lines(lines)}
    assert sorted(kept) == ["a", "c", "d", "e", "f", "h", "i", "j", "x", "y"]
    assert [kept[i].follows_gap for i in ("a", "c", "d", "e", "f", "h", "i", "j")] == [
        False, False, False, False, True, False, False, False]


def _busy_world() -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_a", unit_amount=2_000)
    world.add_price("price_b", unit_amount=5_000, product="prod_b")
    world.add_coupon("co", percent_off=10, duration="forever")
    sub = world.subscribe("cus_1", [("price_a", 2)], at=ts(2023, 1, 1))
    sub.change_quantity(sub.item_ids[0], 4, at=ts(2023, 6, 10))
    sub.add_discount("co", at=ts(2023, 9, 1))
    sub.pause(at=ts(2024, 1, 5))
    sub.resume(at=ts(2024, 3, 10))
    sub.change_price(sub.item_ids[0], "price_b", at=ts(2024, 7, 1))
    sub.remove_discount(sub.discount_ids[0], at=ts(2024, 11, 3))
    sub.fail_payments(at=ts(2025, 8, 3))
    world.advance(ts(2025, 12, 20))
    return world


def test_history_is_identical_from_all_lines_and_from_the_selection() -> None:
    world = _busy_world()
    data = world.customer_data("cus_1")
    selected = select_state_lines(data.lines)
    assert len(selected) < len(data.lines) / 2
    for policies in (Policies(), Policies(churn_at="request", discounts="all", past_due_churn_after_days=30)):
        full = customer_history(data, policies)
        subset = customer_history(replace(data, lines=tuple(selected)), policies)
        assert subset == full
        assert full.points["usd"]


def test_change_without_proration_seen_as_event_takes_effect_at_the_event() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_a", unit_amount=1_000)
    sub = world.subscribe("cus_1", [("price_a", 2)], at=ts(2025, 1, 1))
    sub.change_quantity(sub.item_ids[0], 5, at=ts(2025, 2, 12), prorate=False, seen=True)
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 2, 11)) == Decimal(20)
    assert mrr(world, ts(2025, 2, 12)) == Decimal(50)
    change = [c for c in history(world).ledger if c.cause == "seat_change"][0]
    assert change.stripe_ids.get("event", "").startswith("evt_")


def test_change_without_proration_unseen_takes_effect_at_the_first_cycle_line() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_a", unit_amount=1_000)
    sub = world.subscribe("cus_1", [("price_a", 2)], at=ts(2025, 1, 1))
    sub.change_quantity(sub.item_ids[0], 5, at=ts(2025, 2, 12), prorate=False)
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 2, 20)) == Decimal(20)
    assert mrr(world, ts(2025, 3, 1)) == Decimal(50)


def test_prorated_change_undone_without_proration_ends_with_its_period() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_a", unit_amount=1_000)
    sub = world.subscribe("cus_1", [("price_a", 5)], at=ts(2025, 1, 1))
    sub.change_quantity(sub.item_ids[0], 8, at=ts(2025, 2, 15))
    sub.change_quantity(sub.item_ids[0], 5, at=ts(2025, 2, 20), prorate=False)
    world.advance(ts(2025, 9, 1))
    data = world.customer_data("cus_1")
    full = customer_history(data)
    subset = customer_history(replace(data, lines=tuple(select_state_lines(data.lines))))
    assert subset == full
    assert mrr(world, ts(2025, 2, 20)) == Decimal(80)  # unseen: the invoices show 8 until March
    assert mrr(world, ts(2025, 3, 1)) == Decimal(50)


def test_prorated_change_in_the_current_period_stays() -> None:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_a", unit_amount=1_000)
    sub = world.subscribe("cus_1", [("price_a", 5)], at=ts(2025, 1, 1))
    sub.change_quantity(sub.item_ids[0], 8, at=ts(2025, 3, 15))
    world.advance(ts(2025, 3, 20))
    assert mrr(world, ts(2025, 4, 10)) == Decimal(80)

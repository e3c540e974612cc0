"""Acceptance: the worked examples from Stripe-shaped objects through the real pipeline.

tests.stripe_world.World -> integrations.stripe_mirror.store_objects ->
nrr.services.recompute.recompute -> ``nrr report --format json``, on SQLite and PostgreSQL.
Customers pay for a $1.00-a-month seat price, so a quantity is its MRR in dollars.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import nrr.domain.movements  # noqa: F401  (an import error fails this file, never skips it)
import nrr.services.recompute  # noqa: F401
from tests.report.conftest import CliResult
from tests.stripe_world import World, ts

NOW = ts(2026, 4, 2)
MONTH = "2026-03"

# (opening, expansion, contraction, churn, NRR, GRR) from docs/revenue-definitions.md.
MONTHLY_EXAMPLES = [
    (50_000, 8_000, 2_000, 3_000, 106.0, 90.0),
    (100_000, 15_000, 3_000, 5_000, 107.0, 92.0),
    (5_000, 400, 150, 300, 99.0, 91.0),
    (100, 20, 0, 10, 110.0, 90.0),
    (100, 15, 0, 20, 95.0, 80.0),
]


def seat_world() -> World:
    world = World()
    world.add_price("price_seat", unit_amount=100, product="prod_seats")
    return world


def example_world(opening: int, expansion: int, contraction: int, churn: int) -> World:
    """Cohort members paying since January whose March changes are the example's."""
    world = seat_world()
    grow, shrink = max(expansion, 1), 2 * contraction
    steady = opening - grow - shrink - churn
    members = [("cus_grow", grow), ("cus_shrink", shrink), ("cus_leave", churn),
               ("cus_steady", steady)]
    for cid, _seats in members:
        world.add_customer(cid)
    world.add_customer("cus_back")
    world.add_customer("cus_new")
    subs: dict[str, Any] = {}
    back = world.subscribe("cus_back", [("price_seat", 333)], at=ts(2025, 10, 1))
    back.cancel_now(at=ts(2025, 12, 10))
    for day, (cid, seats) in enumerate(members, start=10):
        if seats:
            subs[cid] = world.subscribe(cid, [("price_seat", seats)], at=ts(2026, 1, day))
    world.subscribe("cus_new", [("price_seat", 777)], at=ts(2026, 3, 5))
    world.subscribe("cus_back", [("price_seat", 333)], at=ts(2026, 3, 8))
    if expansion:
        subs["cus_grow"].change_quantity(subs["cus_grow"].item_ids[0], grow + expansion,
                                         at=ts(2026, 3, 15))
    if contraction:
        subs["cus_shrink"].change_quantity(subs["cus_shrink"].item_ids[0], shrink - contraction,
                                           at=ts(2026, 3, 16))
    if churn:
        subs["cus_leave"].cancel_now(at=ts(2026, 3, 20))
    return world


@pytest.mark.parametrize(("opening", "expansion", "contraction", "churn", "nrr", "grr"),
                         MONTHLY_EXAMPLES)
def test_monthly_worked_examples_from_stripe_objects(
        load_world: Callable[..., Any], run_cli: Callable[..., CliResult], opening: int,
        expansion: int, contraction: int, churn: int, nrr: float, grr: float) -> None:
    load_world(example_world(opening, expansion, contraction, churn), now=NOW)
    result = run_cli("report", "--month", MONTH, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["opening_mrr"], report["expansion"], report["contraction"],
            report["churn"]) == (opening, expansion, contraction, churn)
    assert report["new"] == 777 and report["reactivation"] == 333
    assert report["customers"]["new"] == 1 and report["customers"]["reactivated"] == 1
    assert report["nrr"] == nrr and report["grr"] == grr


def plans_world() -> World:
    """2,400 of 19 and 49 plans: five 19 -> 49 upgrades, two 49 -> 19, three 19s leave."""
    world = World()
    world.add_price("price_19", unit_amount=1_900, product="prod_starter")
    world.add_price("price_49", unit_amount=4_900, product="prod_team")
    plan = {}
    for n in range(5):
        plan[f"cus_up{n}"] = "price_19"
    for n in range(2):
        plan[f"cus_down{n}"] = "price_49"
    for n in range(3):
        plan[f"cus_leave{n}"] = "price_19"
    for n in range(40):
        plan[f"cus_big{n:02d}"] = "price_49"
    for n in range(10):
        plan[f"cus_small{n}"] = "price_19"
    subs = {}
    for cid, price_id in plan.items():
        world.add_customer(cid)
        subs[cid] = world.subscribe(cid, [(price_id, 1)], at=ts(2026, 1, 12))
    for n in range(5):
        sub = subs[f"cus_up{n}"]
        sub.change_price(sub.item_ids[0], "price_49", at=ts(2026, 3, 10 + n))
    for n in range(2):
        sub = subs[f"cus_down{n}"]
        sub.change_price(sub.item_ids[0], "price_19", at=ts(2026, 3, 16 + n))
    for n in range(3):
        subs[f"cus_leave{n}"].cancel_now(at=ts(2026, 3, 20 + n))
    return world


def test_plan_changes_example_and_opening_segments(load_world: Callable[..., Any],
                                                   run_cli: Callable[..., CliResult]) -> None:
    load_world(plans_world(), now=NOW)
    report = run_cli("report", "--month", MONTH, "--format", "json").json()
    assert (report["opening_mrr"], report["expansion"], report["contraction"],
            report["churn"]) == (2_400, 150, 60, 57)
    assert report["nrr"] == 101.375 and report["grr"] == 95.125
    assert report["band"] == "good"
    # Customers switching plans mid-month stay in the plan they had at the opening.
    by_plan = run_cli("report", "--month", MONTH, "--by", "plan", "--format", "json").json()
    segments = sorted(by_plan["segments"], key=lambda s: s["opening_mrr"])
    assert len(segments) == 2
    starter, team = segments
    assert (starter["opening_mrr"], starter["expansion"], starter["contraction"],
            starter["churn"]) == (19 * 18, 150, 0, 57)
    assert (team["opening_mrr"], team["expansion"], team["contraction"],
            team["churn"]) == (49 * 42, 0, 60, 0)
    for key in ("opening_mrr", "expansion", "contraction", "churn", "closing_mrr"):
        assert round(starter[key] + team[key], 2) == report[key]
    assert starter["customers"]["opening"] + team["customers"]["opening"] == 60
    # `nrr customer` explains an upgrade with its ledger cause and Stripe ids.
    upgraded = run_cli("customer", "cus_up0", "--format", "json").json()
    march = next(h for h in upgraded["history"] if h["month"] == MONTH)
    assert (march["movement"], march["amount"]) == ("expansion", 30)
    assert "plan_change" in march["causes"]
    change = next(e for e in upgraded["ledger"] if e["cause"] == "plan_change")
    assert change["subscription_id"] and change["stripe_ids"]


def test_twelve_month_example_from_stripe_objects(load_world: Callable[..., Any],
                                                  run_cli: Callable[..., CliResult]) -> None:
    """100,000 paying at the opening of 2025-04; by March 2026 +15,000 -5,000 -8,000."""
    world = seat_world()
    for cid in ("cus_a", "cus_b", "cus_c", "cus_d", "cus_late"):
        world.add_customer(cid)
    a = world.subscribe("cus_a", [("price_seat", 40_000)], at=ts(2025, 3, 5))
    b = world.subscribe("cus_b", [("price_seat", 20_000)], at=ts(2025, 3, 6))
    c = world.subscribe("cus_c", [("price_seat", 8_000)], at=ts(2025, 3, 7))
    world.subscribe("cus_d", [("price_seat", 32_000)], at=ts(2025, 3, 8))
    world.subscribe("cus_late", [("price_seat", 5_000)], at=ts(2025, 6, 3))
    c.cancel_now(at=ts(2025, 7, 10))
    a.change_quantity(a.item_ids[0], 60_000, at=ts(2025, 9, 10))
    b.change_quantity(b.item_ids[0], 15_000, at=ts(2025, 11, 10))
    a.change_quantity(a.item_ids[0], 55_000, at=ts(2026, 2, 10))
    load_world(world, now=NOW)
    report = run_cli("report", "--month", MONTH, "--period", "t12m", "--format", "json").json()
    assert report["cohort_opening_mrr"] == 100_000
    assert report["cohort_closing_mrr"] == 102_000
    assert (report["expansion"], report["contraction"], report["churn"]) == (15_000, 5_000, 8_000)
    assert report["nrr"] == 102.0 and report["grr"] == 87.0
    # The monthly report of the same month only sees March's own cohort.
    monthly = run_cli("report", "--month", MONTH, "--format", "json").json()
    assert monthly["opening_mrr"] == 55_000 + 15_000 + 32_000 + 5_000
    assert monthly["nrr"] == 100.0


def test_t12m_member_who_left_and_came_back(load_world: Callable[..., Any],
                                            run_cli: Callable[..., CliResult]) -> None:
    world = seat_world()
    world.add_customer("cus_stay")
    world.add_customer("cus_return")
    world.subscribe("cus_stay", [("price_seat", 100)], at=ts(2025, 2, 3))
    first = world.subscribe("cus_return", [("price_seat", 100)], at=ts(2025, 2, 4))
    first.cancel_now(at=ts(2025, 8, 12))
    world.subscribe("cus_return", [("price_seat", 150)], at=ts(2026, 1, 9))
    load_world(world, now=NOW)
    report = run_cli("report", "--month", MONTH, "--period", "t12m", "--format", "json").json()
    assert report["cohort_opening_mrr"] == 200
    assert report["cohort_closing_mrr"] == 250
    assert report["nrr"] == 125.0 and report["grr"] == 100.0
    january = run_cli("report", "--month", "2026-01", "--format", "json").json()
    assert january["reactivation"] == 150 and january["customers"]["reactivated"] == 1


ALL_EXAMPLES = [
    *MONTHLY_EXAMPLES[:1],
    (100_000, 15_000, 5_000, 8_000, 102.0, 87.0),
    *MONTHLY_EXAMPLES[1:3],
    (2_400, 150, 60, 57, 101.375, 95.125),
    *MONTHLY_EXAMPLES[3:],
]


def trailing_world(opening: int, expansion: int, contraction: int, churn: int) -> World:
    """The example spread over the twelve months to March 2026, with arrivals outside it."""
    world = seat_world()
    grow, shrink = max(expansion, 1), 2 * contraction
    steady = opening - grow - shrink - churn
    members = [("cus_grow", grow), ("cus_shrink", shrink), ("cus_leave", churn),
               ("cus_steady", steady)]
    for cid in [m[0] for m in members] + ["cus_back", "cus_new"]:
        world.add_customer(cid)
    back = world.subscribe("cus_back", [("price_seat", 333)], at=ts(2024, 10, 1))
    subs: dict[str, Any] = {}
    for day, (cid, seats) in enumerate(members, start=10):
        if seats:
            subs[cid] = world.subscribe(cid, [("price_seat", seats)], at=ts(2025, 3, day))
    back.cancel_now(at=ts(2025, 3, 20))
    if expansion:
        sub = subs["cus_grow"]
        sub.change_quantity(sub.item_ids[0], grow + expansion * 2, at=ts(2025, 6, 15))
        sub.change_quantity(sub.item_ids[0], grow + expansion, at=ts(2026, 1, 15))
    world.subscribe("cus_new", [("price_seat", 777)], at=ts(2025, 8, 5))
    if contraction:
        sub = subs["cus_shrink"]
        sub.change_quantity(sub.item_ids[0], shrink - contraction, at=ts(2025, 9, 16))
    world.subscribe("cus_back", [("price_seat", 333)], at=ts(2025, 10, 8))
    if churn:
        subs["cus_leave"].cancel_now(at=ts(2025, 12, 20))
    return world


@pytest.mark.parametrize(("opening", "expansion", "contraction", "churn", "nrr", "grr"),
                         ALL_EXAMPLES)
def test_every_worked_example_over_twelve_months(
        load_world: Callable[..., Any], run_cli: Callable[..., CliResult], opening: int,
        expansion: int, contraction: int, churn: int, nrr: float, grr: float) -> None:
    load_world(trailing_world(opening, expansion, contraction, churn), now=NOW)
    result = run_cli("report", "--month", MONTH, "--period", "t12m", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["first_month"] == "2025-04"
    assert report["cohort_opening_mrr"] == opening
    assert (report["expansion"], report["contraction"], report["churn"]) == (
        expansion, contraction, churn)
    assert report["cohort_closing_mrr"] == opening + expansion - contraction - churn
    assert report["nrr"] == nrr and report["grr"] == grr

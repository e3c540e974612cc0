"""Every worked-examples row of the definitions page, from simulated Stripe accounts.

Each row becomes customers whose subscriptions expand, contract and churn inside the
month (or the twelve months); the movements come out of the normaliser and NRR / GRR are
computed here with the definitions' formulas from the per-customer facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import pytest

from nrr.domain.months import add_months
from nrr.domain.records import MonthFact
from tests.normalise.conftest import facts
from tests.stripe_world import World, ts

# One customer per tuple: (opening dollars, [(day offset in months, new dollars or 0 = cancel)])
Plan = tuple[int, Sequence[tuple[int, int]]]


def _account(plans: Sequence[Plan], first_month: str) -> tuple[World, list[str]]:
    world = World()
    world.add_price("price_seat", unit_amount=100)  # 1.00 usd per seat and month
    year, month = (int(p) for p in add_months(first_month, -2).split("-"))
    lives = []
    ids = []
    for index, (opening, _changes) in enumerate(plans):
        cid = f"cus_{index:03d}"
        world.add_customer(cid)
        lives.append(world.subscribe(cid, [("price_seat", opening)], at=ts(year, month, 1)))
        ids.append(cid)
    # Changes happen on the 10th of the given month offset (0 = the first month).
    events = []
    for life, (_opening, changes) in zip(lives, plans, strict=True):
        for offset, dollars in changes:
            y, m = (int(p) for p in add_months(first_month, offset).split("-"))
            events.append((ts(y, m, 10), life, dollars))
    for at, life, dollars in sorted(events, key=lambda e: e[0]):
        if dollars == 0:
            life.cancel_now(at=at)
        else:
            life.change_quantity(life.item_ids[0], dollars, at=at)
    return world, ids


def _monthly(plans: Sequence[Plan]) -> tuple[Fraction, Fraction, dict[str, int]]:
    month = "2025-03"
    world, ids = _account(plans, month)
    world.advance(ts(2025, 5, 1))
    rows: list[MonthFact] = [facts(world, cid, last_month=month)[month] for cid in ids]
    totals = {kind: sum(r.movement_micro for r in rows if r.movement == kind)
              for kind in ("new", "reactivation", "expansion", "contraction", "churn")}
    opening = sum(r.opening_mrr_micro for r in rows)
    closing = sum(r.closing_mrr_micro for r in rows)
    totals["opening"], totals["closing"] = opening, closing
    cohort = [r for r in rows if r.opening_mrr_micro > 0]
    nrr = Fraction(sum(r.closing_mrr_micro for r in cohort), opening) * 100
    grr = Fraction(sum(min(r.closing_mrr_micro, r.opening_mrr_micro) for r in cohort), opening) * 100
    return nrr, grr, totals


DOLLAR = 100 * 1_000_000  # micro units per usd


@pytest.mark.parametrize(
    ("plans", "expected"),
    [
        # 50,000 | 8,000 | 2,000 | 3,000 | 106.00 | 90.00
        ([(40_000, [(0, 48_000)]), (7_000, [(0, 5_000)]), (3_000, [(0, 0)])],
         (50_000, 8_000, 2_000, 3_000, "106.00", "90.00")),
        # 100,000 | 15,000 | 3,000 | 5,000 | 107.00 | 92.00
        ([(80_000, [(0, 95_000)]), (10_000, [(0, 7_000)]), (5_000, [(0, 0)]), (5_000, [])],
         (100_000, 15_000, 3_000, 5_000, "107.00", "92.00")),
        # 5,000 | 400 | 150 | 300 | 99.00 | 91.00
        ([(4_000, [(0, 4_400)]), (700, [(0, 550)]), (300, [(0, 0)])],
         (5_000, 400, 150, 300, "99.00", "91.00")),
        # 2,400 | 150 (five 19 -> 49) | 60 (two 49 -> 19) | 57 (three 19 plans) | 101.375 | 95.125
        ([*[(19, [(0, 49)])] * 5, *[(49, [(0, 19)])] * 2, *[(19, [(0, 0)])] * 3, (2_150, [])],
         (2_400, 150, 60, 57, "101.375", "95.125")),
        # 100 | 20 | 0 | 10 | 110.00 | 90.00
        ([(90, [(0, 110)]), (10, [(0, 0)])], (100, 20, 0, 10, "110.00", "90.00")),
        # 100 | 15 | 0 | 20 | 95.00 | 80.00
        ([(80, [(0, 95)]), (20, [(0, 0)])], (100, 15, 0, 20, "95.00", "80.00")),
    ],
)
def test_worked_example_month(plans: Sequence[Plan], expected: tuple[int, int, int, int, str, str]) -> None:
    opening, expansion, contraction, churn, nrr_text, grr_text = expected
    nrr, grr, totals = _monthly(plans)
    assert totals["opening"] == opening * DOLLAR
    assert totals["expansion"] == expansion * DOLLAR
    assert totals["contraction"] == contraction * DOLLAR
    assert totals["churn"] == churn * DOLLAR
    assert nrr == Fraction(Decimal(nrr_text))
    assert grr == Fraction(Decimal(grr_text))
    # The definitions' second formulas give the same numbers.
    assert nrr == Fraction(opening + expansion - contraction - churn, opening) * 100
    assert grr == Fraction(opening - contraction - churn, opening) * 100


def test_worked_example_trailing_twelve_months() -> None:
    """100,000 | 15,000 | 5,000 | 8,000 over twelve months -> NRR 102.00, GRR 87.00."""
    first, last = "2025-01", "2025-12"
    plans: list[Plan] = [
        (60_000, [(2, 66_000), (7, 75_000)]),      # +15,000 over the year
        (20_000, [(4, 17_000), (9, 15_000)]),      # -5,000
        (8_000, [(5, 0)]),                          # churned
        (12_000, []),
    ]
    world, ids = _account(plans, first)
    world.advance(ts(2026, 1, 20))
    per_customer = [facts(world, cid, last_month=last) for cid in ids]
    opening = sum(rows[first].opening_mrr_micro for rows in per_customer)
    closing = sum(rows[last].closing_mrr_micro if last in rows else 0 for rows in per_customer)
    floor = sum(min(rows[last].closing_mrr_micro if last in rows else 0, rows[first].opening_mrr_micro)
                for rows in per_customer)
    assert opening == 100_000 * DOLLAR
    assert Fraction(closing, opening) * 100 == 102
    assert Fraction(floor, opening) * 100 == 87
    churned = per_customer[2]
    assert churned["2025-06"].movement == "churn"
    assert churned["2025-06"].movement_micro == 8_000 * DOLLAR

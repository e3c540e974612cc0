"""Property tests against an independent oracle.

Generated subscription lives (seats, plan changes, items added and removed, discounts,
cancellations now and at period end, undone cancellations, trials, returns) are played
through the Stripe world, which emits Stripe-shaped objects; meanwhile the generator
records what truly happened (:mod:`tests.normalise.oracle`). The normaliser reads only
the Stripe objects; the oracle reads only the truth. They must agree:

- MRR at every month edge and around every change (one second before, at, one second
  after), per currency;
- each month's opening, closing and movement (new, reactivation, expansion, contraction,
  churn) in the reporting currency at the month's rate.

And the history is the same from every invoice line and from the selected state lines.
Cases hypothesis found are pinned with ``@example``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nrr.domain.history import customer_history, mrr_at, select_state_lines
from nrr.domain.movements import customer_month_facts
from nrr.services.fx import RateBook
from nrr.settings import Policies
from tests.normalise.conftest import UTC_TZ
from tests.normalise.oracle import (
    DiscountTruth,
    ItemTruth,
    SubscriptionTruth,
    Truth,
    month_first_instant,
    next_month,
    rate_on,
)
from tests.normalise.oracle import mrr_at as oracle_mrr_at
from tests.stripe_world import SubscriptionEnded, World, ts

MICRO = 1_000_000
DAY = 86_400
PRICES = {"price_s": (1_900, "usd", "prod_s", "month"), "price_m": (4_900, "usd", "prod_m", "month"),
          "price_l": (9_900, "usd", "prod_l", "month"), "price_eur": (3_000, "eur", "prod_s", "month"),
          "price_year": (100_000, "usd", "prod_l", "year")}
RATE_ROWS = [(date(2024, 12, 1), "eur", Decimal("1.08")),
             *[(date(2025, m, 1), "eur", Decimal("1.0") + Decimal(m) / 50) for m in range(1, 13)],
             (date(2026, 1, 1), "eur", Decimal("1.11"))]
RATES = RateBook.from_rows("usd", [(d, c, str(r)) for d, c, r in RATE_ROWS])
MONTHS = [f"2025-{m:02d}" for m in range(1, 13)]

OPS = st.sampled_from(["seats", "plan", "discount", "remove_discount", "cancel_now", "cancel_end",
                       "undo", "new_sub", "add_item", "remove_item"])
Spec = list[tuple[str, int, bool, list[tuple[int, str, int]]]]


@st.composite
def lives(draw: st.DrawFn) -> Spec:
    """Per customer: (first price, start offset in days, trial?, [(day offset, op, n)])."""
    customers = []
    for _ in range(draw(st.integers(1, 3))):
        price = draw(st.sampled_from(sorted(PRICES)))
        start = draw(st.integers(0, 200))
        trial = draw(st.booleans())
        ops = draw(st.lists(st.tuples(st.integers(1, 330), OPS, st.integers(1, 9)), max_size=6))
        customers.append((price, start, trial, sorted(ops)))
    return customers


def play(spec: Spec) -> tuple[World, Truth, list[str]]:
    """Drive the world through ``spec`` and record the truth beside it."""
    world = World()
    for pid, (amount, currency, prod, interval) in PRICES.items():
        world.add_price(pid, unit_amount=amount, currency=currency, product=prod, interval=interval)
    world.add_coupon("co_pct", percent_off=30, duration="forever")
    world.add_coupon("co_rep", amount_off=1_000, currency="usd", duration="repeating",
                     duration_in_months=2)
    world.add_coupon("co_once", percent_off=50, duration="once")
    truth = Truth()
    events: list[tuple[int, int, str, int]] = []
    ids = []
    for index, (_price, start, _trial, ops) in enumerate(spec):
        ids.append(f"cus_{index}")
        world.add_customer(f"cus_{index}")
        events.append((ts(2025, 1, 1) + start * DAY + 3_600 * index, index, "start", 1))
        for offset, op, n in ops:
            events.append((ts(2025, 1, 1) + (start + offset) * DAY + 3_600 * index + 60, index, op, n))
    subs: dict[int, list[tuple[Any, SubscriptionTruth]]] = {i: [] for i in range(len(spec))}
    for at, index, op, n in sorted(events):
        cid = ids[index]
        price, _start, trial, _ops = spec[index]
        if op in ("start", "new_sub"):
            live_now = [s for s, _t in subs[index] if s.ended_at is None and s.status != "canceled"]
            if op == "new_sub" and (len(subs[index]) >= 2 or live_now):
                continue
            first = price if op == "start" else ("price_year" if n > 7 else "price_m")
            trial_end = at + 10 * DAY if trial and op == "start" else None
            life = world.subscribe(cid, [(first, n)], at=at, trial_end=trial_end)
            record = SubscriptionTruth(life.id, cid, life.currency, at, trial_end=trial_end)
            record.items.append(ItemTruth(life.item_ids[0], first, n, at))
            subs[index].append((life, record))
            continue
        if not subs[index]:
            continue
        life, record = subs[index][-1]
        try:
            world.advance(at)
            if life.ended_at is not None or life.status in ("canceled", "trialing"):
                continue
            _apply(life, record, op, n, at)
        except SubscriptionEnded:
            continue
    world.advance(ts(2026, 1, 15))
    for _index, pairs in subs.items():
        for life, record in pairs:
            truth.subscriptions.append(record)
            if life.ended_at is not None:
                record.revenue_end = life.ended_at
            elif life.cancel_at is not None:
                record.revenue_end = life.cancel_at
    return world, truth, ids


def _apply(life: Any, record: SubscriptionTruth, op: str, n: int, at: int) -> None:
    item = life.item_ids[0]
    if op == "seats":
        life.change_quantity(item, n, at=at)
        record.change_item(item, at, quantity=n)
    elif op == "plan":
        options = [p for p, v in PRICES.items()
                   if v[1] == life.currency and v[3] == "month" and p != life.items[0].price_id]
        current = life.items[0].price_id
        if options and PRICES[current][3] == "month":
            chosen = options[n % len(options)]
            life.change_price(item, chosen, at=at)
            record.change_item(item, at, price_id=chosen)
    elif op == "discount" and not life.discount_ids:
        coupon = ["co_pct", "co_once", "co_rep"][n % 3]
        if coupon == "co_rep" and life.currency != "usd":
            coupon = "co_pct"
        did = life.add_discount(coupon, at=at)
        end = life.world.discounts[did]["end"]
        record.discounts.append(DiscountTruth(coupon, at, end if end is not None else 2**62))
        record.discounts[-1].discount_id = did  # type: ignore[attr-defined]
    elif op == "remove_discount" and life.discount_ids:
        did = life.discount_ids[0]
        seen = n % 2 == 0
        # Unseen, it stops at the first cycle invoice without it (the current period's end).
        # A removal of a discount no invoice carried yet is always a seen one here: unseen,
        # Stripe keeps no trace of it and the definitions leave its effect open (known gap).
        carried = any(entry.get("discount") == did
                      for inv in life.world.invoices for line in inv["lines"]["data"]
                      for entry in line.get("discount_amounts") or [])
        seen = seen or not carried
        stop = at if seen else min(i.period_end for i in life.items)
        life.remove_discount(did, at=at, seen=seen)
        for disc in record.discounts:
            if getattr(disc, "discount_id", None) == did:
                disc.end = min(disc.end, stop)
    elif op == "add_item" and len(life.items) == 1 and life.currency == "usd":
        price = "price_s" if life.items[0].price_id != "price_s" else "price_m"
        if PRICES[price][3] == PRICES[life.items[0].price_id][3]:
            new_id = life.add_item(price, n, at=at)
            record.items.append(ItemTruth(new_id, price, n, at))
    elif op == "remove_item" and len(life.items) > 1 and record.item(life.item_ids[-1]).start < at:
        # (An item removed at the instant it was added is a known gap of the normaliser: the
        # two lone proration lines of a new item cannot be chained by state.)
        gone = life.item_ids[-1]
        life.remove_item(gone, at=at)
        record.item(gone).end = at
    elif op == "cancel_now":
        life.cancel_now(at=at)
    elif op == "cancel_end" and not life.cancel_at_period_end_flag:
        life.cancel_at_period_end(at=at)
    elif op == "undo" and life.cancel_at is not None and life.cancel_at > at:
        life.undo_cancel(at=at)


def _samples(truth: Truth, customer_id: str) -> list[int]:
    """Month edges and one second before, at and after every change."""
    points = set()
    for month in [*MONTHS, "2026-01"]:
        edge = month_first_instant(month)
        points.update((edge - 1, edge))
    for instant in truth.instants(customer_id):
        points.update((instant - 1, instant, instant + 1))
    return sorted(points)


def _close(a: Fraction, b_micro: int, tolerance: int = 5) -> bool:
    """Exact minor units vs the normaliser's micro integers (rounded once per item)."""
    return abs(a * MICRO - b_micro) <= tolerance


def _check(spec: Spec) -> None:
    world, truth, ids = play(spec)
    prices, coupons = world.prices, world.coupons
    for cid in ids:
        data = world.customer_data(cid)
        history = customer_history(data, Policies())
        selected = customer_history(replace(data, lines=tuple(select_state_lines(data.lines))),
                                    Policies())
        assert selected.points == history.points and selected.ledger == history.ledger
        samples = _samples(truth, cid)
        for at in samples:
            expected = oracle_mrr_at(truth, cid, at, prices, coupons)
            got = mrr_at(history, at)
            for currency in set(expected) | set(got):
                assert _close(expected.get(currency, Fraction(0)), got.get(currency, 0)), (
                    cid, at, currency, expected, got)
        facts = {row.month: row for row in customer_month_facts(
            history, data.customer, rate=RATES.rate, reporting_currency="usd", tz=UTC_TZ,
            last_month="2025-12")}

        def reporting(at: int, day: date, cid: str = cid) -> Fraction:
            values = oracle_mrr_at(truth, cid, at, prices, coupons)
            return sum((v * rate_on(RATE_ROWS, c, day) for c, v in values.items()), Fraction(0))

        paying_before: list[int] = [t for t in samples if reporting(t, date(2025, 1, 1)) > 0]
        for month in MONTHS:
            begin, end = month_first_instant(month), month_first_instant(next_month(month))
            day = date(int(month[:4]), int(month[5:]), 1)
            opening, closing = reporting(begin - 1, day), reporting(end - 1, day)
            row = facts.get(month)
            if row is None:
                assert opening == 0 and closing == 0, (cid, month, opening, closing)
                continue
            assert _close(opening, row.opening_mrr_micro, 10), (cid, month, opening, row)
            assert _close(closing, row.closing_mrr_micro, 10), (cid, month, closing, row)
            if opening == 0 and closing > 0:
                # The paying stretch running at the close started at the last 0 -> paying step.
                inside = [t for t in samples if begin <= t < end]
                since = begin
                for previous, current in zip(inside, inside[1:], strict=False):
                    if reporting(previous, day) == 0 and reporting(current, day) > 0:
                        since = current
                kind = "new" if not any(t < since for t in paying_before) else "reactivation"
            elif opening > 0 and closing == 0:
                kind = "churn"
            elif opening > 0 and closing > opening:
                kind = "expansion"
            elif 0 < closing < opening:
                kind = "contraction"
            else:
                kind = None
            assert row.movement == kind, (cid, month, opening, closing, row)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=lives())
@example(spec=[("price_m", 0, False, [(30, "seats", 3), (45, "plan", 1), (200, "cancel_end", 1)])])
@example(spec=[("price_s", 10, True, [(40, "discount", 2), (100, "remove_discount", 1),
                                      (120, "add_item", 2), (150, "remove_item", 1)])])
@example(spec=[("price_eur", 5, False, [(20, "discount", 3), (60, "cancel_now", 1),
                                        (90, "new_sub", 8)])])
@example(spec=[("price_year", 0, False, [(50, "discount", 2), (70, "cancel_end", 1),
                                         (80, "undo", 1)])])
# Found by hypothesis with this test: two plan changes at one instant (s -> l -> s), and
# discounts removed unseen before any invoice carried them.
@example(spec=[("price_s", 0, False, [(1, "plan", 1), (1, "plan", 2)])])
@example(spec=[("price_eur", 0, False, [(1, "discount", 2), (1, "remove_discount", 1)])])
@example(spec=[("price_l", 0, False, [(59, "discount", 2), (69, "remove_discount", 1)])])
# The spec hypothesis found with the earlier property test (h10b, seed 1287...846: a
# customer paying again only from 2026-03, after the last reported month, raised
# IndexError), in this generator's terms; the crash itself is pinned with hand-computed
# values in tests/normalise/test_real_accounts.py.
@example(spec=[("price_year", 185, True, [(7, "undo", 4), (168, "cancel_now", 7),
                                          (237, "add_item", 1), (256, "new_sub", 3)]),
               ("price_year", 64, False, [])])
def test_normaliser_agrees_with_the_independent_oracle(spec: Spec) -> None:
    _check(spec)

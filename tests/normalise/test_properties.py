"""Property tests over generated subscription timelines.

- opening + new + reactivation + expansion - contraction - churn = closing, every month,
  in total and per segment (plan, product, currency, country);
- closing(M) + fx_impact(M+1) = opening(M+1);
- the history is identical from all invoice lines and from :func:`select_state_lines`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nrr.domain.history import customer_history, select_state_lines
from nrr.domain.months import add_months, month_range
from nrr.domain.movements import customer_month_facts
from nrr.domain.records import MonthFact
from nrr.services.fx import RateBook
from nrr.settings import Policies
from tests.normalise.conftest import UTC_TZ
from tests.stripe_world import SubscriptionLife, World, ts

MONTHS = month_range("2025-01", "2025-12")
PRICES = {"price_s": (1_900, "usd", "prod_s"), "price_m": (4_900, "usd", "prod_m"),
          "price_l": (9_900, "usd", "prod_l"), "price_eur": (3_000, "eur", "prod_s"),
          "price_year": (100_000, "usd", "prod_l")}
RATES = RateBook.from_rows("usd", [(date(2024, 12, 1), "eur", Decimal("1.08")),
                          *[(date(2025, m, 1), "eur", Decimal("1.0") + Decimal(m) / 50) for m in range(1, 13)],
                          (date(2026, 1, 1), "eur", Decimal("1.11"))])

OPS = st.sampled_from(["seats", "plan", "discount", "cancel_now", "cancel_end", "undo", "pause", "resume",
                       "remove_discount", "pause_collection", "resume_collection", "new_sub", "add_item",
                       "remove_item"])


@st.composite
def timelines(draw: st.DrawFn) -> list[tuple[str, str, int, list[tuple[int, str, int]]]]:
    """Per customer: (country, first price, start offset in days, [(day offset, op, n)])."""
    customers = []
    for _ in range(draw(st.integers(1, 3))):
        country = draw(st.sampled_from(["US", "DE", "JP"]))
        price = draw(st.sampled_from(sorted(PRICES)))
        start = draw(st.integers(0, 200))
        ops = draw(st.lists(st.tuples(st.integers(1, 330), OPS, st.integers(1, 9)), max_size=6))
        customers.append((country, price, start, sorted(ops)))
    return customers


def _build(spec: list[tuple[str, str, int, list[tuple[int, str, int]]]], trial: bool) -> tuple[World, list[str]]:
    world = World()
    for pid, (amount, currency, product) in PRICES.items():
        world.add_price(pid, unit_amount=amount, currency=currency, product=product,
                        interval="year" if pid == "price_year" else "month")
    world.add_coupon("co_pct", percent_off=30, duration="forever")
    world.add_coupon("co_rep", amount_off=1_000, currency="usd", duration="repeating", duration_in_months=2)
    world.add_coupon("co_once", percent_off=50, duration="once")
    base = ts(2025, 1, 1)
    day = 86_400
    plan_for = {"usd": ["price_s", "price_m", "price_l"], "eur": ["price_eur"]}
    events: list[tuple[int, int, str, int]] = []
    ids = []
    first_price: dict[int, str] = {}
    for index, (country, price, start, ops) in enumerate(spec):
        cid = f"cus_{index}"
        ids.append(cid)
        world.add_customer(cid, country=country)
        first_price[index] = price
        events.append((base + start * day + 3_600 * index, index, "start", 1))
        for offset, op, n in ops:
            events.append((base + (start + offset) * day + 3_600 * index + 60, index, op, n))
    lives: dict[int, list[SubscriptionLife]] = defaultdict(list)
    for at, index, op, n in sorted(events):
        cid = ids[index]
        subs = lives[index]
        live = [s for s in subs if s.ended_at is None and s.status not in ("canceled",)]
        if op in ("start", "new_sub"):
            if op == "new_sub" and len(subs) >= 2:
                continue
            price = first_price[index] if op == "start" else "price_year" if n > 7 else "price_m"
            trial_end = at + 10 * 86_400 if trial and op == "start" and n == 1 else None
            subs.append(world.subscribe(cid, [(price, n)], at=at, trial_end=trial_end))
            continue
        if not live:
            continue
        sub = live[-1]
        world.advance(at)
        if sub.ended_at is not None:
            continue
        item = sub.item_ids[0]
        currency = sub.currency
        if sub.status == "paused":
            if op == "resume":
                sub.resume(at=at)
            continue
        if sub.status == "trialing":
            continue
        if op == "seats":
            sub.change_quantity(item, n, at=at)
        elif op == "plan":
            options = [p for p in plan_for[currency]
                       if PRICES[p][1] == currency and p != sub.items[0].price_id]
            if options:
                sub.change_price(item, options[n % len(options)], at=at)
        elif op == "discount" and not sub.discount_ids:
            coupon = ["co_pct", "co_once", "co_rep"][n % 3]
            sub.add_discount("co_pct" if coupon == "co_rep" and currency != "usd" else coupon, at=at)
        elif op == "remove_discount" and sub.discount_ids:
            sub.remove_discount(sub.discount_ids[0], at=at, seen=n % 2 == 0)
        elif op == "add_item" and len(sub.items) == 1 and currency == "usd":
            sub.add_item("price_s" if sub.items[0].price_id != "price_s" else "price_m", n, at=at,
                         prorate=n % 3 != 0)
        elif op == "remove_item" and len(sub.items) > 1:
            sub.remove_item(sub.item_ids[-1], at=at, prorate=n % 2 == 0)
        elif op == "cancel_now":
            sub.cancel_now(at=at)
        elif op == "cancel_end" and not sub.cancel_at_period_end_flag:
            sub.cancel_at_period_end(at=at)
        elif op == "undo" and sub.cancel_at is not None and sub.cancel_at > at:
            sub.undo_cancel(at=at)
        elif op == "pause":
            sub.pause(at=at)
        elif op == "pause_collection" and sub.pause_collection_body is None:
            sub.pause_collection(at=at, behavior="void" if n % 2 else "mark_uncollectible")
        elif op == "resume_collection" and sub.pause_collection_body is not None:
            sub.resume_collection(at=at)
    world.advance(ts(2026, 1, 15))
    return world, ids


def _check_identity(rows: list[MonthFact]) -> None:
    for row in rows:
        sign = {"new": 1, "reactivation": 1, "expansion": 1, "contraction": -1, "churn": -1, None: 0}
        assert row.opening_mrr_micro + sign[row.movement] * row.movement_micro == row.closing_mrr_micro
        assert row.movement_micro >= 0


POLICIES = st.builds(
    Policies,
    churn_at=st.sampled_from(["period_end", "request"]),
    discounts=st.sampled_from(["recurring", "all", "none"]),
    pause_collection=st.sampled_from(["count", "exclude"]),
    past_due_churn_after_days=st.sampled_from([None, 10]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=timelines(), trial=st.booleans(), policies=POLICIES,
       tz=st.sampled_from([UTC_TZ, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")]))
def test_movements_add_up_and_selected_lines_give_the_same_history(
        spec: list[tuple[str, str, int, list[tuple[int, str, int]]]], trial: bool, policies: Policies,
        tz: ZoneInfo) -> None:
    world, ids = _build(spec, trial)
    totals: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cid in ids:
        data = world.customer_data(cid)
        full = customer_history(data, policies)
        selected = customer_history(replace(data, lines=tuple(select_state_lines(data.lines))), policies)
        assert selected.points == full.points
        assert selected.ledger == full.ledger
        assert selected.intervals == full.intervals
        rows = customer_month_facts(full, data.customer, rate=RATES.rate, reporting_currency="usd", tz=tz,
                                    last_month="2025-12")
        _check_identity(rows)
        by_month = {row.month: row for row in rows}
        for row in rows:
            following = by_month.get(add_months(row.month, 1))
            if following is not None:
                assert row.closing_mrr_micro + following.fx_impact_micro == following.opening_mrr_micro
            for dimension, segment in (("plan", row.plan), ("product", row.product), ("currency", row.currency),
                                       ("country", row.country), ("total", "")):
                bucket = totals[(row.month, dimension, segment or "")]
                bucket["opening"] += row.opening_mrr_micro
                bucket["closing"] += row.closing_mrr_micro
                if row.movement:
                    bucket[row.movement] += row.movement_micro
        paying_months = [row.month for row in rows if row.opening_mrr_micro or row.closing_mrr_micro]
        if paying_months:
            assert rows[0].first_paid_month is not None and rows[0].first_paid_month <= paying_months[0]
    for bucket in totals.values():
        assert (bucket["opening"] + bucket["new"] + bucket["reactivation"] + bucket["expansion"]
                - bucket["contraction"] - bucket["churn"]) == bucket["closing"]
    for month in MONTHS:
        for dimension in ("plan", "product", "currency", "country"):
            parts = [b for (m, d, _), b in totals.items() if m == month and d == dimension]
            whole = totals.get((month, "total", ""))
            if whole is None:
                assert not parts
                continue
            for field in ("opening", "closing", "new", "reactivation", "expansion", "contraction", "churn"):
                assert sum(p[field] for p in parts) == whole[field]

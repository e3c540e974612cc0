"""The outlook's domain functions, one scheduled source at a time, from Stripe-shaped objects.

Now is 2 December 2025 12:00 UTC; the projected months are December (current), January
and February. Every expected number is worked out by hand in the test.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from nrr.domain.history import customer_history
from nrr.domain.money import MICRO
from nrr.domain.months import add_months, month_start
from nrr.domain.outlook import (
    CustomerOutlook,
    ProjectedFact,
    converter,
    customer_outlook,
    known_in_advance,
    outlook_totals,
    project_customer_months,
)
from nrr.domain.records import Skip
from nrr.domain.schedule_shapes import parse_pending_update, parse_schedule
from nrr.settings import Policies
from tests.stripe_world import World, ts

NOW = ts(2025, 12, 2, 12)
UTC = ZoneInfo("UTC")


def usd(amount: int | float) -> int:
    """Dollars as micro units of cents."""
    return int(round(amount * 100)) * MICRO


def months(count: int = 3, first: str = "2025-12") -> list[tuple[str, int, int]]:
    result = []
    for n in range(count):
        month = add_months(first, n)
        result.append((month, month_start(month, UTC), month_start(add_months(month, 1), UTC)))
    return result


def world() -> World:
    w = World()
    w.add_customer("cus_1")
    w.add_price("price_basic", unit_amount=10_000, product="prod_basic")  # 100 a month
    w.add_price("price_seat", unit_amount=1_200, product="prod_seat")  # 12 a seat
    w.add_price("price_half", unit_amount=5_000, product="prod_half")  # 50 a month
    w.add_price("price_trial", unit_amount=4_900, product="prod_trial")  # 49 a month
    return w


def outlook(w: World, *, schedules: tuple[dict[str, Any], ...] = (), now: int = NOW,
            **policies: Any) -> CustomerOutlook:
    w.advance(now)
    data = w.customer_data("cus_1")
    chosen = Policies(**policies)
    parsed = [parse_schedule(s) for s in schedules]
    assert not any(isinstance(p, Skip) for p in parsed)
    pending = []
    for sub in w.subscriptions():
        update = parse_pending_update(sub)
        assert not isinstance(update, Skip)
        if update is not None:
            pending.append(update)
    return customer_outlook(data, customer_history(data, chosen), now=now, policies=chosen,
                            schedules=parsed, pending_updates=pending)  # type: ignore[arg-type]


def by_month(result: CustomerOutlook, count: int = 3) -> dict[str, ProjectedFact]:
    rows = project_customer_months(result, months(count), converter({}, "usd"))
    return {row.month: row for row in rows}


def changes(result: CustomerOutlook) -> list[tuple[int, str, int, int, str]]:
    return [(c.effective_at, c.cause, c.mrr_before_micro, c.mrr_after_micro, c.bound)
            for c in result.changes]


def schedule(sid: str, sub: str, phases: list[dict[str, Any]], *, end_behavior: str = "release",
             status: str = "active") -> dict[str, Any]:
    """A ``subscription_schedule`` as ``GET /v1/subscription_schedules/{id}`` shows it."""
    return {
        "id": sid, "object": "subscription_schedule", "customer": "cus_1", "subscription": sub,
        "status": status, "end_behavior": end_behavior, "livemode": False, "created": ts(2025, 10, 1),
        "canceled_at": None, "completed_at": None, "released_at": None, "released_subscription": None,
        "current_phase": {"start_date": phases[0]["start_date"], "end_date": phases[0]["end_date"]},
        "phases": [{"add_invoice_items": [], "currency": "usd", "discounts": [], "trial_end": None,
                    "proration_behavior": "create_prorations", **phase} for phase in phases],
    }


def phase(start: int, end: int, price: str, quantity: int, **extra: Any) -> dict[str, Any]:
    return {"start_date": start, "end_date": end,
            "items": [{"price": price, "quantity": quantity, "discounts": [], "metadata": {}}], **extra}


# --- each scheduled source ------------------------------------------------------------


def test_cancel_at_period_end_churns_at_the_period_end() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    sub.cancel_at_period_end(at=ts(2025, 12, 2))  # period [1 Dec, 1 Jan)
    result = outlook(w)
    assert changes(result) == [(ts(2026, 1, 1), "scheduled_cancellation", usd(100), 0, "committed")]
    assert result.changes[0].stripe_ids["subscription"] == sub.id
    facts = by_month(result)
    # December: 100 -> 100 (the end at 00:00 on 1 January belongs to January).
    assert (facts["2025-12"].opening_micro, facts["2025-12"].closing_micro, facts["2025-12"].movement) \
        == (usd(100), usd(100), None)
    assert (facts["2026-01"].movement, facts["2026-01"].movement_micro) == ("churn", usd(100))
    assert "2026-02" not in facts  # paying at neither edge


def test_cancel_at_in_two_months() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    sub.schedule_cancel(ts(2026, 2, 14), at=ts(2025, 11, 20))
    result = outlook(w)
    assert changes(result) == [(ts(2026, 2, 14), "scheduled_cancellation", usd(100), 0, "committed")]
    facts = by_month(result)
    assert facts["2026-01"].movement is None
    assert (facts["2026-02"].opening_micro, facts["2026-02"].closing_micro,
            facts["2026-02"].movement) == (usd(100), 0, "churn")


def test_schedule_phase_with_fewer_seats_is_a_contraction() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_seat", 5)], at=ts(2025, 10, 1))  # 5 x 12 = 60
    plan = schedule("sub_sched_1", sub.id, [
        phase(ts(2025, 10, 1), ts(2026, 1, 1), "price_seat", 5),
        phase(ts(2026, 1, 1), ts(2026, 4, 1), "price_seat", 3),  # 3 x 12 = 36
    ])
    result = outlook(w, schedules=(plan,))
    assert changes(result) == [(ts(2026, 1, 1), "schedule_phase", usd(60), usd(36), "committed")]
    assert result.changes[0].stripe_ids == {"subscription": sub.id,
                                            "subscription_schedule": "sub_sched_1",
                                            "price": "price_seat"}
    facts = by_month(result)
    assert (facts["2026-01"].movement, facts["2026-01"].movement_micro) == ("contraction", usd(24))
    assert (facts["2026-02"].opening_micro, facts["2026-02"].closing_micro) == (usd(36), usd(36))


def test_schedule_that_ends_with_cancel() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    plan = schedule("sub_sched_2", sub.id, [phase(ts(2025, 10, 1), ts(2026, 1, 15), "price_basic", 1)],
                    end_behavior="cancel")
    result = outlook(w, schedules=(plan,))
    assert changes(result) == [(ts(2026, 1, 15), "scheduled_cancellation", usd(100), 0, "committed")]
    assert result.changes[0].stripe_ids["subscription_schedule"] == "sub_sched_2"
    assert by_month(result)["2026-01"].movement == "churn"


def test_schedule_with_a_cheaper_phase_then_cancel() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_seat", 5)], at=ts(2025, 10, 1))
    plan = schedule("sub_sched_3", sub.id, [
        phase(ts(2025, 10, 1), ts(2026, 1, 1), "price_seat", 5),
        phase(ts(2026, 1, 1), ts(2026, 2, 10), "price_seat", 3),
    ], end_behavior="cancel")
    result = outlook(w, schedules=(plan,))
    assert changes(result) == [
        (ts(2026, 1, 1), "schedule_phase", usd(60), usd(36), "committed"),
        (ts(2026, 2, 10), "scheduled_cancellation", usd(36), 0, "committed"),
    ]
    assert result.changes[1].stripe_ids["subscription_schedule"] == "sub_sched_3"
    facts = by_month(result)
    assert (facts["2026-02"].movement, facts["2026-02"].movement_micro) == ("churn", usd(36))


def test_released_or_canceled_schedules_change_nothing() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_seat", 5)], at=ts(2025, 10, 1))
    plan = schedule("sub_sched_4", sub.id, [
        phase(ts(2025, 10, 1), ts(2026, 1, 1), "price_seat", 5),
        phase(ts(2026, 1, 1), ts(2026, 4, 1), "price_seat", 3),
    ], status="released")
    assert outlook(w, schedules=(plan,)).static


def test_repeating_discount_ending_is_an_expansion() -> None:
    w = world()
    w.add_coupon("co_10off", amount_off=1_000, currency="usd", duration="repeating", duration_in_months=3)
    sub = w.subscribe("cus_1", [("price_half", 1)], at=ts(2025, 10, 15), coupons=["co_10off"])
    result = outlook(w)
    # 10 off 50 for three months: 40 until 15 January, then 50.
    assert changes(result) == [(ts(2026, 1, 15), "discount_end", usd(40), usd(50), "committed")]
    assert result.changes[0].stripe_ids["discount"] == sub.discount_ids[0]
    facts = by_month(result)
    assert (facts["2026-01"].movement, facts["2026-01"].movement_micro) == ("expansion", usd(10))


def test_trial_ending_gives_two_bounds() -> None:
    w = world()
    w.subscribe("cus_1", [("price_trial", 1)], at=ts(2025, 11, 20), trial_end=ts(2025, 12, 20))
    result = outlook(w)
    # Committed: the trial does not convert (nothing changes); upper: 49 from 20 December.
    assert changes(result) == [(ts(2025, 12, 20), "trial_end", 0, usd(49), "upper")]
    december = by_month(result)["2025-12"]
    assert (december.opening_micro, december.closing_micro, december.movement) == (0, 0, None)
    assert (december.opening_upper_micro, december.closing_upper_micro, december.movement_upper,
            december.movement_upper_micro) == (0, usd(49), "new", usd(49))


def test_collection_pause_resuming_under_exclude() -> None:
    w = world()
    sub = w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    sub.pause_collection(at=ts(2025, 11, 10), resumes_at=ts(2026, 1, 10))
    result = outlook(w, pause_collection="exclude")
    # Collection paused from the current period's start (1 December) until 10 January.
    assert changes(result) == [(ts(2026, 1, 10), "pause", 0, usd(100), "committed")]
    facts = by_month(result)
    assert (facts["2025-12"].movement, facts["2025-12"].movement_micro) == ("churn", usd(100))
    assert (facts["2026-01"].movement, facts["2026-01"].movement_micro) == ("reactivation", usd(100))
    # Under the default policy (Stripe still invoices) a pause changes nothing.
    assert outlook(w).static


def test_past_due_subscription_under_the_policy() -> None:
    w = world()
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1)).fail_payments(at=ts(2025, 11, 15))
    # The 1 December invoice stays open: with 30 days the subscription stops counting on 31 December.
    result = outlook(w, past_due_churn_after_days=30)
    assert changes(result) == [(ts(2025, 12, 31), "past_due_policy", usd(100), 0, "committed")]
    assert by_month(result)["2025-12"].movement == "churn"
    assert outlook(w).static  # policy off: counted until cancelled


def test_pending_update_counts_in_the_upper_bound_only() -> None:
    w = world()
    w.add_price("price_unit", unit_amount=1_000, product="prod_unit")  # 10 a unit
    sub = w.subscribe("cus_1", [("price_unit", 2)], at=ts(2025, 10, 1))  # 20
    stripe_sub = sub.to_stripe()
    item = stripe_sub["items"]["data"][0]
    original = sub.to_stripe

    def with_pending() -> dict[str, Any]:
        body = original()
        body["pending_update"] = {
            "billing_cycle_anchor": None, "expires_at": ts(2025, 12, 3), "trial_end": None,
            "trial_from_plan": None, "discounts": None,
            "subscription_items": [{**item, "quantity": 4}]}
        return body

    sub.to_stripe = with_pending  # type: ignore[method-assign]
    result = outlook(w)
    assert changes(result) == [(NOW, "pending_update", usd(20), usd(40), "upper")]
    december = by_month(result)["2025-12"]
    assert (december.closing_micro, december.movement) == (usd(20), None)
    assert (december.closing_upper_micro, december.movement_upper,
            december.movement_upper_micro) == (usd(40), "expansion", usd(20))


def test_pending_update_with_a_trial_end() -> None:
    """``pending_update.trial_end``: paid, the update puts the subscription in a trial until
    then; its items count from the trial's end, in the upper bound only."""
    w = world()
    w.add_price("price_unit", unit_amount=1_000, product="prod_unit")  # 10 a unit
    sub = w.subscribe("cus_1", [("price_unit", 2)], at=ts(2025, 10, 1))  # 20
    item = sub.to_stripe()["items"]["data"][0]
    original = sub.to_stripe

    def with_pending() -> dict[str, Any]:
        body = original()
        body["pending_update"] = {
            "billing_cycle_anchor": None, "expires_at": ts(2025, 12, 3),
            "trial_end": ts(2025, 12, 20), "trial_from_plan": None, "discounts": None,
            "subscription_items": [{**item, "quantity": 5}]}
        return body

    sub.to_stripe = with_pending  # type: ignore[method-assign]
    result = outlook(w)
    # Upper: 20 -> 0 now (in trial), 0 -> 5 x 10 = 50 on 20 December; committed unchanged.
    assert changes(result) == [(NOW, "pending_update", usd(20), 0, "upper"),
                               (ts(2025, 12, 20), "trial_end", 0, usd(50), "upper")]
    december = by_month(result)["2025-12"]
    assert (december.opening_micro, december.closing_micro, december.movement) == (
        usd(20), usd(20), None)
    # December's upper bound: opening 20 (real), closing 50: an expansion of 30.
    assert (december.closing_upper_micro, december.movement_upper,
            december.movement_upper_micro) == (usd(50), "expansion", usd(30))
    # Expired (expires_at passed): nothing pending.
    assert outlook(w, now=ts(2025, 12, 4)).changes == ()


def test_nothing_scheduled_is_static() -> None:
    w = world()
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    result = outlook(w)
    assert result.static
    facts = by_month(result)
    assert [(f.opening_micro, f.closing_micro) for f in facts.values()] == [(usd(100), usd(100))] * 3


# --- totals and known in advance --------------------------------------------------------


def test_totals_give_projected_nrr_and_grr() -> None:
    rows = [
        # Acme cancels 1,200 (January), Globex drops from 600 to 400, Initech grows 200 to 300,
        # and a trial of 49 converts (upper bound only).
        ProjectedFact("2026-01", "acme", usd(1200), 0, "churn", usd(1200), usd(1200), 0, "churn", usd(1200)),
        ProjectedFact("2026-01", "globex", usd(600), usd(400), "contraction", usd(200),
                      usd(600), usd(400), "contraction", usd(200)),
        ProjectedFact("2026-01", "initech", usd(200), usd(300), "expansion", usd(100),
                      usd(200), usd(300), "expansion", usd(100)),
        ProjectedFact("2026-01", "trial", 0, 0, None, 0, 0, usd(49), "new", usd(49)),
    ]
    totals = outlook_totals(rows)["2026-01"]
    committed, upper = totals["committed"], totals["upper"]
    # opening 2,000; NRR = (2000 + 100 - 200 - 1200) / 2000 = 35 %; GRR = (2000 - 1400) / 2000 = 30 %.
    assert (committed.opening, committed.churn, committed.contraction, committed.expansion) \
        == (usd(2000), usd(1200), usd(200), usd(100))
    assert committed.closing == usd(700) and committed.identity_gap == 0
    assert upper.closing == usd(749) and upper.new == usd(49) and upper.identity_gap == 0


def test_known_in_advance_shares() -> None:
    real = {"acme": ("churn", usd(1200)), "globex": ("contraction", usd(200)),
            "hooli": ("churn", usd(300)), "initech": ("expansion", usd(100))}
    projected = {"acme": ("churn", usd(1200)), "globex": ("contraction", usd(150))}
    shares = known_in_advance(real, projected)
    # churn: 1,200 of 1,500 known; contraction: 150 of 200.
    assert shares == {"churn": {"real_micro": usd(1500), "known_micro": usd(1200)},
                      "contraction": {"real_micro": usd(200), "known_micro": usd(150)}}

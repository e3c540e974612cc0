"""Each scheduled source through the mirror, the recompute and ``nrr outlook``'s document,
on SQLite and PostgreSQL: Stripe-shaped objects stored as the sync stores them, the stored
outlook read back. Now is 2 December 2025 12:00 UTC; one customer, cus_1; every number is
worked out by hand beside it (amounts in USD, major units).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects
from nrr.services.outlook import outlook_report
from nrr.services.recompute import recompute
from tests.outlook.test_outlook_domain import phase, schedule, world
from tests.recompute.conftest import make_settings, store_world
from tests.stripe_world import World, ts

NOW = ts(2025, 12, 2, 12)

# (month, opening, churn, contraction, expansion, reactivation, closing, closing when every
# trial converts and every pending update is paid)
Month = tuple[str, float, float, float, float, float, float, float]
Movement = tuple[str, str, float, str, str]


def _flat(amount: float, months: tuple[str, ...] = ("2025-12", "2026-01", "2026-02")
          ) -> list[Month]:
    return [(m, amount, 0.0, 0.0, 0.0, 0.0, amount, amount) for m in months]


def cancel_at_period_end(w: World) -> list[dict[str, Any]]:
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1)).cancel_at_period_end(
        at=ts(2025, 12, 2))
    return []


def cancel_at_in_two_months(w: World) -> list[dict[str, Any]]:
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1)).schedule_cancel(
        ts(2026, 2, 14), at=ts(2025, 11, 20))
    return []


def phase_with_fewer_seats(w: World) -> list[dict[str, Any]]:
    sub = w.subscribe("cus_1", [("price_seat", 5)], at=ts(2025, 10, 1))  # 5 x 12 = 60
    return [schedule("sub_sched_1", sub.id, [
        phase(ts(2025, 10, 1), ts(2026, 1, 1), "price_seat", 5),
        phase(ts(2026, 1, 1), ts(2026, 4, 1), "price_seat", 3)])]  # 3 x 12 = 36


def schedule_ending_with_cancel(w: World) -> list[dict[str, Any]]:
    sub = w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1))
    return [schedule("sub_sched_2", sub.id, [phase(ts(2025, 10, 1), ts(2026, 1, 15),
                                                   "price_basic", 1)], end_behavior="cancel")]


def repeating_discount_ending(w: World) -> list[dict[str, Any]]:
    w.add_coupon("co_10off", amount_off=1_000, currency="usd", duration="repeating",
                 duration_in_months=3)
    w.subscribe("cus_1", [("price_half", 1)], at=ts(2025, 10, 15), coupons=["co_10off"])
    return []


def trial_ending(w: World) -> list[dict[str, Any]]:
    w.subscribe("cus_1", [("price_trial", 1)], at=ts(2025, 11, 20), trial_end=ts(2025, 12, 20))
    return []


def pause_resuming(w: World) -> list[dict[str, Any]]:
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1)).pause_collection(
        at=ts(2025, 11, 10), resumes_at=ts(2026, 1, 10))
    return []


def past_due_under_the_policy(w: World) -> list[dict[str, Any]]:
    w.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 10, 1)).fail_payments(
        at=ts(2025, 11, 15))
    return []


def _pending(w: World, *, quantity: int, trial_end: int | None) -> list[dict[str, Any]]:
    w.add_price("price_unit", unit_amount=1_000, product="prod_unit")  # 10 a unit
    sub = w.subscribe("cus_1", [("price_unit", 2)], at=ts(2025, 10, 1))  # 20
    original = sub.to_stripe

    def with_pending() -> dict[str, Any]:
        body = original()
        item = body["items"]["data"][0]
        body["pending_update"] = {
            "billing_cycle_anchor": None, "expires_at": ts(2025, 12, 3), "trial_end": trial_end,
            "trial_from_plan": None, "discounts": None,
            "subscription_items": [{**item, "quantity": quantity}]}
        return body

    sub.to_stripe = with_pending  # type: ignore[method-assign]
    return []


def pending_update(w: World) -> list[dict[str, Any]]:
    return _pending(w, quantity=4, trial_end=None)


def pending_update_with_a_trial(w: World) -> list[dict[str, Any]]:
    return _pending(w, quantity=4, trial_end=ts(2025, 12, 20))


CASES: list[tuple[Callable[[World], list[dict[str, Any]]], dict[str, str], list[Movement],
                  list[Month]]] = [
    # 100 a month, cancelling at the end of the period that started on 1 December.
    (cancel_at_period_end, {},
     [("cus_1", "2026-01-01", -100.0, "scheduled_cancellation", "committed")],
     [("2025-12", 100.0, 0.0, 0.0, 0.0, 0.0, 100.0, 100.0),
      ("2026-01", 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0),
      ("2026-02", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)]),
    # 100 a month, cancel_at 14 February.
    (cancel_at_in_two_months, {},
     [("cus_1", "2026-02-14", -100.0, "scheduled_cancellation", "committed")],
     [*_flat(100.0, ("2025-12", "2026-01")),
      ("2026-02", 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0)]),
    # 60 -> 36 on 1 January: a contraction of 24.
    (phase_with_fewer_seats, {},
     [("cus_1", "2026-01-01", -24.0, "schedule_phase", "committed")],
     [*_flat(60.0, ("2025-12",)),
      ("2026-01", 60.0, 0.0, 24.0, 0.0, 0.0, 36.0, 36.0),
      *_flat(36.0, ("2026-02",))]),
    # The only phase ends on 15 January and the schedule cancels the subscription.
    (schedule_ending_with_cancel, {},
     [("cus_1", "2026-01-15", -100.0, "scheduled_cancellation", "committed")],
     [*_flat(100.0, ("2025-12",)),
      ("2026-01", 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0),
      *_flat(0.0, ("2026-02",))]),
    # 10 off 50 for three months from 15 October: 40 until 15 January, then 50.
    (repeating_discount_ending, {},
     [("cus_1", "2026-01-15", 10.0, "discount_end", "committed")],
     [*_flat(40.0, ("2025-12",)),
      ("2026-01", 40.0, 0.0, 0.0, 10.0, 0.0, 50.0, 50.0),
      *_flat(50.0, ("2026-02",))]),
    # A trial of 49 ending 20 December: nothing committed, 49 if it converts.
    (trial_ending, {},
     [("cus_1", "2025-12-20", 49.0, "trial_end", "upper")],
     [("2025-12", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 49.0),
      ("2026-01", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 49.0),
      ("2026-02", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 49.0)]),
    # Collection paused since 10 November (the 1 December invoice voided: December's churn
    # of 100 has happened), resuming 10 January: 100 back, a reactivation.
    (pause_resuming, {"NRR_POLICY_PAUSE_COLLECTION": "exclude"},
     [("cus_1", "2026-01-10", 100.0, "pause", "committed")],
     [("2025-12", 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0),
      ("2026-01", 0.0, 0.0, 0.0, 0.0, 100.0, 100.0, 100.0),
      *_flat(100.0, ("2026-02",))]),
    # The 1 December invoice stays open; after 30 days (31 December) it stops counting.
    (past_due_under_the_policy, {"NRR_POLICY_PAST_DUE_CHURN_AFTER_DAYS": "30"},
     [("cus_1", "2025-12-31", -100.0, "past_due_policy", "committed")],
     [("2025-12", 100.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0),
      *_flat(0.0, ("2026-01", "2026-02"))]),
    # 2 units of 10 = 20; the pending update (4 units = 40) counts in the upper bound, now.
    (pending_update, {},
     [("cus_1", "2025-12-02", 20.0, "pending_update", "upper")],
     [("2025-12", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0),
      ("2026-01", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0),
      ("2026-02", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0)]),
    # The same update with a trial until 20 December: if paid, nothing is charged until
    # then (20 -> 0 now), then the trial converts to the 4 units (0 -> 40 on the 20th);
    # committed unchanged.
    (pending_update_with_a_trial, {},
     [("cus_1", "2025-12-02", -20.0, "pending_update", "upper"),
      ("cus_1", "2025-12-20", 40.0, "trial_end", "upper")],
     [("2025-12", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0),
      ("2026-01", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0),
      ("2026-02", 20.0, 0.0, 0.0, 0.0, 0.0, 20.0, 40.0)]),
]


@pytest.mark.parametrize(("build", "env", "movements", "months"), CASES,
                         ids=[case[0].__name__ for case in CASES])
def test_each_scheduled_source_through_the_database(
        session: Session, db_url: str, build: Callable[[World], list[dict[str, Any]]],
        env: dict[str, str], movements: list[Movement], months: list[Month]) -> None:
    w = world()
    schedules = build(w)
    for plan in schedules:
        plan["customer"] = "cus_1"
    w.advance(NOW)
    store_world(session, w)
    if schedules:
        stored = store_objects(session, "subscription_schedule", schedules, state_at=NOW)
        assert (stored.stored, stored.skipped) == (len(schedules), 0)
    settings = make_settings(db_url, **env)
    recompute(session, settings, now=datetime.fromtimestamp(NOW, UTC))
    document = outlook_report(session, settings, months=3)
    assert [(m["customer_id"], m["effective_at"][:10], m["amount"], m["cause"], m["bound"])
            for m in document["movements"]] == movements
    assert [(m["month"], m["opening"], m["churn"], m["contraction"], m["expansion"],
             m["reactivation"], m["closing"], m["closing_all_converting"])
            for m in document["months"]] == months
    for movement in document["movements"]:
        assert movement["stripe_ids"]["subscription"] == movement["subscription_id"]
    if schedules:
        assert document["movements"][0]["stripe_ids"]["subscription_schedule"] == schedules[0]["id"]

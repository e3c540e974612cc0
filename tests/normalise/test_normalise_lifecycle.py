"""Statuses, trials, pauses, past-due, cancellation timing and several subscriptions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.normalise.conftest import facts, history, major, mrr
from tests.stripe_world import World, ts


def _world() -> World:
    world = World()
    world.add_customer("cus_1")
    world.add_price("price_basic", unit_amount=10_000, product="prod_basic")
    world.add_price("price_pro", unit_amount=30_000, product="prod_pro")
    world.add_price("price_basic_v2", unit_amount=12_000, product="prod_basic")
    return world


def _causes(world: World, **policies: object) -> list[str]:
    return [c.cause for c in history(world, **policies).ledger]  # type: ignore[arg-type]


# --- cancellation timing (policy churn_at) ---------------------------------------------


@pytest.mark.parametrize(("policy", "ends"), [("period_end", ts(2025, 4, 1)), ("request", ts(2025, 3, 10))])
def test_cancel_at_period_end(policy: str, ends: int) -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.cancel_at_period_end(at=ts(2025, 3, 10))
    world.advance(ts(2025, 5, 1))
    assert mrr(world, ends - 1, churn_at=policy) == Decimal(100)
    assert mrr(world, ends, churn_at=policy) == Decimal(0)
    assert _causes(world, churn_at=policy) == ["new_subscription", "cancellation"]


@pytest.mark.parametrize("policy", ["period_end", "request"])
def test_cancel_now_ends_at_ended_at(policy: str) -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.cancel_now(at=ts(2025, 3, 10))
    world.advance(ts(2025, 5, 1))
    assert mrr(world, ts(2025, 3, 9), churn_at=policy) == Decimal(100)
    assert mrr(world, ts(2025, 3, 10), churn_at=policy) == Decimal(0)


@pytest.mark.parametrize(("policy", "ends"), [("period_end", ts(2025, 6, 15)), ("request", ts(2025, 3, 10))])
def test_cancellation_still_ahead(policy: str, ends: int) -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.schedule_cancel(ts(2025, 6, 15), at=ts(2025, 3, 10))
    world.advance(ts(2025, 4, 2))
    data = world.customer_data("cus_1")
    assert data.subscriptions[0].status == "active"
    assert mrr(world, ends - 1, churn_at=policy) == Decimal(100)
    assert mrr(world, ends, churn_at=policy) == Decimal(0)


@pytest.mark.parametrize("policy", ["period_end", "request"])
def test_undone_scheduled_cancellation_is_no_churn(policy: str) -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.cancel_at_period_end(at=ts(2025, 3, 10))
    sub.undo_cancel(at=ts(2025, 3, 20))
    world.advance(ts(2025, 6, 1))
    assert mrr(world, ts(2025, 5, 20), churn_at=policy) == Decimal(100)
    rows = facts(world, last_month="2025-05", churn_at=policy)
    assert [r.movement for r in rows.values()] == ["new", None, None, None, None]


# --- statuses ---------------------------------------------------------------------------


def test_paused_stops_counting_at_transitioned_at() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.pause(at=ts(2025, 3, 10))
    world.advance(ts(2025, 5, 1))
    assert mrr(world, ts(2025, 3, 9)) == Decimal(100)
    assert mrr(world, ts(2025, 3, 10)) == Decimal(0)
    assert _causes(world) == ["new_subscription", "pause"]


def test_pause_then_resume_leaves_a_gap_in_the_invoices() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.pause(at=ts(2025, 3, 10))
    sub.resume(at=ts(2025, 5, 5))
    world.advance(ts(2025, 7, 1))
    # The pause instant is gone from the subscription: the invoices show service until
    # April 1st, nothing until the resume on May 5th.
    assert mrr(world, ts(2025, 3, 31)) == Decimal(100)
    assert mrr(world, ts(2025, 4, 10)) == Decimal(0)
    assert mrr(world, ts(2025, 5, 5)) == Decimal(100)
    assert _causes(world) == ["new_subscription", "pause", "resume"]
    rows = facts(world, last_month="2025-06")
    assert rows["2025-04"].movement == "churn" and rows["2025-05"].movement == "reactivation"


def test_unpaid_stops_at_the_end_of_the_last_paid_period() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.fail_payments(at=ts(2025, 2, 20))
    world.advance(ts(2025, 4, 5))
    sub.mark_unpaid(at=ts(2025, 4, 5))
    assert mrr(world, ts(2025, 2, 28)) == Decimal(100)
    assert mrr(world, ts(2025, 3, 1)) == Decimal(0)


def test_past_due_counts_until_cancelled_by_default() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.fail_payments(at=ts(2025, 2, 20))
    world.advance(ts(2025, 5, 5))
    assert world.customer_data("cus_1").subscriptions[0].status == "past_due"
    assert mrr(world, ts(2025, 5, 1)) == Decimal(100)


def test_past_due_for_n_days_stops_counting() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.fail_payments(at=ts(2025, 2, 20))
    world.advance(ts(2025, 5, 5))
    # The oldest unpaid invoice was finalised on March 1st.
    assert mrr(world, ts(2025, 3, 15) - 1, past_due_churn_after_days=14) == Decimal(100)
    assert mrr(world, ts(2025, 3, 15), past_due_churn_after_days=14) == Decimal(0)


@pytest.mark.parametrize(("now", "status"), [(ts(2025, 1, 1, 12), "incomplete"),
                                             (ts(2025, 1, 10), "incomplete_expired")])
def test_incomplete_subscription_never_counts(now: int, status: str) -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1), first_invoice_status="open")
    world.advance(now)
    assert world.customer_data("cus_1").subscriptions[0].status == status
    assert mrr(world, ts(2025, 1, 1, 6)) == Decimal(0)
    assert history(world).points.get("usd", ()) == ()


@pytest.mark.parametrize(("policy", "expected"), [("count", Decimal(100)), ("exclude", Decimal(0))])
def test_pause_collection_policy(policy: str, expected: Decimal) -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.pause_collection(at=ts(2025, 2, 15), behavior="void")
    world.advance(ts(2025, 4, 10))
    assert mrr(world, ts(2025, 1, 20), pause_collection=policy) == Decimal(100)
    assert mrr(world, ts(2025, 3, 20), pause_collection=policy) == expected


def test_pause_collection_seen_in_events_dates_the_exclusion() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.pause_collection(at=ts(2025, 2, 15), behavior="mark_uncollectible")
    world.add_event("customer.subscription.updated", sub.to_stripe(), at=ts(2025, 2, 15), customer_id="cus_1",
                    previous_attributes={"pause_collection": None})
    world.advance(ts(2025, 4, 10))
    assert mrr(world, ts(2025, 2, 15) - 1, pause_collection="exclude") == Decimal(100)
    assert mrr(world, ts(2025, 2, 15), pause_collection="exclude") == Decimal(0)
    assert mrr(world, ts(2025, 3, 20), pause_collection="count") == Decimal(100)


# --- trials -----------------------------------------------------------------------------


def test_trial_that_converts_starts_paying_at_trial_end() -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1), trial_end=ts(2025, 1, 15))
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 14)) == Decimal(0)
    assert mrr(world, ts(2025, 1, 15)) == Decimal(100)
    assert _causes(world) == ["new_subscription", "trial_conversion"]
    rows = facts(world, last_month="2025-02")
    assert rows["2025-01"].movement == "new" and rows["2025-01"].first_paid_month == "2025-01"


@pytest.mark.parametrize("outcome", ["paused", "incomplete"])
def test_trial_that_ends_paused_or_incomplete_does_not_convert(outcome: str) -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1), trial_end=ts(2025, 1, 15),
                    trial_outcome=outcome)
    world.advance(ts(2025, 3, 1))
    assert world.customer_data("cus_1").subscriptions[0].status == outcome
    assert mrr(world, ts(2025, 1, 20)) == Decimal(0)
    assert mrr(world, ts(2025, 2, 20)) == Decimal(0)
    assert facts(world, last_month="2025-02") == {}


def test_backdated_start_date_counts_from_start_date() -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 2, 1), start_date=ts(2025, 1, 10))
    world.advance(ts(2025, 3, 1))
    assert mrr(world, ts(2025, 1, 10)) == Decimal(100)


# --- changes and movements ---------------------------------------------------------------


def test_seat_change_takes_effect_at_the_positive_proration_line() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 2)], at=ts(2025, 1, 1))
    sub.change_quantity(sub.item_ids[0], 5, at=ts(2025, 2, 12, 15, 30))
    world.advance(ts(2025, 4, 1))
    assert mrr(world, ts(2025, 2, 12, 15, 29)) == Decimal(200)
    assert mrr(world, ts(2025, 2, 12, 15, 30)) == Decimal(500)
    change = history(world).ledger[1]
    assert change.cause == "seat_change"
    assert change.before == {"price": "price_basic", "quantity": 2, "discount": [], "status": "active"}
    assert change.after is not None and change.after["quantity"] == 5
    assert change.stripe_ids["line"] and change.stripe_ids["invoice"]


def test_price_change_in_the_same_product_and_plan_change() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.change_price(sub.item_ids[0], "price_basic_v2", at=ts(2025, 2, 10))
    sub.change_price(sub.item_ids[0], "price_pro", at=ts(2025, 3, 10))
    world.advance(ts(2025, 4, 1))
    assert _causes(world) == ["new_subscription", "price_change", "plan_change"]


def test_change_at_midnight_on_the_first_belongs_to_the_new_month() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 15))
    sub.change_quantity(sub.item_ids[0], 3, at=ts(2025, 3, 1))
    world.advance(ts(2025, 4, 20))
    rows = facts(world, last_month="2025-03")
    assert rows["2025-02"].movement is None
    assert major(rows["2025-02"].closing_mrr_micro) == Decimal(100)
    assert rows["2025-03"].movement == "expansion"
    assert major(rows["2025-03"].movement_micro) == Decimal(200)


def test_two_subscriptions_cancelling_one_is_contraction() -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    second = world.subscribe("cus_1", [("price_pro", 1)], at=ts(2025, 1, 5))
    second.cancel_now(at=ts(2025, 3, 10))
    world.advance(ts(2025, 4, 1))
    rows = facts(world, last_month="2025-03")
    assert rows["2025-03"].movement == "contraction"
    assert major(rows["2025-03"].movement_micro) == Decimal(300)
    assert major(rows["2025-03"].closing_mrr_micro) == Decimal(100)


def test_churn_and_return_is_reactivation() -> None:
    world = _world()
    first = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    first.cancel_now(at=ts(2025, 2, 10))
    world.subscribe("cus_1", [("price_pro", 1)], at=ts(2025, 4, 3))
    world.advance(ts(2025, 5, 1))
    rows = facts(world, last_month="2025-04")
    assert [rows[m].movement for m in ("2025-01", "2025-02", "2025-04")] == ["new", "churn", "reactivation"]
    assert "2025-03" not in rows
    assert major(rows["2025-04"].movement_micro) == Decimal(300)
    assert rows["2025-04"].first_paid_month == "2025-01"
    assert history(world).ledger[-1].cause == "reactivation"


def test_upgrade_then_cancellation_in_one_month_is_churn_of_the_opening() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.change_price(sub.item_ids[0], "price_pro", at=ts(2025, 3, 5))
    sub.cancel_now(at=ts(2025, 3, 20))
    world.advance(ts(2025, 4, 1))
    rows = facts(world, last_month="2025-03")
    assert rows["2025-03"].movement == "churn"
    assert major(rows["2025-03"].movement_micro) == Decimal(100)
    assert _causes(world) == ["new_subscription", "plan_change", "cancellation"]


def test_start_and_cancel_inside_one_month_is_no_movement_but_has_paid() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 2, 3))
    sub.cancel_now(at=ts(2025, 2, 20))
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 4, 3))
    world.advance(ts(2025, 5, 1))
    rows = facts(world, last_month="2025-04")
    assert rows["2025-02"].movement is None and rows["2025-02"].movement_micro == 0
    assert rows["2025-02"].opening_mrr_micro == rows["2025-02"].closing_mrr_micro == 0
    assert rows["2025-04"].movement == "reactivation"  # it had been paying in February


def test_deleted_customer_keeps_history() -> None:
    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    sub.cancel_now(at=ts(2025, 2, 10))
    world.advance(ts(2025, 3, 1))
    world.customers["cus_1"] = {"id": "cus_1", "object": "customer", "deleted": True}
    assert world.customer_data("cus_1").customer.deleted
    assert mrr(world, ts(2025, 1, 20)) == Decimal(100)


@pytest.mark.parametrize("rule", ["internal=true", "@example.org"])
def test_exclude_customers_policy(rule: str) -> None:
    world = World()
    world.add_customer("cus_1", email="ops@example.org", metadata={"internal": "true"})
    world.add_price("price_basic", unit_amount=10_000)
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 2, 1))
    excluded = history(world, exclude_customers=[rule])
    assert excluded.excluded and excluded.points == {}
    assert mrr(world, ts(2025, 1, 5), exclude_customers=["other=1", "@example.com"]) == Decimal(100)


def test_segment_is_the_largest_item_ties_by_price_id() -> None:
    world = World()
    world.add_customer("cus_1", country="FR", metadata={"tier": "gold"})
    world.add_price("price_b", unit_amount=5_000, product="prod_b")
    world.add_price("price_a", unit_amount=5_000, product="prod_a")
    world.add_price("price_c", unit_amount=1_000, product="prod_c")
    world.subscribe("cus_1", [("price_b", 1), ("price_a", 1), ("price_c", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 3, 1))
    row = facts(world, last_month="2025-02")["2025-02"]
    assert (row.plan, row.product, row.currency, row.country, row.metadata_) == (
        "price_a", "prod_a", "usd", "FR", {"tier": "gold"})


def test_draft_renewal_invoice_is_not_a_paused_collection() -> None:
    world = _world()
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 1))
    world.advance(ts(2025, 3, 1))
    world.invoices[-1]["status"] = "draft"  # the March renewal, not finalised yet
    assert mrr(world, ts(2025, 3, 1), pause_collection="exclude") == Decimal(100)


def test_restart_inside_the_month_of_a_start_and_cancel_is_reactivation() -> None:
    world = _world()
    first = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 2, 3))
    first.cancel_now(at=ts(2025, 2, 10))
    world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 2, 20))
    world.advance(ts(2025, 3, 5))
    row = facts(world, last_month="2025-02")["2025-02"]
    # It was paying at an earlier instant of the same month: not new.
    assert (row.movement, major(row.movement_micro)) == ("reactivation", Decimal(100))


def test_months_are_taken_in_the_configured_time_zone() -> None:
    from zoneinfo import ZoneInfo

    world = _world()
    sub = world.subscribe("cus_1", [("price_basic", 1)], at=ts(2025, 1, 10))
    sub.change_quantity(sub.item_ids[0], 2, at=ts(2025, 3, 1, 2))  # Feb 28th, 21:00 in New York
    world.advance(ts(2025, 4, 1))
    utc = facts(world, last_month="2025-03")
    new_york = facts(world, last_month="2025-03", tz=ZoneInfo("America/New_York"))
    assert utc["2025-03"].movement == "expansion" and utc["2025-02"].movement is None
    assert new_york["2025-02"].movement == "expansion" and new_york["2025-03"].movement is None

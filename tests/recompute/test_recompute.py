"""Recompute end to end: Stripe-shaped objects -> mirror -> timeline, ledger, monthly facts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, LedgerEntry, MrrTimelinePoint, RecomputeRun
from models.mirror import DirtyCustomer, QuarantinedObject
from nrr.db import session_scope
from nrr.services.recompute import recompute, recompute_dirty
from tests.recompute.conftest import cli, make_settings, store_world
from tests.stripe_world import World, ts

USD = 100 * 1_000_000  # micro units per dollar
NOW = datetime(2025, 10, 2, 12, tzinfo=UTC)


def seat_world() -> World:
    """cus_a: 5 seats x 12 USD from 2025-01-15, 8 seats from 2025-03-15, cancels at period end
    (asked 2025-06-20, ends 2025-07-15). cus_b: 2 seats x 12 USD from 2025-02-01, still paying."""
    world = World()
    world.add_customer("cus_a", country="DE", metadata={"tier": "gold"})
    world.add_customer("cus_b", country="US")
    world.add_price("price_seat", unit_amount=1_200)
    sub = world.subscribe("cus_a", [("price_seat", 5)], at=ts(2025, 1, 15))
    sub.change_quantity(sub.item_ids[0], 8, at=ts(2025, 3, 15))
    sub.cancel_at_period_end(at=ts(2025, 6, 20))
    world.subscribe("cus_b", [("price_seat", 2)], at=ts(2025, 2, 1))
    world.advance(ts(2025, 10, 2))
    return world


def facts(session: Session, customer: str | None = None) -> dict[tuple[str, str], tuple[Any, ...]]:
    stmt = select(CustomerMonthFact)
    if customer:
        stmt = stmt.where(CustomerMonthFact.customer_id == customer)
    return {(f.customer_id, f.month): (f.opening_mrr_micro, f.closing_mrr_micro, f.movement,
                                       f.movement_micro, f.fx_impact_micro, f.plan, f.country)
            for f in session.scalars(stmt)}


def snapshot(session: Session) -> dict[str, Any]:
    """Every derived row, without surrogate ids, for comparisons."""
    ledger = sorted(
        (e.customer_id, e.effective_at, e.month, e.cause, e.currency, e.mrr_before_micro,
         e.mrr_after_micro, e.subscription_id, e.subscription_item_id,
         json.dumps(e.before, sort_keys=True), json.dumps(e.after, sort_keys=True),
         json.dumps(e.stripe_ids, sort_keys=True))
        for e in session.scalars(select(LedgerEntry)))
    timeline = sorted((p.customer_id, p.currency, p.effective_at, p.mrr_micro)
                      for p in session.scalars(select(MrrTimelinePoint)))
    month_facts = sorted(
        (f.customer_id, f.month, f.opening_mrr_micro, f.closing_mrr_micro, f.movement,
         f.movement_micro, f.fx_impact_micro, f.first_paid_month, f.currency, f.plan, f.product,
         f.country, json.dumps(f.metadata_, sort_keys=True))
        for f in session.scalars(select(CustomerMonthFact)))
    return {"ledger": ledger, "timeline": timeline, "facts": month_facts}


def test_full_recompute_gives_the_movements_of_the_definitions(db_url: str, db_engine: Engine) -> None:
    world = seat_world()
    with session_scope(db_engine) as session:
        store_world(session, world)
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url), now=NOW)
    assert (result.kind, result.customers, result.skipped) == ("full", 2, 0)
    with Session(db_engine) as session:
        got = facts(session, "cus_a")
        assert got[("cus_a", "2025-01")] == (0, 60 * USD, "new", 60 * USD, 0, "price_seat", "DE")
        assert got[("cus_a", "2025-02")][:4] == (60 * USD, 60 * USD, None, 0)
        assert got[("cus_a", "2025-03")][:4] == (60 * USD, 96 * USD, "expansion", 36 * USD)
        assert got[("cus_a", "2025-06")][:4] == (96 * USD, 96 * USD, None, 0)
        assert got[("cus_a", "2025-07")][:4] == (96 * USD, 0, "churn", 96 * USD)
        assert ("cus_a", "2025-08") not in got
        assert facts(session, "cus_b")[("cus_b", "2025-10")][:4] == (24 * USD, 24 * USD, None, 0)
        causes = [(e.month, e.cause, e.mrr_before_micro, e.mrr_after_micro)
                  for e in session.scalars(select(LedgerEntry)
                                           .where(LedgerEntry.customer_id == "cus_a")
                                           .order_by(LedgerEntry.effective_at))]
        assert causes == [("2025-01", "new_subscription", 0, 60 * USD),
                          ("2025-03", "seat_change", 60 * USD, 96 * USD),
                          ("2025-07", "cancellation", 96 * USD, 0)]
        steps = [(p.effective_at, p.mrr_micro) for p in session.scalars(
            select(MrrTimelinePoint).where(MrrTimelinePoint.customer_id == "cus_a")
            .order_by(MrrTimelinePoint.effective_at))]
        assert steps == [(ts(2025, 1, 15), 60 * USD), (ts(2025, 3, 15), 96 * USD),
                         (ts(2025, 7, 15), 0)]
        run = session.scalars(select(RecomputeRun)).one()
        assert run.kind == "full" and run.finished_at is not None and run.customers == 2
        assert run.policies["churn_at"] == "period_end"


def test_recomputing_twice_gives_the_same_rows(db_url: str, db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        store_world(session, seat_world())
    settings = make_settings(db_url)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=NOW)
    with Session(db_engine) as session:
        first = snapshot(session)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=NOW)
    with Session(db_engine) as session:
        assert snapshot(session) == first
        assert first["facts"] and first["ledger"] and first["timeline"]


def test_a_policy_change_rewrites_history_without_stripe(db_url: str, db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        store_world(session, seat_world())
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=NOW)
    with Session(db_engine) as session:
        assert facts(session, "cus_a")[("cus_a", "2025-07")][2] == "churn"
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url, NRR_POLICY_CHURN_AT="request"), now=NOW)
    assert result.customers == 2
    with Session(db_engine) as session:
        got = facts(session, "cus_a")
        # Revenue ends when the cancellation was asked for (2025-06-20).
        assert got[("cus_a", "2025-06")][:4] == (96 * USD, 0, "churn", 96 * USD)
        assert ("cus_a", "2025-07") not in got
        runs = session.scalars(select(RecomputeRun).order_by(RecomputeRun.id)).all()
        assert [r.policies["churn_at"] for r in runs] == ["period_end", "request"]


def test_incremental_recompute_equals_full(db_url: str, db_engine: Engine) -> None:
    world = World()
    world.add_customer("cus_a")
    world.add_customer("cus_b")
    world.add_price("price_seat", unit_amount=1_200)
    world.add_price("price_pro", unit_amount=4_900)
    sub_a = world.subscribe("cus_a", [("price_seat", 5)], at=ts(2025, 1, 15))
    world.subscribe("cus_b", [("price_seat", 2)], at=ts(2025, 2, 1))
    world.advance(ts(2025, 5, 1))
    settings = make_settings(db_url)
    with session_scope(db_engine) as session:
        store_world(session, world)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=NOW)
    with Session(db_engine) as session:
        assert set(session.scalars(select(DirtyCustomer.customer_id))) == set()
    # cus_a upgrades; the sync stores the new state, which marks cus_a dirty.
    sub_a.change_price(sub_a.item_ids[0], "price_pro", at=ts(2025, 5, 10))
    world.advance(ts(2025, 10, 2))
    with session_scope(db_engine) as session:
        store_world(session, world)
    with Session(db_engine) as session:
        assert set(session.scalars(select(DirtyCustomer.customer_id))) >= {"cus_a"}
    with session_scope(db_engine) as session:
        result = recompute_dirty(session, settings, now=NOW)
    assert result.kind == "incremental" and result.customers >= 1
    with Session(db_engine) as session:
        incremental = snapshot(session)
        assert list(session.scalars(select(DirtyCustomer.customer_id))) == []
    with session_scope(db_engine) as session:
        recompute(session, settings, now=NOW)
    with Session(db_engine) as session:
        assert snapshot(session) == incremental
        assert facts(session, "cus_a")[("cus_a", "2025-05")][2] == "expansion"


def test_only_the_given_customers_are_rebuilt(db_url: str, db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        store_world(session, seat_world())
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url), customer_ids=["cus_b"], now=NOW)
    assert result.customers == 1
    with Session(db_engine) as session:
        assert {c for c, _ in facts(session)} == {"cus_b"}


def test_a_missing_rate_names_the_currency_and_the_date(db_url: str, db_engine: Engine) -> None:
    world = World()
    world.add_customer("cus_eur")
    world.add_price("price_eur", unit_amount=1_000, currency="eur")
    world.subscribe("cus_eur", [("price_eur", 1)], at=ts(2025, 3, 5))
    world.advance(ts(2025, 5, 1))
    with session_scope(db_engine) as session:
        store_world(session, world)
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url), now=NOW)
    # The customer is left out, named with the currency and the date (one customer never
    # blanks an account: the others would be computed).
    assert [(left.customer_id, left.stage) for left in result.left_out] == [("cus_eur", "compute")]
    assert "EUR -> USD on or before 2025-03-01" in result.left_out[0].reason


def test_rates_convert_and_fx_impact_stays_out_of_movements(db_url: str, db_engine: Engine,
                                                             tmp_path: Path) -> None:
    world = World()
    world.add_customer("cus_eur")
    world.add_price("price_eur", unit_amount=10_000, currency="eur")
    world.subscribe("cus_eur", [("price_eur", 1)], at=ts(2025, 3, 5))
    world.advance(ts(2025, 5, 10))
    with session_scope(db_engine) as session:
        store_world(session, world)
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,rate\n2025-03-01,eur,1.10\n2025-04-01,eur,1.20\n")
    result = cli(["fx", "import", str(rates)], env={"DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=datetime(2025, 5, 10, tzinfo=UTC))
    with Session(db_engine) as session:
        got = facts(session)
    assert got[("cus_eur", "2025-03")][:5] == (0, 110 * USD, "new", 110 * USD, 0)
    assert got[("cus_eur", "2025-04")][:5] == (120 * USD, 120 * USD, None, 0, 10 * USD)
    assert got[("cus_eur", "2025-05")][:5] == (120 * USD, 120 * USD, None, 0, 0)


def test_excluded_customers_and_other_mode_objects_give_no_rows(db_url: str,
                                                                db_engine: Engine) -> None:
    world = seat_world()
    live = World(livemode=True)
    live.add_customer("cus_live")
    live.add_price("price_live", unit_amount=500)
    live.subscribe("cus_live", [("price_live", 1)], at=ts(2025, 1, 1))
    live.advance(ts(2025, 3, 1))
    with session_scope(db_engine) as session:
        store_world(session, world)
        store_world(session, live)
    settings = make_settings(db_url, NRR_POLICY_EXCLUDE_CUSTOMERS="tier=gold")
    with session_scope(db_engine) as session:
        result = recompute(session, settings, now=NOW)
    assert result.excluded == 1 and result.livemode is False
    with Session(db_engine) as session:
        assert {c for c, _ in facts(session)} == {"cus_b"}


def test_skipped_objects_are_recorded_and_the_rest_goes_on(db_url: str, db_engine: Engine) -> None:
    world = seat_world()
    odd = {"id": "price_odd", "object": "price", "currency": "usd", "billing_scheme": "tiered",
           "tiers_mode": "volume", "tiers": "not a list", "recurring": None}
    with session_scope(db_engine) as session:
        store_world(session, world)
        # The mirror reads a price as the normaliser does: it keeps this one in quarantine.
        from integrations.stripe_mirror import store_objects, table_for
        stored = store_objects(session, "price", [odd], state_at=world.now)
        assert (stored.stored, stored.skipped) == (0, 1)
        held_by_mirror = session.scalars(select(QuarantinedObject)).one()
        assert (held_by_mirror.stage, held_by_mirror.object_id) == ("mirror", "price_odd")
        assert "tiers" in held_by_mirror.reason
        # A row already in the mirror (written by an earlier version, or by hand) that the
        # normaliser cannot understand is skipped by the recompute, which goes on.
        session.execute(table_for("price").insert().values(
            id="price_odd", livemode=False, created=None, state_at=world.now, raw=odd,
            synced_at=datetime.now(UTC), currency="usd", active=True, deleted=False))
    with session_scope(db_engine) as session:
        result = recompute(session, make_settings(db_url), now=NOW)
    assert result.customers == 2 and result.skipped == 1
    assert result.skips[0].object_id == "price_odd" and "tiers" in result.skips[0].reason
    with Session(db_engine) as session:
        held = session.scalars(select(QuarantinedObject)
                               .where(QuarantinedObject.stage == "recompute")).all()
        assert [(h.object_type, h.object_id) for h in held] == [("price", "price_odd")]
        assert facts(session, "cus_b")
    # The next full recompute replaces the recorded skips instead of adding to them.
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=NOW)
    with Session(db_engine) as session:
        assert len(session.scalars(select(QuarantinedObject)
                                   .where(QuarantinedObject.stage == "recompute")).all()) == 1


def test_cli_recompute_and_movements(db_url: str, db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        store_world(session, seat_world())
    env = {"DATABASE_URL": db_url}
    done = cli(["recompute", "--format", "json"], env=env)
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["kind"] == "full" and document["customers"] == 2
    assert document["policies"]["churn_at"] == "period_end"
    listed = cli(["movements", "--month", "2025-03", "--format", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)["entries"]
    assert [(e["customer_id"], e["cause"], e["mrr_before"], e["mrr_after"]) for e in entries] == [
        ("cus_a", "seat_change", 60.0, 96.0)]
    assert entries[0]["stripe_ids"]
    only_b = cli(["movements", "--month", "2025-02", "--customer", "cus_b",
                                 "--format", "csv"], env=env)
    assert only_b.exit_code == 0
    assert only_b.stdout.splitlines()[0].startswith("effective_at,customer_id,cause")
    assert "cus_b,new_subscription" in only_b.stdout
    bad = cli(["movements", "--month", "2025-13"], env=env)
    assert bad.exit_code == 2
    one = cli(["recompute", "--customer", "cus_a", "--format", "json"], env=env)
    assert one.exit_code == 0 and json.loads(one.stdout)["kind"] == "incremental"


def test_a_change_seen_as_an_event_is_dated_by_the_event(db_url: str, db_engine: Engine) -> None:
    def world_with(seen: bool) -> World:
        world = World()
        world.add_customer("cus_a")
        world.add_price("price_seat", unit_amount=1_000)
        sub = world.subscribe("cus_a", [("price_seat", 2)], at=ts(2025, 1, 10))
        sub.change_quantity(sub.item_ids[0], 5, at=ts(2025, 2, 20), prorate=False, seen=seen)
        world.advance(ts(2025, 4, 1))
        return world

    def seat_change_instant() -> int:
        with Session(db_engine) as session:
            return session.scalars(select(LedgerEntry.effective_at)
                                   .where(LedgerEntry.cause == "seat_change")).one()

    with session_scope(db_engine) as session:
        store_world(session, world_with(seen=False))
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=NOW)
    assert seat_change_instant() == ts(2025, 3, 10)  # the first cycle line that shows it
    with session_scope(db_engine) as session:
        store_world(session, world_with(seen=True))
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=NOW)
    assert seat_change_instant() == ts(2025, 2, 20)  # the event's instant


def test_removed_discounts_keep_stripes_order_through_the_mirror(db_url: str,
                                                                  db_engine: Engine) -> None:
    """10.00 off then 50 % off (Stripe's order) on 100.00 from January 1st, both removed on
    March 5th without an event: (100.00 - 10.00) x 50 % = 45.00 until the first cycle invoice
    without them (April 1st), then 100.00; whatever the discounts' ids, which sort either
    way round across the seeds."""
    sorted_either_way = set()
    with session_scope(db_engine) as session:
        for seed in range(6):
            world = World(seed=seed)
            world.add_customer(f"cus_{seed}")
            world.add_price("price_1", unit_amount=10_000)
            world.add_coupon("co_amt", amount_off=1_000, currency="usd", duration="forever")
            world.add_coupon("co_pct", percent_off=50, duration="forever")
            sub = world.subscribe(f"cus_{seed}", [("price_1", 1)], at=ts(2025, 1, 1),
                                  coupons=["co_amt", "co_pct"])
            amount_off_id, percent_off_id = sub.discount_ids
            sorted_either_way.add(amount_off_id < percent_off_id)
            for did in list(sub.discount_ids):
                sub.remove_discount(did, at=ts(2025, 3, 5))
            world.advance(ts(2025, 5, 1))
            store_world(session, world)
    assert sorted_either_way == {True, False}
    with session_scope(db_engine) as session:
        recompute(session, make_settings(db_url), now=NOW)
    with Session(db_engine) as session:
        steps: dict[str, list[tuple[int, int]]] = {}
        for p in session.scalars(select(MrrTimelinePoint).order_by(MrrTimelinePoint.effective_at)):
            steps.setdefault(p.customer_id, []).append((p.effective_at, p.mrr_micro))
    assert steps == {f"cus_{seed}": [(ts(2025, 1, 1), 45 * USD), (ts(2025, 4, 1), 100 * USD)]
                     for seed in range(6)}

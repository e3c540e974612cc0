"""Passing time alone changes facts: a change the subscriptions scheduled takes effect (a
cancellation at ``cancel_at``) with nothing marked dirty. The next recompute, whatever
triggered it, recomputes those customers; when a month closed, every customer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact
from models.mirror import DirtyCustomer
from nrr.db import session_scope
from nrr.domain.months import month_of
from nrr.services import pipeline
from nrr.services.recompute import recompute
from nrr.settings import Settings
from tests.recompute.conftest import make_settings, store_world
from tests.recompute.test_recompute import snapshot
from tests.stripe_world import World, ts

USD = 100 * 1_000_000  # micro units per dollar


def cancelling_world(*, subscribed: int, asked: int, cancel_at: int, now: int) -> World:
    """cus_a: 5 seats x 12 USD = 60 USD from ``subscribed``, asks at ``asked`` to cancel
    at ``cancel_at``; cus_b: 2 seats x 12 USD = 24 USD, nothing scheduled. The state is
    the one at ``now`` (before ``cancel_at``: the cancellation is still ahead)."""
    world = World()
    world.add_customer("cus_a")
    world.add_customer("cus_b")
    world.add_price("price_seat", unit_amount=1_200)
    sub_a = world.subscribe("cus_a", [("price_seat", 5)], at=subscribed)
    world.subscribe("cus_b", [("price_seat", 2)], at=subscribed)
    sub_a.schedule_cancel(cancel_at, at=asked)
    world.advance(now)
    return world


def facts(session: Session, customer: str) -> dict[str, tuple[Any, ...]]:
    return {f.month: (f.opening_mrr_micro, f.closing_mrr_micro, f.movement, f.movement_micro)
            for f in session.scalars(select(CustomerMonthFact)
                                     .where(CustomerMonthFact.customer_id == customer))}


def at(instant: int) -> datetime:
    return datetime.fromtimestamp(instant, UTC)


def stored_and_recomputed(db_engine: Engine, settings: Settings, world: World, now: int) -> None:
    """The world in the mirror, then a full recompute at ``now``."""
    with session_scope(db_engine) as session:
        store_world(session, world)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=at(now))


def assert_full_recompute_gives(db_engine: Engine, settings: Settings, now: int,
                                expected: Any) -> None:
    """A full recompute at ``now`` leaves the derived rows ``expected`` (a ``snapshot``)."""
    with session_scope(db_engine) as session:
        recompute(session, settings, now=at(now))
    with Session(db_engine) as session:
        assert snapshot(session) == expected


def test_an_incremental_recompute_also_recomputes_a_cancellation_that_took_effect(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url)
    world = cancelling_world(subscribed=ts(2025, 1, 15), asked=ts(2025, 9, 20),
                             cancel_at=ts(2025, 10, 10), now=ts(2025, 10, 2))
    stored_and_recomputed(db_engine, settings, world, ts(2025, 10, 2, 12))
    with Session(db_engine) as session:
        # October so far: cus_a still pays 60 USD (the cancellation is ahead).
        assert facts(session, "cus_a")["2025-10"] == (60 * USD, 60 * USD, None, 0)
        assert list(session.scalars(select(DirtyCustomer.customer_id))) == []

    # 2025-10-20: the cancellation of 2025-10-10 took effect; Stripe sent nothing new yet.
    # Only cus_b is asked for (an event touched it), with the same data.
    with session_scope(db_engine) as session:
        result = recompute(session, settings, customer_ids=["cus_b"],
                           now=at(ts(2025, 10, 20, 12)))
    assert result.kind == "incremental"
    with Session(db_engine) as session:
        # By hand: October opens at 60 USD and closes (now) at 0: a churn of 60 USD.
        assert facts(session, "cus_a")["2025-10"] == (60 * USD, 0, "churn", 60 * USD)
        assert facts(session, "cus_b")["2025-10"] == (24 * USD, 24 * USD, None, 0)
        incremental = snapshot(session)
    assert_full_recompute_gives(db_engine, settings, ts(2025, 10, 20, 12), incremental)


def test_a_recompute_after_a_month_closed_moves_every_customer_to_the_new_month(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url)
    world = cancelling_world(subscribed=ts(2025, 1, 15), asked=ts(2025, 9, 20),
                             cancel_at=ts(2026, 1, 10), now=ts(2025, 10, 2))
    stored_and_recomputed(db_engine, settings, world, ts(2025, 10, 2, 12))
    with session_scope(db_engine) as session:
        recompute(session, settings, customer_ids=[], now=at(ts(2025, 11, 3, 12)))
    with Session(db_engine) as session:
        # By hand: nothing changed; October closes where it opened and November exists.
        assert facts(session, "cus_b")["2025-10"] == (24 * USD, 24 * USD, None, 0)
        assert facts(session, "cus_b")["2025-11"] == (24 * USD, 24 * USD, None, 0)
        assert facts(session, "cus_a")["2025-11"] == (60 * USD, 60 * USD, None, 0)
        assert max(facts(session, "cus_a")) == "2025-11"
        recomputed = snapshot(session)
    assert_full_recompute_gives(db_engine, settings, ts(2025, 11, 3, 12), recomputed)


def test_refresh_with_nothing_dirty_recomputes_a_cancellation_that_took_effect(
        db_url: str, db_engine: Engine) -> None:
    """The pipeline's refresh (every webhook batch, ``nrr sync``, the worker's schedule)
    runs at the real now: the cancellation took effect a minute ago, after the recompute."""
    settings = make_settings(db_url)
    now = int(time.time())
    cancel_at = now - 60
    world = cancelling_world(subscribed=now - 40 * 86_400, asked=now - 86_400,
                             cancel_at=cancel_at, now=now - 120)
    stored_and_recomputed(db_engine, settings, world, now - 120)
    month = month_of(cancel_at, settings.tz)
    with Session(db_engine) as session:
        assert facts(session, "cus_a")[month][1] == 60 * USD
    assert pipeline.dirty_customers(db_engine) == []
    assert pipeline.anything_due(db_engine, settings)

    outcome = pipeline.refresh(db_engine, settings, reason="test", then_follow_up=False)

    assert outcome is not None and outcome.recompute is not None
    with Session(db_engine) as session:
        # By hand: cus_a paid 60 USD all month (subscribed 40 days ago) until the
        # cancellation a minute ago: its month closes at 0, a churn of 60 USD.
        assert facts(session, "cus_a")[month] == (60 * USD, 0, "churn", 60 * USD)
    assert not pipeline.anything_due(db_engine, settings)

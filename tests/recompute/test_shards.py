"""A full recompute in shards (customer ranges written in separate transactions) stores what
a recompute in one process stores; shards are idempotent; readers see the old run until
the final step switches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchmarks.generate_account import generate
from models.derived import RecomputeRun, RecomputeShard
from nrr.db import session_scope
from nrr.domain.months import month_of
from nrr.services.recompute import RecomputeError, recompute, shards
from nrr.services.report import monthly_report
from tests.recompute.conftest import make_settings
from tests.recompute.test_recompute import snapshot

NOW = 1_790_000_000  # 2026-09-21


def test_shards_in_any_order_and_twice_store_what_one_process_stores(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url).model_copy(update={"recompute_workers": 0})
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        generate(session, 45, seed=21, now=NOW)
    with session_scope(db_engine) as session:
        single = recompute(session, settings, now=moment)
    with Session(db_engine) as session:
        expected = snapshot(session)
        report_before = monthly_report(session, settings, month_of(NOW, settings.tz))

    with session_scope(db_engine) as session:
        planned = shards.start(session, settings, now=moment, shard_customers=10)
    assert planned is not None and planned.shards == [0, 1, 2, 3, 4]  # 45 customers
    with Session(db_engine) as session:
        ranges = [(r.from_customer, r.to_customer) for r in session.scalars(
            select(RecomputeShard).where(RecomputeShard.run_id == planned.run_id)
            .order_by(RecomputeShard.shard))]
    assert ranges[0][0] == "" and ranges[-1][1] is None
    assert all(ranges[k][1] == ranges[k + 1][0] for k in range(len(ranges) - 1))

    # A second plan while this one is built is refused.
    with session_scope(db_engine) as session:
        assert shards.start(session, settings, now=moment, shard_customers=10) is None

    # A shard whose worker died before its commit leaves nothing behind.
    with pytest.raises(RuntimeError), session_scope(db_engine) as session:
        assert shards.run_shard(session, settings, planned.run_id, 3, planned.now_ts)
        raise RuntimeError("killed before the commit")
    for shard in (4, 1, 3, 0):
        with session_scope(db_engine) as session:
            assert shards.run_shard(session, settings, planned.run_id, shard, planned.now_ts)
    # A repeated shard does nothing.
    with session_scope(db_engine) as session:
        assert shards.run_shard(session, settings, planned.run_id, 1, planned.now_ts) is None
    with Session(db_engine) as session:
        assert shards.unfinished(session, planned.run_id) == [2]
        # Readers still see the previous run in full while the shards are written.
        assert monthly_report(session, settings, month_of(NOW, settings.tz)) == report_before
        assert snapshot(session) == expected

    # The final step runs the missing shard, checks the rows and switches.
    with session_scope(db_engine) as session:
        result = shards.finish(session, settings, planned.run_id, planned.now_ts)
    assert result is not None and result.run_id == planned.run_id
    assert (result.customers, result.facts, result.ledger_entries, result.timeline_points) == (
        single.customers, single.facts, single.ledger_entries, single.timeline_points)
    with session_scope(db_engine) as session:  # a repeated final step does nothing
        assert shards.finish(session, settings, planned.run_id, planned.now_ts) is None
    with Session(db_engine) as session:
        assert session.get(RecomputeRun, planned.run_id).status == "live"  # type: ignore[union-attr]
        assert snapshot(session) == expected
        attempts = dict(session.execute(
            select(RecomputeShard.shard, RecomputeShard.attempts)
            .where(RecomputeShard.run_id == planned.run_id)).all())
    assert attempts == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}


def test_a_run_whose_rows_do_not_add_up_is_not_switched_to(db_url: str,
                                                         db_engine: Engine) -> None:
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        generate(session, 12, seed=2, now=NOW)
    with session_scope(db_engine) as session:
        live = recompute(session, settings, now=moment).run_id
    with session_scope(db_engine) as session:
        planned = shards.start(session, settings, now=moment, shard_customers=5)
    assert planned is not None
    for shard in planned.shards:
        with session_scope(db_engine) as session:
            shards.run_shard(session, settings, planned.run_id, shard, planned.now_ts)
    # Rows lost behind the shards' backs (here: deleted by hand).
    with session_scope(db_engine) as session:
        from nrr.services.recompute.common import T_FACTS

        session.execute(T_FACTS.delete().where(T_FACTS.c.run_id == planned.run_id,
                                               T_FACTS.c.month == month_of(NOW, settings.tz)))
    with pytest.raises(RecomputeError, match="differ"), session_scope(db_engine) as session:
        shards.finish(session, settings, planned.run_id, planned.now_ts)
    with Session(db_engine) as session:
        assert session.get(RecomputeRun, planned.run_id).status == "failed"  # type: ignore[union-attr]
        from models.derived import LiveRun

        assert session.get(LiveRun, 1).run_id == live  # type: ignore[union-attr]

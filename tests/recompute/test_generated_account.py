"""The benchmark's generated account is valid input, and incremental equals full on it."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from benchmarks.generate_account import change_customers, generate
from models.derived import CustomerMonthFact
from models.mirror import StripeInvoiceLine
from nrr.db import session_scope
from nrr.services.recompute import recompute, recompute_dirty
from tests.recompute.conftest import make_settings
from tests.recompute.test_recompute import snapshot

NOW = 1_790_000_000  # 2026-09-21


def test_generated_account_recomputes_and_incremental_equals_full(db_url: str,
                                                                  db_engine: Engine) -> None:
    with session_scope(db_engine) as session:
        stats = generate(session, 60, seed=3, now=NOW)
    assert stats["customers"] == 60 and stats["seat_changes"] > 0 and stats["plan_changes"] > 0
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        full = recompute(session, settings, now=moment)
    assert full.skipped == 0 and full.customers == 60 and full.facts > 0
    with Session(db_engine) as session:
        lines = session.scalar(select(func.count()).select_from(StripeInvoiceLine))
        assert lines and full.lines_read < lines  # only state-changing lines were read
        # opening + movements = closing, per month, in total.
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for fact in session.scalars(select(CustomerMonthFact)):
            sign = -1 if fact.movement in ("contraction", "churn") else 1
            total = totals[fact.month]
            total[0] += fact.opening_mrr_micro
            total[1] += sign * fact.movement_micro if fact.movement else 0
            total[2] += fact.closing_mrr_micro
        assert all(o + m == c for o, m, c in totals.values())

    with session_scope(db_engine) as session:
        changed = change_customers(session, 60, fraction=0.1, now=NOW)
    assert changed == 6
    with session_scope(db_engine) as session:
        incremental = recompute_dirty(session, settings, now=moment)
    assert incremental.kind == "incremental" and incremental.customers == 6
    with Session(db_engine) as session:
        after_incremental = snapshot(session)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=moment)
    with Session(db_engine) as session:
        assert snapshot(session) == after_incremental


def test_the_parallel_full_recompute_stores_what_one_process_stores(
        db_url: str, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker processes computing chunks (here of 7 customers) write the same rows, in
    the same order of customers, as a recompute in the calling process."""
    from nrr.services import recompute as service

    with session_scope(db_engine) as session:
        generate(session, 40, seed=5, now=NOW)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    single = make_settings(db_url).model_copy(update={"recompute_workers": 0})
    with session_scope(db_engine) as session:
        one = recompute(session, single, now=moment)
    with Session(db_engine) as session:
        expected = snapshot(session)
    assert one.customers == 40 and "wait" not in one.timings

    monkeypatch.setattr(service.common, "CHUNK", 7)
    parallel = single.model_copy(update={"recompute_workers": 2})
    with session_scope(db_engine) as session:
        two = recompute(session, parallel, now=moment)
    assert "wait" in two.timings  # the rows came from the worker processes
    assert (two.customers, two.facts, two.skipped) == (one.customers, one.facts, one.skipped)
    with Session(db_engine) as session:
        assert snapshot(session) == expected

"""The dashboard keeps overview pages per data version: after any recompute (incremental,
full in one process, full in shards) the next view shows the new numbers, never a kept page
of the data before; without a change the kept page is served.

The numbers expected are the JSON report's (``monthly_report``) of the recomputed data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from benchmarks.generate_account import change_customers, generate
from nrr.dashboard.app import Dashboard, Filters
from nrr.db import session_scope
from nrr.domain.months import month_of
from nrr.services.recompute import recompute, recompute_dirty, shards
from nrr.services.report import monthly_report
from tests.recompute.conftest import make_settings
from tests.report.test_report_html import headlines

NOW = 1_790_000_000  # 2026-09-21: the seat changes happen in September
MOMENT = datetime.fromtimestamp(NOW, tz=UTC)
VIEWED = datetime(2026, 10, 5, tzinfo=UTC)  # September is the last closed month
CUSTOMERS = 30


def test_the_overview_after_every_recompute_kind_shows_the_new_numbers(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url, NRR_DASHBOARD_TOKEN="t").model_copy(
        update={"recompute_workers": 0})
    month = month_of(NOW, settings.tz)
    with session_scope(db_engine) as session:
        generate(session, CUSTOMERS, seed=5, now=NOW)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=MOMENT)
    dashboard = Dashboard(settings, db_engine)

    def shown() -> float | None:
        page = dashboard.overview(Filters({}), now=VIEWED)
        assert f"{month}: last closed month" in page
        return headlines(page)["mrr"]

    def reported() -> float:
        with Session(db_engine) as session:
            mrr = monthly_report(session, settings, month, now=VIEWED)["closing_mrr"]
        assert isinstance(mrr, float)
        return mrr

    def seats_change(seed: int) -> None:
        with session_scope(db_engine) as session:
            assert change_customers(session, CUSTOMERS, fraction=0.3, seed=seed, now=NOW) == 9

    def sharded() -> None:
        with session_scope(db_engine) as session:
            planned = shards.start(session, settings, now=MOMENT, shard_customers=10)
        assert planned is not None and len(planned.shards) == 3
        for shard in planned.shards:
            with session_scope(db_engine) as session:
                assert shards.run_shard(session, settings, planned.run_id, shard,
                                        planned.now_ts)
        with session_scope(db_engine) as session:
            assert shards.finish(session, settings, planned.run_id, planned.now_ts)

    before = shown()
    assert before == pytest.approx(reported(), abs=0.0051)
    page = dashboard.overview(Filters({}), now=VIEWED)
    assert dashboard.overview(Filters({}), now=VIEWED) is page  # unchanged data: kept

    for seed, rerun in ((12, "incremental"), (13, "full"), (14, "shards")):
        seats_change(seed)
        with session_scope(db_engine) as session:
            if rerun == "incremental":
                recompute_dirty(session, settings, now=MOMENT)
            elif rerun == "full":
                recompute(session, settings, now=MOMENT)
        if rerun == "shards":
            sharded()
        expected = reported()
        assert expected != pytest.approx(before, abs=0.0051), rerun  # the numbers moved
        assert shown() == pytest.approx(expected, abs=0.0051), rerun
        before = expected

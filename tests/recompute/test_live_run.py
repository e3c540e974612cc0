"""A full recompute writes a new run beside the live one and switches readers at once.

Readers never wait for a recompute, never deadlock with it, and a report (one transaction)
sees the old run or the new one, never a mix: on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from benchmarks.generate_account import change_customers, generate
from integrations.stripe_mirror import store_objects
from models.derived import CustomerMonthFact, LiveRun, MrrTimelinePoint, RecomputeRun
from models.mirror import StripeCustomer
from nrr.db import session_scope
from nrr.domain.months import add_months, month_of
from nrr.locks import RECOMPUTE_LOCK, account_lock
from nrr.services.recompute import recompute, recompute_dirty
from nrr.services.report import monthly_report, top_movements
from tests.recompute.conftest import make_settings

NOW = 1_790_000_000  # 2026-09-21


def numbers(document: dict[str, Any]) -> dict[str, Any]:
    """A report without its notes (they name the last run's settings, not its numbers)."""
    return {key: value for key, value in document.items() if key != "notes"}


def _all_run_ids(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return set(session.scalars(select(CustomerMonthFact.run_id).distinct()
                                   .execution_options(nrr_all_runs=True)))


def test_a_reader_keeps_the_run_it_started_with_and_the_next_reader_sees_the_new_one(
        db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        generate(session, 30, seed=11, now=NOW)
    with session_scope(db_engine) as session:
        first = recompute(session, settings, now=moment)
    month = month_of(NOW, settings.tz)

    reader = Session(db_engine)
    try:
        before = monthly_report(reader, settings, month)
        # Half the customers change seats: the next run's numbers differ.
        with session_scope(db_engine) as session:
            assert change_customers(session, 30, fraction=0.5, now=NOW) == 15
        with session_scope(db_engine) as session:
            second = recompute(session, settings, now=moment)
        assert second.run_id != first.run_id
        # The same transaction keeps reading the run it started with, statement after
        # statement, although the new run is live and both runs' rows are stored.
        assert numbers(monthly_report(reader, settings, month)) == numbers(before)
        assert _all_run_ids(db_engine) == {first.run_id, second.run_id}
    finally:
        reader.close()
    with Session(db_engine) as session:
        after = monthly_report(session, settings, month)
        assert session.get(LiveRun, 1).run_id == second.run_id  # type: ignore[union-attr]
        statuses = dict(session.execute(select(RecomputeRun.id, RecomputeRun.status)).all())
    assert numbers(after) != numbers(before)
    assert statuses[first.run_id] == "retired" and statuses[second.run_id] == "live"

    # The next full run starts by deleting every run but the live one.
    with session_scope(db_engine) as session:
        third = recompute(session, settings, now=moment)
    assert _all_run_ids(db_engine) == {second.run_id, third.run_id}
    with Session(db_engine) as session:
        assert numbers(monthly_report(session, settings, month)) == numbers(after)


def test_incremental_recomputes_write_the_live_run(db_url: str, db_engine: Engine) -> None:
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        generate(session, 20, seed=4, now=NOW)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=moment)
    with session_scope(db_engine) as session:
        live = recompute(session, settings, now=moment).run_id
    with session_scope(db_engine) as session:
        change_customers(session, 20, fraction=0.3, now=NOW)
    with session_scope(db_engine) as session:
        incremental = recompute_dirty(session, settings, now=moment)
    assert incremental.customers == 6
    with Session(db_engine) as session:
        after_incremental = monthly_report(session, settings, month_of(NOW, settings.tz))
        points = session.scalar(select(func.count()).select_from(MrrTimelinePoint))
        live_points = session.scalar(
            select(func.count()).select_from(MrrTimelinePoint.__table__)
            .where(MrrTimelinePoint.__table__.c.run_id == live))
    assert points == live_points  # readers count the live run's rows only
    with session_scope(db_engine) as session:
        recompute(session, settings, now=moment)
    with Session(db_engine) as session:
        full = monthly_report(session, settings, month_of(NOW, settings.tz))
    assert numbers(full) == numbers(after_incremental)


def test_full_recomputes_in_a_loop_while_readers_query_and_webhooks_write(
        db_url: str, db_engine: Engine) -> None:
    """Full recomputes under two discount policies alternate (so consecutive runs differ);
    readers make reports meanwhile; a webhook path stores new customers, marks them
    dirty and recomputes them under the account's lock. No thread may fail, and every
    report equals one run's report exactly."""
    settings = make_settings(db_url)
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    with session_scope(db_engine) as session:
        generate(session, 40, seed=9, now=NOW)
    with session_scope(db_engine) as session:
        recompute(session, settings, now=moment)
    # The second policy leaves out the customers of one paying customer's email domain.
    with Session(db_engine) as session:
        payer = session.scalars(select(CustomerMonthFact.customer_id)
                                .where(CustomerMonthFact.closing_mrr_micro > 0)
                                .order_by(CustomerMonthFact.month.desc())).first()
        email = session.scalar(select(StripeCustomer.email).where(StripeCustomer.id == payer))
    assert email and "@" in email
    policies = {"recurring": settings,
                "none": make_settings(db_url, NRR_POLICY_EXCLUDE_CUSTOMERS="@" + email.split("@")[1])}
    reports: dict[str, dict[str, Any]] = {}
    for name, policy in policies.items():
        with session_scope(db_engine) as session:
            recompute(session, policy, now=moment)
        with Session(db_engine) as session:
            reports[name] = {month: (numbers(monthly_report(session, settings, month)),
                                     top_movements(session, settings, month))
                             for month in (add_months(month_of(NOW, settings.tz), -k)
                                           for k in range(12))}
    differing = [m for m in reports["none"] if reports["none"][m] != reports["recurring"][m]]
    assert differing, "the two runs must differ"
    month = differing[0]
    choices = [reports[name][month] for name in policies]

    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"recomputes": 0, "reports": 0, "webhooks": 0}

    def guarded(work: Any) -> Any:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                stop.set()
        return run

    def recomputer() -> None:
        for index in range(6):
            policy = policies["none" if index % 2 else "recurring"]
            with account_lock(RECOMPUTE_LOCK, settings, db_engine, blocking=True,
                              timeout=60) as acquired:
                assert acquired
                with session_scope(db_engine) as session:
                    recompute(session, policy, now=moment)
            counts["recomputes"] += 1
            if stop.is_set():
                return
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            with Session(db_engine) as session:
                seen = (numbers(monthly_report(session, settings, month)),
                        top_movements(session, settings, month))
            assert seen in choices, "a report mixed two runs"
            counts["reports"] += 1

    def webhooks() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            customer = {"id": f"cus_hook{index:04d}", "object": "customer", "livemode": False,
                        "created": NOW, "email": f"hook{index}@example.com",
                        "currency": "usd", "metadata": {}}
            with session_scope(db_engine) as session:
                store_objects(session, "customer", [customer], state_at=NOW)
            with account_lock(RECOMPUTE_LOCK, settings, db_engine, blocking=True,
                              timeout=60) as acquired:
                assert acquired
                with session_scope(db_engine) as session:
                    recompute_dirty(session, settings, now=moment)
            counts["webhooks"] += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=guarded(work)) for work in
               (recomputer, reader, reader, webhooks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert counts["recomputes"] == 6 and counts["reports"] > 0 and counts["webhooks"] > 0

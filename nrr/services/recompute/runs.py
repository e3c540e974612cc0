"""Runs: a full recompute writes a new run's rows beside the live run's, then switches the
readers to it at once by moving the ``live_run`` pointer (``models.live_rows``).

Nothing is emptied under the readers: they keep reading the live run while the new one is
written (no ``TRUNCATE``, no lock a reader waits for or deadlocks with), and a report sees
the old run or the new one, never a mix. The previous live run's rows stay until the next
full run starts (a reader pinned to it finishes its report); that start deletes every run
but the live one, first waiting on PostgreSQL for transactions older than the last switch.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from models.derived import LiveRun, RecomputeRun
from models.live_rows import pin_live_run
from nrr.logs import get_logger
from nrr.services.recompute import totals
from nrr.services.recompute.common import T_DIRTY, T_FACTS, T_LEDGER, T_TIMELINE
from nrr.settings import Settings

log = get_logger(__name__)

# A full run still "building" after this long is taken for dead (its shards never finished).
BUILDING_STALE_AFTER = timedelta(hours=12)
# How long a full run's start waits for readers that may still read the run it deletes.
READER_WAIT_SECONDS = 30.0


def live_run(session: Session) -> LiveRun:
    """The live-run pointer (created as run 0 when missing)."""
    row = session.get(LiveRun, 1)
    if row is None:
        row = LiveRun(id=1, run_id=0, previous_run_id=None, switched_at=datetime.now(UTC))
        session.add(row)
        session.flush()
    return row


def new_run(session: Session, settings: Settings, kind: str) -> RecomputeRun:
    run = RecomputeRun(kind=kind, status="building" if kind == "full" else "done",
                       started_at=datetime.now(UTC), policies=settings.policies.as_dict(),
                       reporting_currency=settings.reporting_currency,
                       timezone=settings.timezone)
    session.add(run)
    session.flush()
    return run


def drop_other_runs(session: Session, keep: int) -> None:
    """Delete the rows of every run but ``keep`` (the live one) and the full runs being
    built by shards, before a new full run writes its own. On PostgreSQL, first wait (a
    bounded time) for transactions that began before the last switch: they may have pinned
    the run whose rows go."""
    pointer = live_run(session)
    kept = [keep, *session.scalars(
        select(RecomputeRun.id).where(RecomputeRun.kind == "full",
                                      RecomputeRun.status == "building",
                                      RecomputeRun.started_at > datetime.now(UTC)
                                      - BUILDING_STALE_AFTER))]
    if session.get_bind().dialect.name == "postgresql":
        _wait_for_readers_since(session, pointer.switched_at)
    # The runs that can have rows: full runs (an incremental run writes into the live run)
    # and run 0 (rows written before runs existed). Deleted by run id, an index range each
    # (``NOT IN`` the kept runs reads every row of the table, the live run's too).
    dropped = [run_id for run_id in (0, *session.scalars(
        select(RecomputeRun.id).where(RecomputeRun.kind == "full"))) if run_id not in kept]
    if dropped:
        for table in (T_TIMELINE, T_LEDGER, T_FACTS):
            session.execute(delete(table).where(table.c.run_id.in_(dropped)),
                            execution_options={"synchronize_session": False})
    totals.drop_runs_but(session, kept)


def _wait_for_readers_since(session: Session, since: datetime) -> None:
    deadline = time.monotonic() + READER_WAIT_SECONDS
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND pid <> pg_backend_pid() AND xact_start < :since")
    while True:
        older = session.connection().execute(query, {"since": since}).scalar() or 0
        if not older:
            return
        if time.monotonic() > deadline:
            log.warning("recompute.readers_still_open", transactions=older,
                        reason="deleting the previous run's rows anyway")
            return
        time.sleep(0.2)


def switch_to(session: Session, run: RecomputeRun) -> int:
    """Make ``run`` the live run (readers see it from this transaction's commit on);
    returns the run that was live."""
    pointer = session.execute(select(LiveRun).where(LiveRun.id == 1)
                              .with_for_update()).scalar_one_or_none()
    if pointer is None:
        pointer = live_run(session)
    previous = pointer.run_id
    session.execute(update(LiveRun).where(LiveRun.id == 1).values(
        run_id=run.id, previous_run_id=previous, switched_at=datetime.now(UTC)),
        execution_options={"synchronize_session": False})
    session.execute(update(RecomputeRun).where(RecomputeRun.id == previous,
                                               RecomputeRun.status == "live")
                    .values(status="retired"), execution_options={"synchronize_session": False})
    session.execute(update(RecomputeRun).where(RecomputeRun.id == run.id)
                    .values(status="live", finished_at=datetime.now(UTC)),
                    execution_options={"synchronize_session": False})
    session.expire(pointer)
    pin_live_run(session, run.id)
    return previous


def building_since(session: Session) -> datetime | None:
    """When the oldest full run still being built (by shards, committed apart) started."""
    oldest = session.scalar(
        select(RecomputeRun.started_at)
        .where(RecomputeRun.kind == "full", RecomputeRun.status == "building",
               RecomputeRun.started_at > datetime.now(UTC) - BUILDING_STALE_AFTER)
        .order_by(RecomputeRun.started_at).limit(1))
    return oldest


def clear_dirty(session: Session, run: RecomputeRun, ids: list[str] | None) -> None:
    """Unmark the customers this run computed (``ids``; None: every one). A mark made
    after the run started stays for the next one; so does, for an incremental run, a mark
    made after a full run still being built started (that run may have read the customer
    before the change, and becomes live after this one)."""
    cutoff = run.started_at
    if ids is not None:
        building = building_since(session)
        if building is not None:
            cutoff = min(cutoff, building)
    condition = T_DIRTY.c.marked_at <= cutoff
    if ids is None:
        session.execute(delete(T_DIRTY).where(condition),
                        execution_options={"synchronize_session": False})
        return
    for start in range(0, len(ids), 2000):
        session.execute(delete(T_DIRTY).where(condition,
                                              T_DIRTY.c.customer_id.in_(ids[start:start + 2000])),
                        execution_options={"synchronize_session": False})

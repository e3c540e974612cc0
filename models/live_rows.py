"""Readers see the live run's derived rows only, and the same run for a whole transaction.

The timeline, the ledger, the monthly facts and their segment totals hold the rows of more than one full
recompute while a new one is written beside the live one (``nrr.services.recompute``).
Every ORM ``SELECT`` through a :class:`~sqlalchemy.orm.Session` that reads one of these
tables gets ``run_id = <live run>`` added to each of their appearances (aliases and
subqueries included). The live run is read once per transaction and pinned: a report made
of several statements reads one run even when a recompute switches runs meanwhile (the
previous run's rows stay until the next switch; see ``nrr.services.recompute.write``).

Writers that address runs themselves (the recompute) use plain tables or pass the
execution option ``ALL_RUNS``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, event, select
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql import visitors

from models.derived import (
    CustomerMonthFact,
    LedgerEntry,
    LiveRun,
    MrrTimelinePoint,
    SegmentMonthTotal,
)

# Execution option: this statement reads every run's rows.
ALL_RUNS = "nrr_all_runs"

_DERIVED = (MrrTimelinePoint, LedgerEntry, CustomerMonthFact, SegmentMonthTotal)
_DERIVED_TABLES = frozenset(model.__table__ for model in _DERIVED)
_LIVE: Table = LiveRun.__table__  # type: ignore[assignment]
_PIN = "nrr_live_run"


def live_run_id(session: Session) -> int:
    """The run readers of this session's current transaction see (read once, then pinned)."""
    connection = session.connection()  # begins the transaction if none is open
    transaction = session.get_transaction()
    pinned = session.info.get(_PIN)
    if pinned is not None and pinned[0] is transaction:
        return int(pinned[1])
    run = connection.execute(select(_LIVE.c.run_id).where(_LIVE.c.id == 1)).scalar()
    run_id = int(run) if run is not None else 0
    session.info[_PIN] = (transaction, run_id)
    return run_id


def pin_live_run(session: Session, run_id: int) -> None:
    """After this session switched the live run itself: its later reads see ``run_id``."""
    session.connection()
    session.info[_PIN] = (session.get_transaction(), run_id)


def _reads_derived(statement: Any) -> bool:
    return any(isinstance(element, Table) and element in _DERIVED_TABLES
               for element in visitors.iterate(statement))


@event.listens_for(Session, "do_orm_execute")
def _live_rows_only(state: ORMExecuteState) -> None:
    if not state.is_select or state.execution_options.get(ALL_RUNS):
        return
    if not _reads_derived(state.statement):
        return
    run_id = live_run_id(state.session)
    state.statement = state.statement.options(*(
        with_loader_criteria(model, lambda cls: cls.run_id == run_id, include_aliases=True)
        for model in _DERIVED))

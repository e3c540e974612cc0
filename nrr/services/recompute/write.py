"""Write: rows into the derived tables (``executemany`` on SQLite, ``COPY`` on
PostgreSQL), the incremental facts diff, the bulk-load set-up of a full rebuild."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, delete, select, text
from sqlalchemy.orm import Session

from nrr.db.statements import in_chunks
from nrr.domain.records import Skip
from nrr.logs import get_logger
from nrr.services.recompute.common import (
    FACT_COLUMNS,
    T_FACTS,
    T_LEDGER,
    T_QUARANTINE,
    T_TIMELINE,
)

if TYPE_CHECKING:
    from nrr.services.recompute.totals import Totals

log = get_logger(__name__)

def insert_rows(session: Session, table: Table, columns: Sequence[str],
                rows: list[tuple[Any, ...]], run_id: int) -> int:
    """Insert rows of run ``run_id`` whose JSON columns are already :class:`JsonText` (or
    None) and that hold no datetimes: ``executemany`` on SQLite (the run id a literal of the
    statement), ``COPY`` on PostgreSQL (psycopg's copy, rows streamed as they are)."""
    if not rows:
        return 0
    connection = session.connection()
    raw = connection.connection.driver_connection
    assert raw is not None
    names = ", ".join(f'"{c}"' for c in columns)
    dialect = connection.dialect.name
    if dialect == "postgresql":
        tail = (int(run_id),)
        with raw.cursor() as cursor, cursor.copy(
                f'COPY "{table.name}" ({names}, "run_id") FROM STDIN') as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row + tail)
        return len(rows)
    if dialect != "sqlite":
        raise RuntimeError(f"unsupported database dialect {dialect!r}")
    marks = ", ".join("?" for _ in columns)
    cursor = raw.cursor()
    try:
        cursor.executemany(f'INSERT INTO "{table.name}" ({names}, "run_id") '
                           f'VALUES ({marks}, {int(run_id)})', rows)
    finally:
        cursor.close()
    return len(rows)


def delete_customers(session: Session, run_id: int, ids: Sequence[str],
                     tables: Sequence[Table] = (T_TIMELINE, T_LEDGER, T_FACTS)) -> None:
    """Delete run ``run_id``'s rows of the customers ``ids``."""
    for chunk in in_chunks(list(ids), 2000):
        for table in tables:
            session.execute(delete(table).where(table.c.run_id == run_id,
                                                table.c.customer_id.in_(list(chunk))),
                            execution_options={"synchronize_session": False})


def keep_changed_facts(session: Session, run_id: int, ids: Sequence[str],
                       rows: list[tuple[Any, ...]], stored_into: Totals | None = None
                       ) -> list[tuple[Any, ...]]:
    """Of the new fact ``rows`` of customers ``ids``, the ones to insert; stored facts of
    these customers (in run ``run_id``) that are gone or differ are deleted. The table ends
    up exactly as if every fact of ``ids`` had been deleted and ``rows`` inserted.
    ``stored_into`` gets the stored facts folded in, as read."""
    stored: dict[tuple[str, str], tuple[Any, ...]] = {}
    columns = [T_FACTS.c[name] for name in FACT_COLUMNS]
    metadata_at = FACT_COLUMNS.index("metadata")
    for chunk in in_chunks(list(ids)):
        for stored_row in session.execute(select(*columns).where(
                T_FACTS.c.run_id == run_id, T_FACTS.c.customer_id.in_(list(chunk)))):
            values: tuple[Any, ...] = tuple(stored_row)
            metadata = values[metadata_at]
            if metadata is not None and not isinstance(metadata, str):  # PostgreSQL: a dict
                values = (*values[:metadata_at], json.dumps(metadata, sort_keys=True),
                          *values[metadata_at + 1:])
            stored[(values[0], values[1])] = values
    if stored_into is not None:
        stored_into.fold(stored.values())
    fresh: list[tuple[Any, ...]] = []
    for row in rows:
        if stored.pop((row[0], row[1]), None) != tuple(row):
            fresh.append(row)
    stale = list(stored) + [(row[0], row[1]) for row in fresh]
    if stale:
        session.execute(delete(T_FACTS).where(T_FACTS.c.run_id == run_id,
                                              T_FACTS.c.month == bindparam("b_month"),
                                              T_FACTS.c.customer_id == bindparam("b_customer")),
                        [{"b_month": month, "b_customer": cid} for month, cid in stale],
                        execution_options={"synchronize_session": False})
    return fresh


def sqlite_bulk_pragmas(session: Session) -> list[str]:
    """A bigger page cache and in-memory temp b-trees for a full rebuild on SQLite (the
    GROUP BY of the line selection; the new run's index pages stay cached as its rows
    append to every index, all of which lead with the run id); returns the statements that put the
    connection back as it was. Both are only speed: a setting SQLite refuses (``temp_store``
    cannot change inside a transaction once the connection has temp storage) is left."""
    if session.get_bind().dialect.name != "sqlite":
        return []
    restore = []
    for name, value in (("cache_size", "-262144"), ("temp_store", "2")):
        old = session.execute(text(f"PRAGMA {name}")).scalar()
        if sqlite_pragma(session, f"PRAGMA {name}={value}"):
            restore.append(f"PRAGMA {name}={old}")
    return restore


def sqlite_pragma(session: Session, statement: str) -> bool:
    """Run a PRAGMA on the driver connection; False when SQLite refuses it."""
    import sqlite3

    raw = session.connection().connection.driver_connection
    assert raw is not None
    try:
        raw.execute(statement).close()
    except sqlite3.OperationalError as exc:
        log.info("recompute.sqlite_pragma_skipped", statement=statement, error=str(exc))
        return False
    return True


def analyze_derived(session: Session) -> None:
    """PostgreSQL, after a full run's rows were written: fresh planner statistics (the
    tables changed wholesale). ``ANALYZE`` takes no lock that readers or writers wait for."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE mrr_timeline, mrr_ledger, customer_month_facts"))


def record_skips(session: Session, skips: Sequence[Skip]) -> None:
    """A full recompute replaces the recorded normalisation skips with the current ones."""
    session.execute(delete(T_QUARANTINE).where(T_QUARANTINE.c.stage == "recompute"),
                    execution_options={"synchronize_session": False})
    if skips:
        now = datetime.now(UTC)
        session.execute(T_QUARANTINE.insert(), [
            {"object_type": s.object_type, "object_id": s.object_id, "stage": "recompute",
             "reason": s.reason, "raw": None, "created_at": now} for s in skips])

"""Dialect-aware statements shared by every writer: upserts and ``IN`` lists.

SQLite and PostgreSQL both take ``INSERT ... ON CONFLICT``; SQLAlchemy spells it per
dialect, so writers ask :func:`dialect_insert` for the session's spelling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


def dialect_insert(session: Session, table: Table) -> Any:
    """``INSERT`` of the session's dialect, with ``on_conflict_do_update`` (SQLite, PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")


def upsert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], *,
                guard: bool = True, keep_columns: Sequence[str] = (),
                coalesce_columns: Sequence[str] = ()) -> None:
    """Bulk upsert keyed by ``id``; with ``guard`` an older ``state_at`` never wins.

    ``keep_columns`` are never overwritten by a later state; ``coalesce_columns`` keep
    the stored value when the new one is null.
    """
    if not rows:
        return
    stmt = dialect_insert(session, table)
    columns = [c for c in rows[0] if c != "id" and c not in keep_columns]
    set_: dict[str, Any] = {}
    for name in columns:
        if name in coalesce_columns:
            set_[name] = func.coalesce(stmt.excluded[name], table.c[name])
        else:
            set_[name] = stmt.excluded[name]
    where = (stmt.excluded.state_at >= table.c.state_at) if guard else None
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_=set_, where=where)
    # In id order (stable: of two rows with one id the later still wins), so concurrent
    # writers (resources stored side by side) lock shared rows in one order: no deadlock.
    session.execute(stmt, sorted(rows, key=lambda row: row["id"]))


def in_chunks(values: Sequence[str], size: int = IN_CHUNK) -> Iterable[Sequence[str]]:
    """``values`` in slices of at most ``size`` (for ``IN (...)`` lists)."""
    for start in range(0, len(values), size):
        yield values[start:start + size]

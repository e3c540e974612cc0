"""Bulk loading: many rows into a table the caller has just emptied, at driver speed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import JSON, Date, DateTime, Table
from sqlalchemy.orm import Session

from models.base import UTCDateTime


class JsonText(str):
    """A JSON column value already serialised (``bulk_insert`` passes it through)."""

    __slots__ = ()


def bulk_insert(session: Session, table: Table, columns: Sequence[str],
                rows: Iterable[Sequence[Any]], *, batch: int = 50_000) -> int:
    """Plain INSERT of many tuples through the driver: ``executemany`` on SQLite, ``COPY``
    on PostgreSQL. JSON columns take Python objects, instants aware datetimes. No upsert:
    for tables the caller has just emptied (derived rows, generated benchmark data).
    """
    connection = session.connection()
    dialect = connection.dialect.name
    json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    time_at = [i for i, c in enumerate(columns)
               if isinstance(table.c[c].type, (UTCDateTime, DateTime))]
    date_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, Date)]
    raw = connection.connection.driver_connection
    assert raw is not None
    total = 0

    def prepared(chunk: list[Sequence[Any]]) -> list[Sequence[Any]]:
        if not (json_at or (dialect == "sqlite" and (time_at or date_at))):
            return chunk
        out: list[Sequence[Any]] = []
        for row in chunk:
            values = list(row)
            for i in json_at:
                value = values[i]
                if value is not None and type(value) is not JsonText:
                    values[i] = json.dumps(value, separators=(",", ":"), default=str)
            if dialect == "sqlite":
                for i in time_at:
                    if values[i] is not None:
                        values[i] = values[i].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                for i in date_at:
                    if values[i] is not None:
                        values[i] = values[i].isoformat()
            out.append(values)
        return out

    names = ", ".join(f'"{c}"' for c in columns)
    pending: list[Sequence[Any]] = []

    def flush() -> None:
        nonlocal total
        if not pending:
            return
        chunk = prepared(pending)
        if dialect == "postgresql":
            with raw.cursor() as cursor, cursor.copy(
                    f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for values in chunk:
                    copy.write_row(values)
        elif dialect == "sqlite":
            marks = ", ".join("?" for _ in columns)
            cursor = raw.cursor()
            cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', chunk)
            cursor.close()
        else:
            raise RuntimeError(f"unsupported database dialect {dialect!r}")
        total += len(pending)
        pending.clear()

    for row in rows:
        pending.append(row)
        if len(pending) >= batch:
            flush()
    flush()
    return total

"""Segment totals: the sums the reports read, kept beside the facts (``segment_month_totals``).

A report of a large account would otherwise aggregate every customer's facts on each view.
The totals are the facts' groups exactly as the report's SQL makes them (a month, a
segment's raw value, a movement; a T12M cohort by the segment at its start), so a report
folds the same sums whichever it reads and its numbers are identical.

Each recompute kind keeps them whole:

* a full run aggregates its facts once before the switch (:func:`build`);
* a shard aggregates its own customers' facts into partial rows tagged with the shard, in
  the transaction of its facts; the final step adds the partials up (:func:`merge_partials`);
* an incremental run aggregates its customers' facts before and after the rewrite and
  applies the difference to the stored rows of the months it touched
  (:func:`apply_change`): sums and counts are additive, so the result is what a full
  aggregation would give.

The facts are aggregated at a fine grain (every dimension at once) in SQL and rolled up
per dimension in Python: one pass over the facts instead of one per dimension. Services
never commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from nrr.domain.months import add_months
from nrr.logs import get_logger
from nrr.services.recompute.common import FACT_COLUMNS, T_FACTS, chunks
from nrr.services.segment_totals import (
    DIMENSIONS,
    FIRST_PAID,
    METADATA,
    T_BUILT,
    T_TOTALS,
    TOTAL,
    built_dimensions,
    metadata_segment,
)

log = get_logger(__name__)

# Above this many distinct metadata objects the metadata groups would be about as many as
# the facts: the totals leave them out and ``--by metadata:KEY`` reads the facts.
MAX_METADATA_SEGMENTS = 5_000
# An incremental run of more customers than this rebuilds the totals instead of applying
# a difference (two aggregations of that many customers cost more than one of all).
MAX_CHANGE_CUSTOMERS = 20_000

VALUES = ("customers", "opening_micro", "closing_micro", "fx_impact_micro",
          "paying_at_opening", "paying_at_closing", "kept_micro", "expansion_micro",
          "contraction_micro", "churn_micro", "churned")
KEY = ("period", "month", "dimension", "segment", "movement")

Key = tuple[str, str, str, str | None, str | None]
Sums = dict[Key, list[int]]



@dataclass(frozen=True)
class IdRange:
    """Customer ids from ``first`` (inclusive) to ``last`` (exclusive; None: no end), in
    Python's order (a shard's customers). Read as a range on SQLite only, whose binary
    collation is that order and whose index serves the range; on PostgreSQL a range in
    Python's order needs ``COLLATE "C"``, which the index (in the database's collation)
    cannot serve: the shard's ids are listed there instead."""

    first: str
    last: str | None


# A customer filter: None (every customer of the run), a list of ids, or a range (SQLite).
Customers = Sequence[str] | IdRange | None

# Ids per statement; PostgreSQL binds up to 65,535 parameters, so there a shard's ids
# (5,000 by default) go in one statement.
IDS_PER_STATEMENT = 2_000
POSTGRESQL_IDS_PER_STATEMENT = 10_000


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _add(sums: Sums, key: Key, values: Sequence[int], sign: int = 1) -> None:
    found = sums.get(key)
    if found is None:
        sums[key] = [sign * v for v in values] if sign != 1 else list(values)
    elif sign == 1:
        for index, value in enumerate(values):
            if value:
                found[index] += value
    else:
        for index, value in enumerate(values):
            found[index] -= value


class Totals:
    """Sums of fact rows grouped as the reports group them, folded in Python row by row.

    The one definition of the groups: a full run folds its facts as it computes them (in
    each worker process, the parts added up after), an incremental run and a shard fold
    the facts they read back. A metadata dimension with more than
    ``MAX_METADATA_SEGMENTS`` distinct values is dropped as soon as it is seen (its groups
    would be about as many as the facts)."""

    def __init__(self) -> None:
        self.sums: Sums = {}
        self.metadata_dropped = False
        self._segments: dict[Any, str | None] = {}  # a metadata value: its segment
        self._distinct: set[str | None] = set()

    def fold(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add fact rows (tuples in ``FACT_COLUMNS`` order). Every fact of a customer must
        come in the same call: a T12M cohort joins a customer's month to 11 months later.

        The rows are first summed by every dimension at once (few groups), then the groups
        rolled up per dimension."""
        rows = list(rows)
        closing_at = {(r[_CUSTOMER], r[_MONTH]): r[_CLOSING] for r in rows}
        later: dict[str, str] = {}
        segment = self._segment
        sums = self.sums
        keep_metadata = not self.metadata_dropped
        for row in rows:
            month, movement = row[_MONTH], row[_MOVEMENT]
            opening, closing, fx = row[_OPENING] or 0, row[_CLOSING] or 0, row[_FX] or 0
            paying_at_opening, paying_at_closing = int(opening > 0), int(closing > 0)
            plan, product, currency, country = row[_PLAN], row[_PRODUCT], row[_CURRENCY], \
                row[_COUNTRY]
            metadata = segment(row[_METADATA]) if keep_metadata else None
            if keep_metadata and self.metadata_dropped:  # this row's segment dropped them
                keep_metadata, metadata = False, None
            keys = [("monthly", month, TOTAL, None, movement),
                    ("monthly", month, "plan", plan, movement),
                    ("monthly", month, "product", product, movement),
                    ("monthly", month, "currency", currency, movement),
                    ("monthly", month, "country", country, movement),
                    ("monthly", month, FIRST_PAID, row[_FIRST_PAID], movement)]
            if keep_metadata:
                keys.append(("monthly", month, METADATA, metadata, movement))
            for key in keys:
                group = sums.get(key)
                if group is None:
                    sums[key] = [1, opening, closing, fx, paying_at_opening, paying_at_closing,
                                 0, 0, 0, 0, 0]
                else:
                    group[0] += 1
                    group[1] += opening
                    group[2] += closing
                    group[3] += fx
                    group[4] += paying_at_opening
                    group[5] += paying_at_closing
            if opening <= 0:
                continue
            # The T12M cohort of the month 11 months later, by the segment at its start.
            cohort_month = later.get(month)
            if cohort_month is None:
                cohort_month = later[month] = add_months(month, 11)
            start = row[_OPENING_T12M]
            start = opening if start is None else start
            end = closing_at.get((row[_CUSTOMER], cohort_month)) or 0
            values = (start - opening, int(end > 0), min(end, start), max(end - start, 0),
                      start - end if 0 < end < start else 0, start if end == 0 else 0,
                      int(end == 0))
            keys = [("t12m", cohort_month, TOTAL, None, None),
                    ("t12m", cohort_month, "plan", plan, None),
                    ("t12m", cohort_month, "product", product, None),
                    ("t12m", cohort_month, "currency", currency, None),
                    ("t12m", cohort_month, "country", country, None)]
            if keep_metadata:
                keys.append(("t12m", cohort_month, METADATA, metadata, None))
            for key in keys:
                group = sums.get(key)
                if group is None:
                    sums[key] = [1, start, end, values[0], 0, *values[1:]]
                else:
                    group[0] += 1
                    group[1] += start
                    group[2] += end
                    group[3] += values[0]
                    group[5] += values[1]
                    group[6] += values[2]
                    group[7] += values[3]
                    group[8] += values[4]
                    group[9] += values[5]
                    group[10] += values[6]

    def _segment(self, metadata: Any) -> str | None:
        if self.metadata_dropped:
            return None
        key = (metadata if isinstance(metadata, str | None)
               else json.dumps(metadata, sort_keys=True))
        cache = self._segments
        if key in cache:
            return cache[key]
        segment = cache[key] = metadata_segment(key)
        self._count(segment)  # may drop the metadata totals (and this cache)
        return segment

    def _count(self, segment: str | None) -> None:
        self._distinct.add(segment)
        if len(self._distinct) > MAX_METADATA_SEGMENTS:
            self._drop_metadata()

    def _drop_metadata(self) -> None:
        if not self.metadata_dropped:
            log.info("totals.metadata_left_out", segments=len(self._distinct),
                     reason=f"more than {MAX_METADATA_SEGMENTS} distinct metadata objects")
        self.metadata_dropped = True
        self._segments.clear()
        for key in [key for key in self.sums if key[2] == METADATA]:
            del self.sums[key]

    def add(self, other: Totals) -> None:
        """Count in the totals of other customers (a worker's chunk)."""
        if other.metadata_dropped:
            self._drop_metadata()
        for key, values in other.sums.items():
            if key[2] == METADATA:
                if self.metadata_dropped:
                    continue
                self._count(key[3])
                if self.metadata_dropped:
                    continue
            _add(self.sums, key, values)

    def dimensions(self) -> list[str]:
        return [d for d in DIMENSIONS if not (d == METADATA and self.metadata_dropped)]


_FACT_INDEX = {name: index for index, name in enumerate(FACT_COLUMNS)}
_MONTH, _CUSTOMER, _OPENING, _CLOSING = (_FACT_INDEX[n] for n in (
    "month", "customer_id", "opening_mrr_micro", "closing_mrr_micro"))
_MOVEMENT, _FX, _FIRST_PAID, _OPENING_T12M = (_FACT_INDEX[n] for n in (
    "movement", "fx_impact_micro", "first_paid_month", "opening_t12m_micro"))
_PLAN, _PRODUCT, _CURRENCY, _COUNTRY, _METADATA = (_FACT_INDEX[n] for n in (
    "plan", "product", "currency", "country", "metadata"))


def _customer_conditions(session: Session, table: Any, customers: Customers
                         ) -> list[list[ColumnElement[bool]]]:
    """One list of conditions per statement to run (id lists go in chunks)."""
    if customers is None:
        return [[]]
    if isinstance(customers, IdRange):
        if session.get_bind().dialect.name != "sqlite":
            raise ValueError("an id range is read on SQLite only: list the ids")
        conditions = [table.customer_id >= customers.first] if customers.first else []
        if customers.last is not None:
            conditions.append(table.customer_id < customers.last)
        return [conditions]
    size = (POSTGRESQL_IDS_PER_STATEMENT if session.get_bind().dialect.name == "postgresql"
            else IDS_PER_STATEMENT)
    return [[table.customer_id.in_(list(chunk))] for chunk in chunks(list(customers), size)]


def aggregate(session: Session, run_id: int, customers: Customers = None) -> Totals:
    """Run ``run_id``'s facts (of ``customers`` only when given) read back and folded."""
    found = Totals()
    columns = [T_FACTS.c[name] for name in FACT_COLUMNS]
    for conditions in _customer_conditions(session, T_FACTS.c, customers):
        rows = session.execute(select(*columns).where(T_FACTS.c.run_id == run_id, *conditions)
                               .order_by(T_FACTS.c.customer_id))
        batch: list[Any] = []
        for row in rows:
            if batch and row[_CUSTOMER] != batch[-1][_CUSTOMER] and len(batch) >= 10_000:
                found.fold(batch)
                batch = []
            batch.append(row)
        found.fold(batch)
    return found


# --------------------------------------------------------------------------- storing


def _insert(session: Session, run_id: int, sums: Sums, dimensions: Iterable[str],
            shard: int | None = None) -> int:
    kept = set(dimensions)
    rows = [{"run_id": run_id, "shard": shard, **dict(zip(KEY, key, strict=True)),
             **dict(zip(VALUES, values, strict=True))}
            for key, values in sums.items() if key[2] in kept and values[0]]
    for start in range(0, len(rows), 5_000):
        session.execute(T_TOTALS.insert(), rows[start:start + 5_000])
    return len(rows)


def _mark_built(session: Session, run_id: int, dimensions: list[str]) -> None:
    session.execute(delete(T_BUILT).where(T_BUILT.c.run_id == run_id))
    session.execute(T_BUILT.insert().values(run_id=run_id, dimensions=dimensions,
                                            built_at=datetime.now(UTC)))


def store(session: Session, run_id: int, found: Totals) -> int:
    """(Re)write every total of run ``run_id`` as ``found`` (the fold of all its facts)."""
    session.execute(delete(T_TOTALS).where(T_TOTALS.c.run_id == run_id),
                    execution_options={"synchronize_session": False})
    dimensions = found.dimensions()
    written = _insert(session, run_id, found.sums, dimensions)
    _mark_built(session, run_id, dimensions)
    return written


def build(session: Session, run_id: int) -> int:
    """(Re)write every total of run ``run_id`` from its stored facts; returns the rows."""
    return store(session, run_id, aggregate(session, run_id))


def write_partial(session: Session, run_id: int, shard: int, ids: Sequence[str], first: str,
                  last: str | None) -> int:
    """A shard's totals, tagged with the shard: its customers ``ids`` (those from ``first``
    to ``last``; read as that range on SQLite, as the id list elsewhere)."""
    session.execute(delete(T_TOTALS).where(T_TOTALS.c.run_id == run_id,
                                           T_TOTALS.c.shard == shard),
                    execution_options={"synchronize_session": False})
    customers: Customers = (IdRange(first, last) if session.get_bind().dialect.name == "sqlite"
                            else ids)
    return _insert(session, run_id, aggregate(session, run_id, customers).sums, DIMENSIONS,
                   shard=shard)


def _stored(session: Session, condition: ColumnElement[bool]) -> Sums:
    sums: Sums = {}
    columns = [T_TOTALS.c[name] for name in (*KEY, *VALUES)]
    for row in session.execute(select(*columns).where(condition)):
        _add(sums, tuple(row[:len(KEY)]), [_int(v) for v in row[len(KEY):]])  # type: ignore[arg-type]
    return sums


def merge_partials(session: Session, run_id: int) -> int:
    """The final step of a sharded run: add the shards' partial totals up into the run's."""
    found = Totals()
    part = Totals()
    part.sums = _stored(session, and_(T_TOTALS.c.run_id == run_id,
                                      T_TOTALS.c.shard.is_not(None)))
    found.add(part)
    return store(session, run_id, found)


def before_change(session: Session, run_id: int, ids: Sequence[str]) -> Sums | None:
    """An incremental run's customers' groups before it rewrites their facts (None: the
    totals will be rebuilt instead)."""
    if len(ids) > MAX_CHANGE_CUSTOMERS or built_dimensions(session, run_id) is None:
        return None
    return aggregate(session, run_id, ids).sums


def apply_change(session: Session, run_id: int, ids: Sequence[str],
                 before: Sums | None) -> None:
    """After an incremental run rewrote the facts of ``ids``: the stored totals of the
    months whose groups changed get the difference (or everything is rebuilt when
    ``before`` is None: too many customers, or totals never built for this run)."""
    dimensions = built_dimensions(session, run_id)
    if before is None or dimensions is None:
        build(session, run_id)
        return
    change: Sums = {}
    for key, values in aggregate(session, run_id, ids).sums.items():
        _add(change, key, values)
    for key, values in before.items():
        _add(change, key, values, -1)
    touched = sorted({(key[0], key[1]) for key, values in change.items()
                      if key[2] in dimensions and any(values)})
    for start in range(0, len(touched), 200):
        months = touched[start:start + 200]
        where = and_(T_TOTALS.c.run_id == run_id, T_TOTALS.c.shard.is_(None),
                     tuple_(T_TOTALS.c.period, T_TOTALS.c.month).in_(months))
        sums = _stored(session, where)
        wanted = set(months)
        for key, values in change.items():
            if (key[0], key[1]) in wanted:
                _add(sums, key, values)
        if any(values[0] < 0 or (values[0] == 0 and any(values)) for values in sums.values()):
            # Only if the stored totals were not the facts' (written by hand, say).
            log.warning("totals.inconsistent", run_id=run_id, reason="rebuilt from the facts")
            build(session, run_id)
            return
        session.execute(delete(T_TOTALS).where(where),
                        execution_options={"synchronize_session": False})
        _insert(session, run_id, sums, dimensions)
    if touched:
        # The totals changed: readers that keep pages per data version
        # (``nrr.services.data_version``) see it here.
        session.execute(update(T_BUILT).where(T_BUILT.c.run_id == run_id)
                        .values(built_at=datetime.now(UTC)))


def drop_runs_but(session: Session, kept: Sequence[int]) -> None:
    for table in (T_TOTALS, T_BUILT):
        session.execute(delete(table).where(table.c.run_id.not_in(list(kept))),
                        execution_options={"synchronize_session": False})

"""Segment totals: the sums the reports read, kept beside the facts (``segment_month_totals``).

A report of a large account would otherwise aggregate every customer's facts on each view.
The totals are the facts' groups exactly as the report's SQL makes them (a month, a
segment's raw value, a movement; a T12M cohort by the segment at its start), so a report
folds the same sums whichever it reads and its numbers are identical.

Each recompute kind keeps them whole:

* a full run folds its facts as they are computed, chunk by chunk (in the worker
  processes when it has them), into one :class:`Totals` written before the switch
  (:func:`build`; with no fold in hand, :func:`build` aggregates the stored facts in SQL);
* a shard folds its own customers' facts, as it has just computed them, into partial rows
  tagged with the shard (:class:`Totals`), in the transaction of its facts; the final step
  adds the partials up (:func:`merge_partials`);
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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from nrr.db.bulk import bulk_insert
from nrr.domain.months import add_months, month_range
from nrr.logs import get_logger
from nrr.services.recompute.common import FACT_COLUMNS, T_FACTS
from nrr.services.segment_totals import (
    BASE_DIMENSIONS,
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



def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _add(sums: Sums, key: Key, values: Sequence[int], sign: int = 1) -> None:
    found = sums.get(key)
    if found is None:
        sums[key] = [sign * v for v in values]
    else:
        for index, value in enumerate(values):
            found[index] += sign * value


class Totals:
    """Segment totals folded in Python from fact rows in hand: the groups of
    :func:`aggregate`'s SQL (the totals' tests compare the documents of both with the
    facts' own). Rows are first summed by their finest key (every dimension at once: one
    dictionary update per fact) and rolled up per dimension once, in :attr:`sums`. Parts
    folded apart (a full run's chunks in worker processes) are added up with
    :meth:`merge`. Every metadata group is kept: the cap of distinct values applies when
    the run's totals are stored."""

    def __init__(self) -> None:
        # (month, movement, first paid, currency, plan, product, country, metadata):
        # [count, opening, closing, fx, paying at opening, paying at closing]
        self.monthly: dict[tuple[Any, ...], list[int]] = {}
        # (cohort month, currency, plan, product, country, metadata): [count, start, end,
        # fx, paying at the end, kept, expansion, contraction, churn, churned]
        self.cohorts: dict[tuple[Any, ...], list[int]] = {}

    def fold(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add fact rows (tuples in ``FACT_COLUMNS`` order). Every fact of a customer must
        come in the same call: a T12M cohort joins a customer's month to 11 months later."""
        rows = [_metadata_as_text(row) for row in rows]
        closing_at = {(r[_CUSTOMER], r[_MONTH]): r[_CLOSING] for r in rows}
        later: dict[str, str] = {}
        monthly, cohorts = self.monthly, self.cohorts
        # One unpacking per row (the columns in ``FACT_COLUMNS`` order, checked below).
        for (month, customer, opening, closing, movement, _amount, fx, first_paid, currency,
             plan, product, country, metadata, opening_t12m) in rows:
            opening, closing, fx = opening or 0, closing or 0, fx or 0
            key = (month, movement, first_paid, currency, plan, product, country, metadata)
            group = monthly.get(key)
            if group is None:
                monthly[key] = [1, opening, closing, fx, int(opening > 0), int(closing > 0)]
            else:
                group[0] += 1
                group[1] += opening
                group[2] += closing
                group[3] += fx
                if opening > 0:
                    group[4] += 1
                if closing > 0:
                    group[5] += 1
            if opening <= 0:
                continue
            # The T12M cohort of the month 11 months later, by the segment at its start.
            cohort_month = later.get(month)
            if cohort_month is None:
                cohort_month = later[month] = add_months(month, 11)
            start = opening if opening_t12m is None else opening_t12m
            end = closing_at.get((customer, cohort_month)) or 0
            cohort = (cohort_month, currency, plan, product, country, metadata)
            group = cohorts.get(cohort)
            if group is None:
                group = cohorts[cohort] = [0] * 10
            group[0] += 1
            group[1] += start
            group[2] += end
            group[3] += start - opening
            if end > 0:
                group[4] += 1
                if end < start:
                    group[5] += end
                    group[7] += start - end
                else:
                    group[5] += start
                    group[6] += end - start
            else:
                group[5] += min(end, start)
                if end == 0:
                    group[8] += start
                    group[9] += 1

    def merge(self, other: Totals) -> None:
        """Add a part folded apart (of other customers)."""
        for mine, theirs in ((self.monthly, other.monthly), (self.cohorts, other.cohorts)):
            for key, values in theirs.items():
                found = mine.get(key)
                if found is None:
                    mine[key] = list(values)
                else:
                    for index, value in enumerate(values):
                        found[index] += value

    @property
    def sums(self) -> Sums:
        """The groups per dimension (the keys and values of :func:`aggregate`)."""
        sums: Sums = {}
        segments: dict[Any, str | None] = {}
        for (month, movement, first_paid, currency, plan, product, country,
             metadata), values in self.monthly.items():
            _roll_up(sums, segments, ("monthly", month, movement),
                     (plan, product, currency, country, metadata), [*values, 0, 0, 0, 0, 0],
                     first_paid=first_paid)
        for (month, currency, plan, product, country, metadata), values in self.cohorts.items():
            count, start, end, fx, paying, *rest = values
            _roll_up(sums, segments, ("t12m", month, None),
                     (plan, product, currency, country, metadata),
                     [count, start, end, fx, 0, paying, *rest])
        return sums


def _roll_up(sums: Sums, segments: dict[Any, str | None],
             group: tuple[str, str, str | None], segment: Sequence[Any],
             numbers: list[int], *, first_paid: Any = None) -> None:
    """Add one fine group's ``numbers`` to its groups per dimension: ``group`` is (period,
    month, movement), ``segment`` (plan, product, currency, country, metadata); a monthly
    group also counts under its ``first_paid`` month."""
    period, month, movement = group
    plan, product, currency, country, metadata = segment
    _add(sums, (period, month, TOTAL, None, movement), numbers)
    for dimension, value in zip(BASE_DIMENSIONS, (plan, product, currency, country),
                                strict=True):
        _add(sums, (period, month, dimension, value, movement), numbers)
    if period == "monthly":
        _add(sums, (period, month, FIRST_PAID, first_paid, movement), numbers)
    _add(sums, (period, month, METADATA, _segment_of(segments, metadata), movement), numbers)


_FACT_INDEX = {name: index for index, name in enumerate(FACT_COLUMNS)}
_MONTH, _CUSTOMER, _CLOSING = (_FACT_INDEX[n] for n in ("month", "customer_id",
                                                         "closing_mrr_micro"))
_METADATA = _FACT_INDEX["metadata"]
# ``Totals.fold`` unpacks a fact row in this order.
assert FACT_COLUMNS == ["month", "customer_id", "opening_mrr_micro", "closing_mrr_micro",
                        "movement", "movement_micro", "fx_impact_micro", "first_paid_month",
                        "currency", "plan", "product", "country", "metadata",
                        "opening_t12m_micro"]


def _metadata_as_text(row: Sequence[Any]) -> Sequence[Any]:
    """A fact row whose metadata is JSON text (or None), as the totals group it."""
    metadata = row[_METADATA]
    if metadata is None or isinstance(metadata, str):
        return row
    return (*row[:_METADATA], json.dumps(metadata, sort_keys=True), *row[_METADATA + 1:])


def aggregate(session: Session, run_id: int) -> Sums:
    """Every group of run ``run_id``'s stored facts, per dimension: monthly by movement,
    and the T12M cohort of every month whose cohort start has facts."""
    f = T_FACTS.c
    sums: Sums = {}
    fine = [f.month, f.movement, f.plan, f.product, f.currency, f.country,
            f.first_paid_month, f["metadata"]]
    monthly_sums = [func.count(), func.sum(f.opening_mrr_micro), func.sum(f.closing_mrr_micro),
                    func.sum(f.fx_impact_micro), _count(f.opening_mrr_micro > 0),
                    _count(f.closing_mrr_micro > 0)]
    first_month: str | None = None
    last_month: str | None = None
    segments: dict[Any, str | None] = {}
    monthly = select(*fine, *monthly_sums).where(f.run_id == run_id).group_by(*fine)
    for (month, movement, plan, product, currency, country, first_paid, metadata,
         *values) in session.execute(monthly):
        first_month = month if first_month is None else min(first_month, month)
        last_month = month if last_month is None else max(last_month, month)
        _roll_up(sums, segments, ("monthly", month, movement),
                 (plan, product, currency, country, metadata),
                 [_int(v) for v in values] + [0] * 5, first_paid=first_paid)
    if first_month is None or last_month is None:
        return sums
    for month in month_range(add_months(first_month, 11), add_months(last_month, 11)):
        _cohorts(session, run_id, month, sums, segments)
    return sums


def _segment_of(cache: dict[Any, str | None], metadata: Any) -> str | None:
    key = metadata if isinstance(metadata, str | None) else json.dumps(metadata, sort_keys=True)
    if key not in cache:
        cache[key] = metadata_segment(metadata)
    return cache[key]


def _cohorts(session: Session, run_id: int, month: str, sums: Sums,
             segments: dict[Any, str | None]) -> None:
    """The T12M cohort of ``month`` (the report's ``cohort_totals``, grouped finely)."""
    start_month = add_months(month, -11)
    start = T_FACTS.alias("cohort_start")
    end = T_FACTS.alias("cohort_end")
    own_rate_opening = start.c.opening_mrr_micro
    opening = func.coalesce(start.c.opening_t12m_micro, own_rate_opening)
    closing = func.coalesce(end.c.closing_mrr_micro, 0)
    fine = [start.c.plan, start.c.product, start.c.currency, start.c.country,
            start.c["metadata"]]
    columns = [
        func.count(), func.sum(opening), func.sum(closing), func.sum(opening - own_rate_opening),
        _count(closing > 0),
        func.sum(case((closing < opening, closing), else_=opening)),
        func.sum(case((closing > opening, closing - opening), else_=0)),
        func.sum(case((and_(closing > 0, closing < opening), opening - closing), else_=0)),
        func.sum(case((closing == 0, opening), else_=0)),
        _count(closing == 0),
    ]
    cohorts = (
        select(*fine, *columns)
        .select_from(start.outerjoin(end, and_(end.c.run_id == run_id,
                                               end.c.customer_id == start.c.customer_id,
                                               end.c.month == month)))
        .where(start.c.run_id == run_id, start.c.month == start_month, own_rate_opening > 0)
        .group_by(*fine))
    for plan, product, currency, country, metadata, *found in session.execute(cohorts):
        count, open_, close, fx, paying, kept, expansion, contraction, churn, churned = (
            _int(v) for v in found)
        _roll_up(sums, segments, ("t12m", month, None),
                 (plan, product, currency, country, metadata),
                 [count, open_, close, fx, 0, paying, kept, expansion, contraction, churn,
                  churned])


# --------------------------------------------------------------------------- storing


def _dimensions(sums: Sums) -> list[str]:
    metadata = {key[3] for key in sums if key[2] == METADATA}
    if len(metadata) > MAX_METADATA_SEGMENTS:
        log.info("totals.metadata_left_out", segments=len(metadata),
                 reason=f"more than {MAX_METADATA_SEGMENTS} distinct metadata objects")
        return [d for d in DIMENSIONS if d != METADATA]
    return list(DIMENSIONS)


def _insert(session: Session, run_id: int, sums: Sums, dimensions: Iterable[str],
            shard: int | None = None) -> int:
    kept = set(dimensions)
    # Through the driver (COPY on PostgreSQL): a shard writes thousands of groups.
    return bulk_insert(session, T_TOTALS, ["run_id", "shard", *KEY, *VALUES],
                       [(run_id, shard, *key, *values) for key, values in sums.items()
                        if key[2] in kept and values[0]])


def _mark_built(session: Session, run_id: int, dimensions: list[str]) -> None:
    session.execute(delete(T_BUILT).where(T_BUILT.c.run_id == run_id))
    session.execute(T_BUILT.insert().values(run_id=run_id, dimensions=dimensions,
                                            built_at=datetime.now(UTC)))


def build(session: Session, run_id: int, folded: Totals | None = None) -> int:
    """(Re)write every total of run ``run_id`` from its facts, aggregated in SQL or
    ``folded`` from every one of them in hand; returns the rows written."""
    session.execute(delete(T_TOTALS).where(T_TOTALS.c.run_id == run_id),
                    execution_options={"synchronize_session": False})
    sums = aggregate(session, run_id) if folded is None else folded.sums
    dimensions = _dimensions(sums)
    written = _insert(session, run_id, sums, dimensions)
    _mark_built(session, run_id, dimensions)
    return written


def write_partial_from(session: Session, run_id: int, shard: int, found: Totals) -> int:
    """A shard's totals folded from the facts it has just computed, tagged with the shard
    (no read back: on PostgreSQL a shard's aggregation of its new facts dominated it)."""
    session.execute(delete(T_TOTALS).where(T_TOTALS.c.run_id == run_id,
                                           T_TOTALS.c.shard == shard),
                    execution_options={"synchronize_session": False})
    return _insert(session, run_id, found.sums, DIMENSIONS, shard=shard)


def _stored(session: Session, condition: ColumnElement[bool]) -> Sums:
    sums: Sums = {}
    columns = [T_TOTALS.c[name] for name in (*KEY, *VALUES)]
    for row in session.execute(select(*columns).where(condition)):
        _add(sums, tuple(row[:len(KEY)]), [_int(v) for v in row[len(KEY):]])  # type: ignore[arg-type]
    return sums


def merge_partials(session: Session, run_id: int) -> int:
    """The final step of a sharded run: add the shards' partial totals up into the run's."""
    sums = _stored(session, and_(T_TOTALS.c.run_id == run_id, T_TOTALS.c.shard.is_not(None)))
    session.execute(delete(T_TOTALS).where(T_TOTALS.c.run_id == run_id),
                    execution_options={"synchronize_session": False})
    dimensions = _dimensions(sums)
    written = _insert(session, run_id, sums, dimensions)
    _mark_built(session, run_id, dimensions)
    return written


def change_applies(session: Session, run_id: int, ids: Sequence[str]) -> bool:
    """Can an incremental run of ``ids`` apply a difference to the stored totals (else
    they are rebuilt: too many customers, or totals never built for this run)?"""
    return (len(ids) <= MAX_CHANGE_CUSTOMERS
            and built_dimensions(session, run_id) is not None)


def apply_change(session: Session, run_id: int, before: Totals | None,
                 after: Totals | None) -> None:
    """After an incremental run rewrote some customers' facts: the stored totals of the
    months whose groups changed get the difference between their facts ``after`` and
    ``before`` (folded from every fact of those customers), or everything is rebuilt when
    there is no difference to apply (:func:`change_applies`)."""
    dimensions = built_dimensions(session, run_id)
    if before is None or after is None or dimensions is None:
        build(session, run_id)
        return
    change: Sums = {}
    for key, values in after.sums.items():
        _add(change, key, values)
    for key, values in before.sums.items():
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

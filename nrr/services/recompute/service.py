"""The recompute service: a full rebuild or an incremental one of given customers, run
through the load, compute, write and pool steps. The service never commits: the caller's
``nrr.db.session_scope`` does."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.derived import RecomputeRun
from models.live_rows import live_run_id
from nrr.db.statements import in_chunks
from nrr.domain import movements as domain_movements
from nrr.domain.movements import FactorLookup
from nrr.domain.records import CustomerData
from nrr.logs import get_logger
from nrr.services.fx import RateBook, load_rate_book
from nrr.services.isolation import LeftOut, record_left_out
from nrr.services.recompute import common, due, totals
from nrr.services.recompute.common import (
    FACT_COLUMNS,
    LEDGER_COLUMNS,
    T_CUSTOMERS,
    T_DIRTY,
    T_FACTS,
    T_LEDGER,
    T_SUBSCRIPTIONS,
    T_TIMELINE,
    TIMELINE_COLUMNS,
    RecomputeResult,
    add_seconds,
    timed,
)
from nrr.services.recompute.compute import compute_batch
from nrr.services.recompute.load import Catalogue, iter_customer_data, load_catalogue
from nrr.services.recompute.pool import parallel_chunks, parallel_workers, start_pool
from nrr.services.recompute.runs import (
    clear_dirty,
    drop_other_runs,
    live_run,
    new_run,
    switch_to,
)
from nrr.services.recompute.write import (
    analyze_derived,
    delete_customers,
    insert_rows,
    keep_changed_facts,
    record_skips,
    sqlite_bulk_pragmas,
    sqlite_pragma,
)
from nrr.settings import Settings

log = get_logger(__name__)

# An incremental run of at most this many customers keeps their records for the outlook.
KEEP_LOADED_CUSTOMERS = 10_000


def account_mode(session: Session, settings: Settings) -> bool:
    """The key's mode; without a key, the mode most stored customers are in."""
    mode = settings.stripe_livemode
    if mode is not None:
        return mode
    counts = {bool(m): int(n) for m, n in session.execute(
        select(T_CUSTOMERS.c.livemode, func.count()).group_by(T_CUSTOMERS.c.livemode))}
    return counts.get(True, 0) > counts.get(False, 0)


def customer_ids_of(session: Session, livemode: bool, start: str = "",
                    end: str | None = None) -> list[str]:
    """Every customer of the mode that has a customer row or a subscription (sorted, in
    Python's order), or only those from ``start`` (inclusive) to ``end`` (exclusive)."""
    customers: Any = T_CUSTOMERS.c.id
    subscriptions: Any = T_SUBSCRIPTIONS.c.customer_id
    if session.get_bind().dialect.name == "postgresql":
        # Python's (code point) order, not the database collation's.
        customers, subscriptions = customers.collate("C"), subscriptions.collate("C")
    query_customers = select(T_CUSTOMERS.c.id).where(T_CUSTOMERS.c.livemode == livemode)
    query_subscriptions = (select(T_SUBSCRIPTIONS.c.customer_id)
                           .where(T_SUBSCRIPTIONS.c.livemode == livemode).distinct())
    if start:
        query_customers = query_customers.where(customers >= start)
        query_subscriptions = query_subscriptions.where(subscriptions >= start)
    if end is not None:
        query_customers = query_customers.where(customers < end)
        query_subscriptions = query_subscriptions.where(subscriptions < end)
    ids = set(session.scalars(query_customers))
    ids.update(session.scalars(query_subscriptions))
    return sorted(ids)


@dataclass
class Context:
    """What computing any customer of one run needs, read once per run (or shard)."""

    settings: Settings
    livemode: bool
    now_ts: int
    catalogue: Catalogue
    rates: RateBook
    factor: FactorLookup


def prepare(session: Session, settings: Settings, now_ts: int,
            livemode: bool | None = None) -> Context:
    mode = account_mode(session, settings) if livemode is None else livemode
    rates = load_rate_book(session, settings.reporting_currency)
    return Context(settings, mode, now_ts, load_catalogue(session, mode), rates,
                   domain_movements.factor_lookup(rates.rate,
                                                  settings.reporting_currency.lower()))


class RowBuffer:
    """Timeline, ledger and fact rows of one run, written in bulk every ``FLUSH_ROWS``
    facts (and at the end)."""

    def __init__(self, session: Session, run_id: int, result: RecomputeResult,
                 flush_rows: int | None = None) -> None:
        self.session, self.run_id, self.result = session, run_id, result
        self.flush_rows = common.FLUSH_ROWS if flush_rows is None else flush_rows
        self.timeline: list[tuple[Any, ...]] = []
        self.ledger: list[tuple[Any, ...]] = []
        self.facts: list[tuple[Any, ...]] = []

    def full(self) -> bool:
        return len(self.facts) >= self.flush_rows

    def flush(self) -> None:
        clock = time.perf_counter()
        # The rows come in customer order, each customer's months in order: sorting them by
        # the primary key (month first) first cost more than it saved the b-tree.
        session, run_id, result = self.session, self.run_id, self.result
        result.timeline_points += insert_rows(session, T_TIMELINE, TIMELINE_COLUMNS,
                                              self.timeline, run_id)
        result.ledger_entries += insert_rows(session, T_LEDGER, LEDGER_COLUMNS, self.ledger,
                                             run_id)
        result.facts += insert_rows(session, T_FACTS, FACT_COLUMNS, self.facts, run_id)
        self.timeline.clear()
        self.ledger.clear()
        self.facts.clear()
        add_seconds(result.timings, "write", clock)


def compute_customers(session: Session, ctx: Context, ids: Sequence[str],
                      result: RecomputeResult, rows: RowBuffer, *,
                      every_customer: bool = False, span: bool = False,
                      on_chunk: Any = None, folded: totals.Totals | None = None,
                      loaded: dict[str, CustomerData] | None = None) -> None:
    """Load and compute the customers ``ids`` (sorted) chunk by chunk into ``rows``.

    ``every_customer``: the queries stream whole tables (``ids`` is every customer);
    ``span``: each chunk reads one id range (SQLite); otherwise each chunk lists its ids.
    ``on_chunk(ids, first_fact)`` runs after each chunk is computed (before a flush).
    ``folded`` gets the segment totals of the facts computed, ``loaded`` the customers'
    records (those it could read)."""
    groups = [ids] if every_customer else list(in_chunks(ids, common.CHUNK))
    for group in groups:
        first_fact = len(rows.facts)
        batch: dict[str, CustomerData | LeftOut] = {}
        stream = timed(iter_customer_data(session, group, ctx.catalogue, ctx.livemode,
                                          every_customer=every_customer, span=span),
                       result.timings, "load")
        for cid, data, lines_read in stream:
            result.lines_read += lines_read
            batch[cid] = data
            if loaded is not None and isinstance(data, CustomerData):
                loaded[cid] = data
            if len(batch) >= common.CHUNK:
                _compute(session, ctx, batch, result, rows, folded)
                batch = {}
                if every_customer and rows.full():
                    rows.flush()
        _compute(session, ctx, batch, result, rows, folded)
        if on_chunk is not None:
            on_chunk(group, first_fact)
        if rows.full():
            rows.flush()


def _compute(session: Session, ctx: Context, batch: dict[str, CustomerData | LeftOut],
             result: RecomputeResult, rows: RowBuffer,
             folded: totals.Totals | None = None) -> None:
    first_fact = len(rows.facts)
    compute_batch(session, batch, ctx.settings, ctx.rates, ctx.now_ts, ctx.catalogue, result,
                  rows.timeline, rows.ledger, rows.facts, ctx.factor)
    if folded is not None:
        clock = time.perf_counter()
        folded.fold(rows.facts[first_fact:])  # every fact of the batch's customers
        add_seconds(result.timings, "totals", clock)


def recompute(session: Session, settings: Settings, *, customer_ids: Iterable[str] | None = None,
              now: datetime | None = None) -> RecomputeResult:
    """Rebuild derived rows for all customers (``customer_ids`` None) or the given ones.

    A full recompute writes a new run beside the live one and switches readers to it
    (``runs``); an incremental one rewrites the given customers' rows of the live run,
    and those of the customers whose rows passing time made stale (``due``: a scheduled
    change that took effect since the live rows' instant). When a month closed since
    that instant, every customer is due: the recompute is a full one."""
    if customer_ids is None:
        return _full(session, settings, now)
    now = now or datetime.now(UTC)
    stale = due.due_since(session, settings, int(now.timestamp()))
    if stale.new_month:
        log.info("recompute.new_month", since=stale.watermark,
                 detail="a month closed since the live rows were computed: full recompute")
        return _full(session, settings, now)
    ids = {c for c in customer_ids if c} | stale.customer_ids
    if stale.customer_ids:
        log.info("recompute.due", customers=len(stale.customer_ids), since=stale.watermark)
    return _incremental(session, settings, sorted(ids), now)


def _incremental(session: Session, settings: Settings, ids: list[str],
                 now: datetime | None) -> RecomputeResult:
    started = time.perf_counter()
    result = RecomputeResult(kind="incremental")
    run = new_run(session, settings, "incremental")
    result.run_id = run.id
    ctx = prepare(session, settings, int((now or datetime.now(UTC)).timestamp()))
    result.livemode = ctx.livemode
    result.skips.extend(ctx.catalogue.skips)
    live = live_run_id(session)
    # The segment totals get the difference of these customers' groups (``totals``),
    # folded from their stored facts as the diff reads them and from their new ones.
    before, after = ((totals.Totals(), totals.Totals())
                     if totals.change_applies(session, live, ids) else (None, None))
    # Facts are diffed against the stored ones per chunk (``keep_changed_facts``): a change
    # rewrites a few recent months, not a customer's whole history.
    delete_customers(session, live, ids, tables=(T_TIMELINE, T_LEDGER))
    rows = RowBuffer(session, live, result)

    def keep_changed(group: Sequence[str], first_fact: int) -> None:
        clock = time.perf_counter()
        if after is not None:
            after.fold(rows.facts[first_fact:])  # every new fact of the chunk's customers
        fresh = keep_changed_facts(session, live, group, rows.facts[first_fact:],
                                   stored_into=before)
        result.facts += len(rows.facts) - first_fact - len(fresh)  # stored, unchanged
        rows.facts[first_fact:] = fresh
        add_seconds(result.timings, "write", clock)

    # Read once, the outlook takes them too (unless so many that they are better read again
    # chunk by chunk than held).
    loaded: dict[str, CustomerData] | None = {} if len(ids) <= KEEP_LOADED_CUSTOMERS else None
    compute_customers(session, ctx, ids, result, rows, on_chunk=keep_changed, loaded=loaded)
    rows.flush()
    clock = time.perf_counter()
    totals.apply_change(session, live, before, after)
    add_seconds(result.timings, "totals", clock)
    refresh_outlook_after(session, ctx, run, result, ids, loaded)
    finish_run(session, run, result, started, customer_ids=ids)
    clear_dirty(session, run, ids)
    return result


def _full(session: Session, settings: Settings, now: datetime | None) -> RecomputeResult:
    started = time.perf_counter()
    result = RecomputeResult(kind="full")
    restore_pragmas = sqlite_bulk_pragmas(session)
    ctx = prepare(session, settings, int((now or datetime.now(UTC)).timestamp()))
    result.livemode = ctx.livemode
    result.skips.extend(ctx.catalogue.skips)
    ids = customer_ids_of(session, ctx.livemode)

    workers = parallel_workers(session, settings, len(ids))
    pool = (start_pool(session, workers, settings, ctx.catalogue, ctx.rates, ctx.livemode,
                       ctx.now_ts) if workers else None)
    # Worker processes read and compute chunks of customers (in order) and fold their
    # segment totals; this process only writes, so the database work overlaps the domain
    # work. They start now: the previous run's rows are deleted while they compute.
    parts = parallel_chunks(pool, ids, result) if pool is not None else None
    try:
        clock = time.perf_counter()
        drop_other_runs(session, keep=live_run(session).run_id)
        add_seconds(result.timings, "drop", clock)
        run = new_run(session, settings, "full")
        result.run_id = run.id
        rows = RowBuffer(session, run.id, result)
        # The segment totals, folded from the facts as they are computed (``totals``).
        folded = totals.Totals()
        if parts is not None:
            for part, t_rows, l_rows, f_rows, found in parts:
                result.add(part)
                folded.merge(found)
                rows.timeline.extend(t_rows)
                rows.ledger.extend(l_rows)
                rows.facts.extend(f_rows)
                if rows.full():
                    rows.flush()
        else:
            # One pass over whole tables, streamed in customer order.
            compute_customers(session, ctx, ids, result, rows, every_customer=True,
                              folded=folded)
    finally:
        if pool is not None:  # the pool goes, whether or not every chunk was taken
            pool.terminate()
            pool.join()
    rows.flush()
    for statement in restore_pragmas:
        sqlite_pragma(session, statement)
    analyze_derived(session)
    clock = time.perf_counter()
    totals.build(session, run.id, folded)
    add_seconds(result.timings, "totals", clock)
    record_skips(session, result.skips)
    switch_to(session, run)
    # After the switch: the outlook reads this run's facts (segments at the opening).
    refresh_outlook_after(session, ctx, run, result, None)
    finish_run(session, run, result, started)
    clear_dirty(session, run, None)
    return result


def refresh_outlook_after(session: Session, ctx: Context, run: RecomputeRun,
                          result: RecomputeResult, ids: Sequence[str] | None,
                          loaded: dict[str, CustomerData] | None = None) -> None:
    """The outlook (the months ahead) from the history just written (all customers when
    ``ids`` is None; ``loaded``: their records as this recompute read them)."""
    from nrr.services.outlook import refresh_outlook

    outlook = refresh_outlook(session, ctx.settings, now=ctx.now_ts, livemode=ctx.livemode,
                              catalogue=ctx.catalogue, rates=ctx.rates, customer_ids=ids,
                              recompute_run_id=run.id, loaded=loaded)
    result.timings["outlook"] = result.timings.get("outlook", 0.0) + outlook.seconds
    result.skips.extend(outlook.skips)


def finish_run(session: Session, run: RecomputeRun, result: RecomputeResult,
            started: float, *, customer_ids: Sequence[str] | None = None) -> None:
    """Close ``run``; ``customer_ids`` None: a full run (its left-out list replaces the
    stored one), else the customers an incremental run recomputed."""
    result.skipped = len(result.skips)
    for skip in result.skips[:50]:
        log.warning("recompute.skipped", object_type=skip.object_type, object_id=skip.object_id,
                    reason=skip.reason)
    for left in result.left_out[:50]:
        log.warning("recompute.customer_left_out", customer_id=left.customer_id, stage=left.stage,
                    reason=left.reason)
    record_left_out(session, result.left_out, customer_ids=customer_ids, run_id=run.id)
    session.execute(update(RecomputeRun).where(RecomputeRun.id == run.id).values(
        finished_at=datetime.now(UTC),
        customers=result.customers - result.excluded - len(result.left_out),
        skipped=result.skipped), execution_options={"synchronize_session": False})
    result.seconds = time.perf_counter() - started
    log.info("recompute.finished", **result.as_dict())


def recompute_dirty(session: Session, settings: Settings, *,
                    now: datetime | None = None) -> RecomputeResult:
    """Recompute the customers marked in ``dirty_customers``, then clear them."""
    ids = list(session.scalars(select(T_DIRTY.c.customer_id).order_by(T_DIRTY.c.customer_id)))
    return recompute(session, settings, customer_ids=ids, now=now)



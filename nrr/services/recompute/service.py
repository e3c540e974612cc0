"""The recompute service: a full rebuild or an incremental one of given customers, run
through the load, compute, write and pool steps. The service never commits: the caller's
``nrr.db.session_scope`` does."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models.derived import RecomputeRun
from nrr.domain import movements as domain_movements
from nrr.domain.records import CustomerData
from nrr.logs import get_logger
from nrr.services.fx import load_rate_book
from nrr.services.recompute import common
from nrr.services.recompute.common import (
    FACT_COLUMNS,
    FLUSH_ROWS,
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
    chunks,
    timed,
)
from nrr.services.recompute.compute import compute_batch
from nrr.services.recompute.load import iter_customer_data, load_catalogue
from nrr.services.recompute.pool import parallel_chunks, parallel_workers, start_pool
from nrr.services.recompute.write import (
    empty_derived,
    fact_key,
    insert_rows,
    keep_changed_facts,
    record_skips,
    restore_indexes,
    sqlite_bulk_pragmas,
    sqlite_pragma,
)
from nrr.settings import Settings

log = get_logger(__name__)


def _mode(session: Session, settings: Settings) -> bool:
    """The key's mode; without a key, the mode most stored customers are in."""
    mode = settings.stripe_livemode
    if mode is not None:
        return mode
    counts = {bool(m): int(n) for m, n in session.execute(
        select(T_CUSTOMERS.c.livemode, func.count()).group_by(T_CUSTOMERS.c.livemode))}
    return counts.get(True, 0) > counts.get(False, 0)

def _customer_ids(session: Session, livemode: bool) -> list[str]:
    """Every customer of the mode that has a customer row or a subscription (sorted)."""
    ids = set(session.scalars(select(T_CUSTOMERS.c.id).where(T_CUSTOMERS.c.livemode == livemode)))
    ids.update(session.scalars(select(T_SUBSCRIPTIONS.c.customer_id)
                               .where(T_SUBSCRIPTIONS.c.livemode == livemode).distinct()))
    return sorted(ids)


def recompute(session: Session, settings: Settings, *, customer_ids: Iterable[str] | None = None,
              now: datetime | None = None) -> RecomputeResult:
    """Rebuild derived rows for all customers (``customer_ids`` None) or the given ones."""
    started = time.perf_counter()
    moment = now or datetime.now(UTC)
    now_ts = int(moment.timestamp())
    full = customer_ids is None
    result = RecomputeResult(kind="full" if full else "incremental")
    livemode = _mode(session, settings)
    result.livemode = livemode
    run = RecomputeRun(kind=result.kind, started_at=datetime.now(UTC),
                       policies=settings.policies.as_dict(),
                       reporting_currency=settings.reporting_currency,
                       timezone=settings.timezone)
    session.add(run)
    session.flush()
    result.run_id = run.id

    catalogue = load_catalogue(session, livemode)
    rates = load_rate_book(session, settings.reporting_currency)
    factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    result.skips.extend(catalogue.skips)

    restore_pragmas = sqlite_bulk_pragmas(session) if full else []
    dropped_indexes: list[Any] = []
    if full:
        ids = _customer_ids(session, livemode)
        dropped_indexes = empty_derived(session)
    else:
        ids = sorted({c for c in customer_ids or () if c})
        # Facts are diffed against the stored ones per chunk (``keep_changed_facts``): a
        # change rewrites a few recent months, not a customer's whole history.
        for chunk in chunks(ids, common.CHUNK):
            for table in (T_TIMELINE, T_LEDGER):
                session.execute(delete(table).where(table.c.customer_id.in_(list(chunk))),
                                execution_options={"synchronize_session": False})

    timeline: list[tuple[Any, ...]] = []
    ledger: list[tuple[Any, ...]] = []
    facts: list[tuple[Any, ...]] = []

    def flush() -> None:
        clock = time.perf_counter()
        # Rows in primary-key order append to the b-tree instead of splitting pages all over.
        facts.sort(key=fact_key)
        result.timeline_points += insert_rows(session, T_TIMELINE, TIMELINE_COLUMNS, timeline)
        result.ledger_entries += insert_rows(session, T_LEDGER, LEDGER_COLUMNS, ledger)
        result.facts += insert_rows(session, T_FACTS, FACT_COLUMNS, facts)
        timeline.clear()
        ledger.clear()
        facts.clear()
        add_seconds(result.timings, "write", clock)

    workers = parallel_workers(session, settings, len(ids)) if full else 0
    pool = (start_pool(session, workers, settings, catalogue, rates, livemode, now_ts)
            if workers else None)
    if pool is not None:
        # Worker processes read and compute chunks of customers (in order); this process
        # only writes, so the database work overlaps the domain work.
        for part, t_rows, l_rows, f_rows in parallel_chunks(pool, ids, result):
            result.customers += part.customers
            result.excluded += part.excluded
            result.lines_read += part.lines_read
            result.skips.extend(part.skips)
            for key, seconds in part.timings.items():
                result.timings[key] = result.timings.get(key, 0.0) + seconds
            timeline.extend(t_rows)
            ledger.extend(l_rows)
            facts.extend(f_rows)
            if len(facts) >= FLUSH_ROWS:
                flush()
    # A full recompute streams whole tables once; an incremental one asks for its customers.
    groups = [] if pool is not None else [ids] if full else list(chunks(ids, common.CHUNK))
    for group in groups:
        first_fact = len(facts)
        batch: dict[str, CustomerData] = {}
        stream = timed(iter_customer_data(session, group, catalogue, livemode,
                                           every_customer=full), result.timings, "load")
        for cid, data, lines_read in stream:
            result.lines_read += lines_read
            batch[cid] = data
            if len(batch) >= common.CHUNK:
                compute_batch(session, batch, settings, rates, now_ts, catalogue, result,
                               timeline, ledger, facts, factor)
                batch = {}
                if len(facts) >= FLUSH_ROWS:
                    flush()
        compute_batch(session, batch, settings, rates, now_ts, catalogue, result, timeline,
                       ledger, facts, factor)
        if not full:
            clock = time.perf_counter()
            fresh = keep_changed_facts(session, group, facts[first_fact:])
            result.facts += len(facts) - first_fact - len(fresh)  # stored already, unchanged
            facts[first_fact:] = fresh
            add_seconds(result.timings, "write", clock)
    flush()
    clock = time.perf_counter()
    restore_indexes(session, dropped_indexes)
    for statement in restore_pragmas:
        sqlite_pragma(session, statement)
    add_seconds(result.timings, "write", clock)

    result.skipped = len(result.skips)
    for skip in result.skips[:50]:
        log.warning("recompute.skipped", object_type=skip.object_type, object_id=skip.object_id,
                    reason=skip.reason)
    if full:
        record_skips(session, result.skips)
    session.execute(update(RecomputeRun).where(RecomputeRun.id == run.id).values(
        finished_at=datetime.now(UTC), customers=result.customers - result.excluded,
        skipped=result.skipped), execution_options={"synchronize_session": False})
    # Marks made while this run read the mirror stay for the next run.
    if full:
        session.execute(delete(T_DIRTY).where(T_DIRTY.c.marked_at <= run.started_at),
                        execution_options={"synchronize_session": False})
    else:
        for chunk in chunks(ids, common.CHUNK):
            session.execute(delete(T_DIRTY).where(T_DIRTY.c.marked_at <= run.started_at,
                                                  T_DIRTY.c.customer_id.in_(list(chunk))),
                            execution_options={"synchronize_session": False})
    result.seconds = time.perf_counter() - started
    log.info("recompute.finished", **result.as_dict())
    return result


def recompute_dirty(session: Session, settings: Settings, *,
                    now: datetime | None = None) -> RecomputeResult:
    """Recompute the customers marked in ``dirty_customers``, then clear them."""
    ids = list(session.scalars(select(T_DIRTY.c.customer_id).order_by(T_DIRTY.c.customer_id)))
    return recompute(session, settings, customer_ids=ids, now=now)



"""Process pool: a full recompute's chunks of customers read and computed in worker
processes while the calling process writes them, in customer order."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from nrr.db.statements import in_chunks
from nrr.domain import movements as domain_movements
from nrr.domain.records import CustomerData
from nrr.logs import get_logger
from nrr.services.fx import RateBook
from nrr.services.isolation import LeftOut
from nrr.services.recompute import common, totals
from nrr.services.recompute.common import RecomputeResult, add_seconds, timed
from nrr.services.recompute.compute import compute_batch
from nrr.services.recompute.load import Catalogue, iter_customer_data
from nrr.settings import Settings

log = get_logger(__name__)

# A full recompute of at least this many customers runs the reading and the domain work
# in worker processes (``NRR_RECOMPUTE_WORKERS`` sets their number; 0 or 1 turns it off).
PARALLEL_MIN_CUSTOMERS = 5_000
MAX_WORKERS = 4


def parallel_workers(session: Session, settings: Settings, customers: int) -> int:
    """How many worker processes a full recompute of ``customers`` uses (0: none)."""
    if settings.recompute_workers is not None:
        workers = settings.recompute_workers
    elif customers < PARALLEL_MIN_CUSTOMERS:
        return 0
    else:
        workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)))
    if workers < 2:
        return 0
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return 0  # another process cannot see an in-memory database
    return workers


def start_pool(session: Session, workers: int, settings: Settings, catalogue: Catalogue,
                rates: RateBook, livemode: bool, now_ts: int) -> Any | None:
    """A pool of ``workers`` fresh processes set up for :func:`_worker_chunk`, or None when
    this process cannot start children (then the recompute runs here)."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return None  # a daemonic process may not have children
    url = session.get_bind().engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")  # no inherited connections or locks
    try:
        return context.Pool(workers, initializer=_worker_init,
                            initargs=(url, settings, catalogue, rates, livemode, now_ts))
    except (AssertionError, OSError) as exc:
        log.warning("recompute.parallel_unavailable", error=str(exc))
        return None


Part = tuple[RecomputeResult, list[tuple[Any, ...]], list[tuple[Any, ...]],
             list[tuple[Any, ...]], totals.Totals]


def parallel_chunks(pool: Any, ids: Sequence[str], result: RecomputeResult
                     ) -> Iterator[Part]:
    """The rows of ``ids`` computed by the ``pool``'s processes, chunk by chunk in id order
    (result, timeline, ledger and fact rows, and the segment totals folded from the facts).

    The workers start at once (the caller may do its own work before it takes the first
    chunk). They open their own connections and read only the mirror (committed data: on
    SQLite in WAL mode and on PostgreSQL a reader is not blocked by this transaction).
    The caller owns the pool: it terminates it when done, or on an error."""
    parts = pool.imap(_worker_chunk, [list(chunk) for chunk in in_chunks(ids, common.CHUNK)])
    return _waited_for(parts, result)


def _waited_for(parts: Iterator[Part], result: RecomputeResult) -> Iterator[Part]:
    """``parts`` as they come, the time spent waiting for each added to ``result``."""
    while True:
        clock = time.perf_counter()
        part = next(parts, None)
        add_seconds(result.timings, "wait", clock)
        if part is None:
            return
        yield part


_WORKER: dict[str, Any] = {}


def _worker_init(url: str, settings: Settings, catalogue: Catalogue, rates: RateBook,
                 livemode: bool, now_ts: int) -> None:
    from nrr.db import make_engine

    _WORKER.update(engine=make_engine(url), settings=settings, catalogue=catalogue,
                   rates=rates, livemode=livemode, now_ts=now_ts,
                   factor=domain_movements.factor_lookup(
                       rates.rate, settings.reporting_currency.lower()))


def _worker_chunk(ids: list[str]) -> Part:
    """One chunk of customers read and computed in a worker (rows in the column orders),
    with its part of the segment totals (a dictionary update per fact here saves the
    calling process an aggregation of every fact after the load)."""
    w = _WORKER
    part = RecomputeResult(kind="chunk")
    timeline: list[tuple[Any, ...]] = []
    ledger: list[tuple[Any, ...]] = []
    facts: list[tuple[Any, ...]] = []
    with Session(bind=w["engine"]) as session:
        batch: dict[str, CustomerData | LeftOut] = {}
        # SQLite walks one index range per chunk; PostgreSQL's ids sort in "C" order
        # while its columns compare in the database's collation: a list of ids there.
        span = session.get_bind().dialect.name == "sqlite"
        for cid, data, lines_read in timed(iter_customer_data(
                session, ids, w["catalogue"], w["livemode"], span=span), part.timings, "load"):
            part.lines_read += lines_read
            batch[cid] = data
        compute_batch(session, batch, w["settings"], w["rates"], w["now_ts"], w["catalogue"],
                       part, timeline, ledger, facts, w["factor"])
        session.rollback()
    clock = time.perf_counter()
    found = totals.Totals()
    found.fold(facts)
    add_seconds(part.timings, "totals", clock)
    part.worker_peak_rss_kib = common.peak_rss_kib()
    return part, timeline, ledger, facts, found


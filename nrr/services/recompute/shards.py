"""Shards: a full recompute split into customer ranges that separate processes (Celery
workers on any machine) load, compute and write into the new run, each in its own
transaction; a final step checks that every shard finished and switches readers.

A shard is idempotent: its rows and its ``finished_at`` are committed together, a second
attempt of a finished shard does nothing, and two attempts at once are serialised by the
claim of the shard row (the later one finds it finished). A lost shard (its worker killed)
left nothing; it is redone, never doubled. Memory is bounded by the shard's size: the
mirror is streamed chunk by chunk for the shard's customers only.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.derived import RecomputeRun, RecomputeShard
from nrr.domain.records import Skip
from nrr.logs import get_logger
from nrr.services.isolation import LeftOut
from nrr.services.recompute import runs, totals
from nrr.services.recompute.common import (
    T_FACTS,
    T_LEDGER,
    T_TIMELINE,
    RecomputeError,
    RecomputeResult,
)
from nrr.services.recompute.service import (
    RowBuffer,
    account_mode,
    compute_customers,
    customer_ids_of,
    finish_run,
    prepare,
    refresh_outlook_after,
)
from nrr.services.recompute.write import analyze_derived, delete_customers, record_skips
from nrr.settings import Settings

log = get_logger(__name__)

# Customers per shard: small enough that a shard's rows fit comfortably in a worker's
# memory (about 40 MB at 36 months), large enough that per-shard set-up is noise.
SHARD_CUSTOMERS = 5_000


@dataclass(frozen=True)
class ShardedRun:
    run_id: int
    shards: list[int]
    now_ts: int


def start(session: Session, settings: Settings, *, now: datetime | None = None,
          shard_customers: int | None = None, minimum_shards: int = 1) -> ShardedRun | None:
    """Create a building full run and its shards (customer ranges); the caller commits,
    then sends one task per shard. None when the account makes fewer than
    ``minimum_shards`` shards or another full run is being built."""
    size = max(1, shard_customers or settings.recompute_shard_customers or SHARD_CUSTOMERS)
    ids = customer_ids_of(session, account_mode(session, settings))
    # Each shard starts at a customer id and ends where the next starts: together they
    # cover every id, also one stored after this plan.
    starts = [""] + [ids[k] for k in range(size, len(ids), size)]
    if len(starts) < minimum_shards:
        return None
    if runs.building_since(session) is not None:
        log.info("recompute.sharded_skipped", reason="a full recompute is being built")
        return None
    live = runs.live_run(session).run_id
    runs.drop_other_runs(session, keep=live)
    run = runs.new_run(session, settings, "full")
    shard_rows = [RecomputeShard(run_id=run.id, shard=number, from_customer=first,
                                 to_customer=starts[number + 1] if number + 1 < len(starts)
                                 else None, customers=0, attempts=0)
                  for number, first in enumerate(starts)]
    session.add_all(shard_rows)
    session.execute(update(RecomputeRun).where(RecomputeRun.id == run.id)
                    .values(shards=len(shard_rows)),
                    execution_options={"synchronize_session": False})
    session.flush()
    log.info("recompute.sharded_started", run_id=run.id, shards=len(shard_rows),
             customers=len(ids))
    # The shards compute as of the run's start (unless told otherwise).
    return ShardedRun(run.id, [row.shard for row in shard_rows],
                      int((now or run.started_at).timestamp()))


def run_shard(session: Session, settings: Settings, run_id: int, shard: int,
              now_ts: int) -> dict[str, Any] | None:
    """Load, compute and write one shard's customers into run ``run_id``; the caller
    commits. None when the shard was already finished (or its run is no longer built)."""
    started = time.perf_counter()
    row = session.get(RecomputeShard, (run_id, shard))
    run = session.get(RecomputeRun, run_id)
    if row is None or run is None or run.status != "building" or row.finished_at is not None:
        return None
    ctx = prepare(session, settings, now_ts)
    first, last = row.from_customer, row.to_customer
    ids = customer_ids_of(session, ctx.livemode, first, last)
    log.info("recompute.shard_started", run_id=run_id, shard=shard, customers=len(ids))
    result = RecomputeResult(kind="shard", run_id=run_id, livemode=ctx.livemode)
    rows = RowBuffer(session, run_id, result, flush_rows=1 << 62)  # written at the end
    span = session.get_bind().dialect.name == "sqlite"
    compute_customers(session, ctx, ids, result, rows, span=span)
    session.rollback()  # the reading transaction: the writing one starts with the claim
    # The claim: the later of two attempts waits here for the earlier one's commit and
    # then finds the shard finished (PostgreSQL re-reads the row; SQLite's write lock).
    claimed = session.execute(
        update(RecomputeShard)
        .where(RecomputeShard.run_id == run_id, RecomputeShard.shard == shard,
               RecomputeShard.finished_at.is_(None))
        .values(attempts=RecomputeShard.attempts + 1),
        execution_options={"synchronize_session": False}).rowcount  # type: ignore[attr-defined]
    if not claimed:
        session.rollback()
        return None
    # Nothing of an earlier attempt can be stored (it would have finished the shard), but
    # a shard is the unit of repair: clear its customers' rows of this run all the same.
    delete_customers(session, run_id, ids)
    # The shard's part of the run's segment totals (added up by the final step), folded
    # from the facts in hand (every fact of the shard's customers) before they are written.
    clock = time.perf_counter()
    found = totals.Totals()
    found.fold(rows.facts)
    totals.write_partial_from(session, run_id, shard, found)
    result.timings["totals"] = time.perf_counter() - clock
    rows.flush()
    result.seconds = time.perf_counter() - started
    figures = {**result.as_dict(),
               "skips": [[s.object_type, s.object_id, s.reason] for s in result.skips],
               "left_out_customers": [[x.customer_id, x.stage, x.reason, x.stripe_ids]
                                      for x in result.left_out],
               # Which process ran the shard and its peak memory so far (benchmarks).
               "pid": os.getpid(),
               "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    session.execute(update(RecomputeShard)
                    .where(RecomputeShard.run_id == run_id, RecomputeShard.shard == shard)
                    .values(finished_at=datetime.now(UTC), customers=len(ids), result=figures),
                    execution_options={"synchronize_session": False})
    log.info("recompute.shard_finished", run_id=run_id, shard=shard, customers=len(ids),
             facts=result.facts, seconds=round(result.seconds, 3))
    return figures


def unfinished(session: Session, run_id: int) -> list[int]:
    return list(session.scalars(select(RecomputeShard.shard)
                                .where(RecomputeShard.run_id == run_id,
                                       RecomputeShard.finished_at.is_(None))
                                .order_by(RecomputeShard.shard)))


def finish(session: Session, settings: Settings, run_id: int,
           now_ts: int) -> RecomputeResult | None:
    """The final step: every shard of run ``run_id`` finished (a missing one is run here),
    the stored rows are the shards' sum, then readers switch to the run. The caller holds
    the account's recompute lock and commits. None when the run is not being built
    (already switched by an earlier attempt of this step)."""
    run = session.execute(select(RecomputeRun).where(RecomputeRun.id == run_id)
                          .with_for_update()).scalar_one_or_none()
    if run is None or run.status != "building":
        return None
    # The run's seconds count from its start (the plan), through every shard.
    clock = time.perf_counter() - (datetime.now(UTC) - run.started_at).total_seconds()
    for shard in unfinished(session, run_id):
        log.warning("recompute.shard_redone", run_id=run_id, shard=shard)
        run_shard(session, settings, run_id, shard, now_ts)
        session.commit()
        run = session.execute(select(RecomputeRun).where(RecomputeRun.id == run_id)
                              .with_for_update()).scalar_one()
    if unfinished(session, run_id):
        raise RecomputeError(f"run {run_id}: shards {unfinished(session, run_id)} did not finish")
    result = RecomputeResult(kind="full", run_id=run_id)
    for figures in session.scalars(select(RecomputeShard.result)
                                   .where(RecomputeShard.run_id == run_id)
                                   .order_by(RecomputeShard.shard)):
        result.add(_part(figures))
        result.livemode = bool(figures.get("livemode"))
    _check_counts(session, run_id, result)
    totals.merge_partials(session, run_id)
    ctx = prepare(session, settings, now_ts, livemode=result.livemode)
    result.skips[:0] = ctx.catalogue.skips
    analyze_derived(session)
    record_skips(session, result.skips)
    runs.switch_to(session, run)
    refresh_outlook_after(session, ctx, run, result, None)
    finish_run(session, run, result, clock)
    runs.clear_dirty(session, run, None)
    return result


def _part(figures: dict[str, Any]) -> RecomputeResult:
    part = RecomputeResult(kind="shard")
    for key in ("customers", "excluded", "lines_read", "timeline_points", "ledger_entries",
                "facts"):
        setattr(part, key, int(figures.get(key) or 0))
    part.timings = {k: float(v) for k, v in (figures.get("timings") or {}).items()}
    part.skips = [Skip(object_type=t, object_id=i, reason=r)
                  for t, i, r in figures.get("skips") or []]
    part.left_out = [LeftOut(customer_id=c, stage=s, reason=r, stripe_ids=ids or {})
                     for c, s, r, ids in figures.get("left_out_customers") or []]
    return part


def _check_counts(session: Session, run_id: int, result: RecomputeResult) -> None:
    """The run's stored rows are exactly what its shards wrote (nothing lost, nothing
    doubled), or the run fails and readers stay on the live one."""
    stored = {name: session.scalar(select(func.count()).select_from(table)
                                   .where(table.c.run_id == run_id))
              for name, table in (("timeline_points", T_TIMELINE),
                                  ("ledger_entries", T_LEDGER), ("facts", T_FACTS))}
    written = {"timeline_points": result.timeline_points,
               "ledger_entries": result.ledger_entries, "facts": result.facts}
    if stored != written:
        session.execute(update(RecomputeRun).where(RecomputeRun.id == run_id)
                        .values(status="failed"), execution_options={"synchronize_session": False})
        session.commit()
        raise RecomputeError(f"run {run_id}: stored rows {stored} differ from the shards' "
                             f"{written}; readers stay on the live run")


def all_finished(session: Session, run_id: int) -> bool:
    return not unfinished(session, run_id)


__all__: Sequence[str] = ["SHARD_CUSTOMERS", "ShardedRun", "all_finished", "finish",
                          "run_shard", "start", "unfinished"]

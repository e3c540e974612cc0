"""The worker's full recompute in shards: one task per customer range, taken by any worker
process on any machine, and a final task that switches readers to the new run.

``nrr.recompute`` (scope ``all``) plans the shards under the account's recompute lock and
sends them; each ``nrr.recompute_shard`` writes its customers' rows into the new run in
its own transaction and, when it finds every shard finished, sends
``nrr.recompute_finish``, which (under the lock) checks the run and switches to it.
A worker killed mid-shard loses nothing: the shard's message comes back
(``acks_late``) and is redone; a finished shard is never written twice.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from sqlalchemy import func, select

from models.mirror import DirtyCustomer
from nrr.db import session_scope
from nrr.locks import RECOMPUTE_LOCK, account_lock
from nrr.logs import get_logger
from nrr.services.recompute import shards
from worker.celery_app import app
from worker.tasks import _TRANSIENT, LONG, SHORT, _after_recompute, _engine, _settings, recompute

log = get_logger(__name__)


@app.task(name="nrr.recompute_shard", bind=True, autoretry_for=_TRANSIENT, retry_backoff=5,
          retry_backoff_max=120, retry_jitter=True, max_retries=8,
          soft_time_limit=LONG, time_limit=LONG + 60)
def recompute_shard(self: Task, run_id: int, shard: int, now_ts: int,
                    reason: str | None = None, follow_up: bool = True) -> dict[str, Any] | None:
    """Compute and write one shard of a full recompute; the last one queues the finish."""
    settings, engine = _settings(), _engine()
    with session_scope(engine) as session:
        figures = shards.run_shard(session, settings, run_id, shard, now_ts)
    with session_scope(engine) as session:
        done = shards.all_finished(session, run_id)
    if done:
        # Every shard that finishes after its commit and sees all finished sends it: the
        # finish is idempotent, and the last shard to commit always sees the others.
        recompute_finish.apply_async(kwargs={"run_id": run_id, "now_ts": now_ts,
                                             "reason": reason, "follow_up": follow_up})
    return None if figures is None else {k: v for k, v in figures.items() if k not in ("skips", "left_out_customers")}


@app.task(name="nrr.recompute_finish", bind=True, autoretry_for=_TRANSIENT, retry_backoff=5,
          retry_backoff_max=120, retry_jitter=True, max_retries=8,
          soft_time_limit=LONG, time_limit=LONG + 60)
def recompute_finish(self: Task, run_id: int, now_ts: int, reason: str | None = None,
                     follow_up: bool = True) -> dict[str, Any] | None:
    """Check that every shard of run ``run_id`` finished and switch readers to it."""
    settings, engine = _settings(), _engine()
    with account_lock(RECOMPUTE_LOCK, settings, engine, blocking=True,
                      timeout=SHORT / 2) as acquired:
        if not acquired:
            raise self.retry(countdown=min(30.0, settings.worker.lock_ttl_seconds),
                             max_retries=40)
        with session_scope(engine) as session:
            result = shards.finish(session, settings, run_id, now_ts)
    if result is None:
        return None
    log.info("recompute.sharded_finished", **result.as_dict())
    with session_scope(engine) as session:
        marked = session.scalar(select(func.count()).select_from(DirtyCustomer)) or 0
    if marked:
        # Customers changed while the shards read the mirror: their marks stayed.
        recompute.apply_async(kwargs={"scope": "dirty", "reason": "after a sharded recompute",
                                      "follow_up": follow_up})
    if follow_up:
        _after_recompute(reason or "after all recompute")
    return result.as_dict()

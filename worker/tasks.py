"""Thin tasks: each runs one step of the pipeline (:mod:`nrr.services.pipeline`) and queues
the next.

Every task is safe to run twice (``acks_late`` redelivers a task whose worker died):
syncs resume from their stored cursors and upsert by Stripe id, events are applied once
(``processed_at``), recomputes rebuild the same rows, snapshots are no-ops for the same
content and alert deliveries are deduplicated. Syncs and recomputes of one account hold an
account lock (:mod:`nrr.locks`, the same locks ``nrr sync`` and ``nrr serve`` take).
Follow-up tasks are sent only after the transaction that triggered them committed.

Chain: sync or event -> recompute of every dirty customer (whoever marked it: a sync that
touched nothing still drains what an earlier event left) -> snapshot of the last closed
month (no-op unless history changed) -> alert evaluation. Every recompute (scheduled,
after a sync, after webhook events) is followed by that snapshot and alert evaluation;
alert evaluation is exactly-once per rule, month, segment and snapshot version, so
running it after a recompute that changed nothing sends nothing.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Task
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from integrations.stripe_client import StripeReader, StripeUnavailable
from models.mirror import SyncState
from nrr.db import make_engine, session_scope
from nrr.locks import RECOMPUTE_LOCK, account_lock, claim_flag, clear_flag
from nrr.logs import get_logger
from nrr.services import pipeline
from nrr.settings import Settings
from worker.celery_app import app
from worker.celery_app import settings as app_settings

log = get_logger(__name__)

LONG = app_settings.worker.soft_time_limit_seconds
SHORT = max(60, LONG // 10)
_TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)
SYNC_RETRY = (*_TRANSIENT, StripeUnavailable)
SNAPSHOT_QUEUED = "snapshot-queued"
RECOMPUTE_QUEUED = "recompute-queued"

_engines: dict[tuple[int, str], Engine] = {}


def _settings() -> Settings:
    return app_settings


def _engine() -> Engine:
    """One engine per worker process (never shared across a fork)."""
    key = (os.getpid(), app_settings.database_url)
    if key not in _engines:
        _engines[key] = make_engine(app_settings.database_url)
    return _engines[key]


def _backfill_in_progress(engine: Engine) -> bool:
    with session_scope(engine) as session:
        phases = set(session.scalars(select(SyncState.phase)))
    return "running" in phases or "waiting" in phases


def _sync(full: bool, reason: str) -> dict[str, Any] | None:
    """Run one sync under the account's sync lock; None when another sync holds it."""
    settings, engine = _settings(), _engine()
    try:
        result = pipeline.sync_mirror(engine, settings, full=full, reason=reason)
    except pipeline.LockBusy as exc:
        log.info("task.skipped", reason=str(exc))
        return None
    # run_sync committed each page itself; only now queue the follow-up. Customers left
    # dirty by anything earlier (an event whose recompute was deferred) are drained too.
    # So are the customers due (a scheduled change took effect since their recompute).
    if (result.customer_ids or result.mode != "events" or pipeline.dirty_customers(engine)
            or pipeline.anything_due(engine, settings)):
        recompute.apply_async(kwargs={"scope": "dirty", "reason": f"after {result.mode} sync"})
    return result.as_dict()


@app.task(name="nrr.sync", bind=True, autoretry_for=SYNC_RETRY, retry_backoff=30,
          retry_backoff_max=900, retry_jitter=True, max_retries=5,
          soft_time_limit=LONG, time_limit=LONG + 60)
def sync(self: Task, full: bool = False) -> dict[str, Any] | None:
    """Incremental sync (events since the cursor; resumes an unfinished backfill)."""
    return _sync(full, "schedule" if not full else "full")


@app.task(name="nrr.backfill", bind=True, autoretry_for=SYNC_RETRY, retry_backoff=30,
          retry_backoff_max=900, retry_jitter=True, max_retries=5,
          soft_time_limit=LONG, time_limit=LONG + 60)
def backfill(self: Task, restart: bool = False) -> dict[str, Any] | None:
    """List every object: resumes an unfinished backfill, else starts one.

    ``restart`` re-lists from the beginning, except when a backfill is already under way
    (a redelivered task after its worker died resumes instead of starting over).
    """
    full = restart and not _backfill_in_progress(_engine())
    outcome = _sync(full, "backfill")
    if outcome is None:
        # The holder may be a worker that died; its lease expires, then this runs.
        raise self.retry(countdown=_settings().worker.lock_ttl_seconds, max_retries=20)
    return outcome


_readers: dict[int, Any] = {}


def _reader(settings: Settings) -> Any:
    """The process's Stripe reader (to fetch objects an event refers to), if a key is set."""
    if settings.stripe_api_key is None:
        return None
    if os.getpid() not in _readers:
        _readers[os.getpid()] = StripeReader(settings)
    return _readers[os.getpid()]


@app.task(name="nrr.process_event", bind=True, autoretry_for=SYNC_RETRY, retry_backoff=2,
          retry_backoff_max=300, retry_jitter=True, max_retries=8,
          soft_time_limit=SHORT, time_limit=SHORT + 30)
def process_event(self: Task, event_id: str) -> list[str]:
    """Apply one recorded Stripe event, then have every dirty customer (those it touched
    among them) recomputed."""
    settings, engine = _settings(), _engine()
    try:
        touched = pipeline.apply_event(engine, settings, event_id, client=_reader(settings))
    except LookupError as exc:
        log.warning("task.skipped", event_id=event_id, reason=str(exc))
        return []
    if not touched:
        # Already applied (a duplicate delivery) or nothing to recompute: the delivery
        # that touched customers drains them.
        return []
    # Marked again after the commit: a recompute already running (it may have read before
    # this event committed) clears only marks older than its start, so these outlive it.
    # Then one recompute of every dirty customer is queued, unless one is queued and not
    # yet started (it will read what this event committed): a burst of events costs a
    # few recomputes of many customers each, not one per event.
    pipeline.mark_dirty(engine, touched)
    _queue_recompute(f"event {event_id}")
    return sorted(touched)


def _queue_recompute(reason: str) -> None:
    if claim_flag(RECOMPUTE_QUEUED, _settings(), _engine(), ttl=SHORT):
        recompute.apply_async(kwargs={"scope": "dirty", "reason": reason, "wait": SHORT / 2})


def _after_recompute(reason: str) -> None:
    """What follows every committed recompute (scheduled, after a sync, after webhook
    events): the snapshot of the last closed month, which queues the alert evaluation.
    Alerts come after the snapshot so they are keyed by the snapshot version they read.

    One snapshot at a time is queued: while one waits in the queue (its flag up), it
    will read what this recompute committed, so a burst of events costs one snapshot,
    not one each. The snapshot lowers the flag when it starts."""
    if claim_flag(SNAPSHOT_QUEUED, _settings(), _engine(), ttl=SHORT):
        snapshot.apply_async(kwargs={"reason": reason})


def send_shards(run: Any, reason: str, follow_up: bool) -> None:
    """Queue one ``nrr.recompute_shard`` task (``worker/shards.py``) per shard of ``run``,
    by name: ``worker.shards`` imports this module, never the other way round."""
    for shard in run.shards:
        app.send_task("nrr.recompute_shard", kwargs={
            "run_id": run.run_id, "shard": shard, "now_ts": run.now_ts, "reason": reason,
            "follow_up": follow_up})


@app.task(name="nrr.recompute", bind=True, autoretry_for=_TRANSIENT, retry_backoff=10,
          retry_backoff_max=600, retry_jitter=True, max_retries=5,
          soft_time_limit=LONG, time_limit=LONG + 60)
def recompute(self: Task, scope: str = "dirty", customer_ids: list[str] | None = None,
              reason: str | None = None, follow_up: bool = True,
              wait: float = 0.0) -> dict[str, Any] | None:
    """Recompute ``all`` customers, the ``dirty`` ones, or ``customer_ids``; ``wait``
    seconds for a running recompute before retrying later. A full recompute of an account
    of more than one shard runs as shards on every worker (:mod:`worker.shards`)."""
    if scope not in pipeline.SCOPES:
        log.error("task.rejected", reason=f"unknown scope {scope!r}: use all, dirty or customers")
        return None
    settings, engine = _settings(), _engine()
    if scope == "all":
        from nrr.services.recompute import shards

        with account_lock(RECOMPUTE_LOCK, settings, engine) as acquired:
            if not acquired:
                log.info("task.deferred", reason="another recompute of this account is running")
                raise self.retry(countdown=min(30.0, settings.worker.lock_ttl_seconds),
                                 max_retries=40)
            with session_scope(engine) as session:
                sharded = shards.start(session, settings, minimum_shards=2)
        if sharded is not None:
            clear_flag(RECOMPUTE_QUEUED, settings, engine)
            send_shards(sharded, reason or "after all recompute", follow_up)
            return {"kind": "full", "run_id": sharded.run_id, "shards": len(sharded.shards)}

    def lower_flag() -> None:
        # Lowered once the lock is held, before the marks are read: an event committing
        # from now on queues another recompute.
        clear_flag(RECOMPUTE_QUEUED, settings, engine)

    result = pipeline.recompute(engine, settings, scope=scope, customer_ids=customer_ids or [],
                                wait=wait, on_locked=lower_flag)
    if result is None:
        # The running recompute may have read the mirror before the latest changes.
        log.info("task.deferred", reason="another recompute of this account is running")
        raise self.retry(countdown=min(30.0, settings.worker.lock_ttl_seconds), max_retries=40)
    if follow_up:
        _after_recompute(reason or f"after {scope} recompute")
    return result.as_dict()  # type: ignore[no-any-return]


@app.task(name="nrr.snapshot", bind=True, autoretry_for=_TRANSIENT, retry_backoff=10,
          retry_backoff_max=600, max_retries=5, soft_time_limit=SHORT, time_limit=SHORT + 30)
def snapshot(self: Task, month: str | None = None, reason: str | None = None,
             follow_up: bool = True) -> dict[str, Any]:
    """Take the retention snapshot of ``month`` (default: the month that just closed)."""
    # Lowered before reading: a recompute committing from now on queues another snapshot.
    clear_flag(SNAPSHOT_QUEUED, _settings(), _engine())
    month, result, skipped = pipeline.snapshot(_engine(), _settings(), month, reason=reason)
    if result is None:
        return {"month": month, "skipped": skipped}
    if follow_up:
        evaluate_alerts.apply_async(kwargs={"month": month})
    return result


@app.task(name="nrr.evaluate_alerts", bind=True, autoretry_for=_TRANSIENT, retry_backoff=10,
          retry_backoff_max=600, max_retries=5, soft_time_limit=SHORT, time_limit=SHORT + 30)
def evaluate_alerts(self: Task, month: str | None = None) -> dict[str, Any]:
    """Evaluate the alert rules for ``month`` and deliver what is pending (exactly once)."""
    return pipeline.alerts(_engine(), _settings(), month)

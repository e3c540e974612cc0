"""After new Stripe data: one pipeline, whoever noticed the change.

    mirror ──► dirty customers ──► recompute of every dirty customer (and every due one),
    under the account's recompute lock ──► retention snapshot of the last closed month
    ──► alerts

The mirror step is a sync (:func:`sync_mirror`, under the account's sync lock) or one
recorded event (:func:`apply_event`); the mirror store marks the customers whose data
changed in ``dirty_customers``. :func:`refresh` then drains *every* dirty customer,
whoever marked it and whenever (plus the customers the caller has just touched, so a
change committed while another recompute was reading is never lost, and the customers
*due*: a change their subscriptions scheduled took effect since their rows were computed,
``nrr.services.recompute.due``), and follows a
recompute with the snapshot (a no-op unless the closed month's numbers changed) and the
alert evaluation (exactly once per rule, month, segment and snapshot version). Nothing
here asks which event came last or whether more work is queued: whichever entry point
runs next drains what is dirty.

No Celery here. The entry points choose how the steps are dispatched:

- ``nrr sync``: :func:`sync_mirror`, then :func:`refresh` in the foreground;
- ``nrr serve`` without Redis: :class:`InProcessPipeline` (one thread) applies each
  recorded event and refreshes;
- the worker (``worker/tasks.py``): one thin task per step, chained through the broker.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from integrations import stripe_mirror
from integrations.stripe_client import StripeReader
from integrations.stripe_sync import SyncResult, process_stored_event, run_sync
from models.mirror import DirtyCustomer
from nrr.db import session_scope
from nrr.locks import RECOMPUTE_LOCK, SYNC_LOCK, LockHolder, account_lock, lock_holder
from nrr.logs import get_logger
from nrr.services import recompute as recompute_service
from nrr.services.alerts import Printer
from nrr.services.alerts import evaluate_alerts as evaluate
from nrr.services.recompute.due import due_since
from nrr.services.snapshots import SnapshotError, last_closed_month, take_snapshots
from nrr.settings import Settings

log = get_logger(__name__)

SCOPES = ("all", "dirty", "customers")


class LockBusy(Exception):
    """Another holder has the account's lock ``name``; ``holder`` says who (when known)."""

    def __init__(self, name: str, holder: LockHolder | None, what: str) -> None:
        self.name = name
        self.holder = holder
        who = holder.describe() if holder is not None else "its holder has just released it"
        super().__init__(f"{what} ({who})")


@dataclass
class Refreshed:
    """What :func:`refresh` did: the recompute, then the snapshot and the alerts."""

    recompute: dict[str, Any] | None = None
    month: str | None = None
    snapshot: dict[str, Any] | None = None
    snapshot_skipped: str | None = None
    alerts: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"recompute": self.recompute, "month": self.month, "snapshot": self.snapshot,
                "snapshot_skipped": self.snapshot_skipped, "alerts": self.alerts}


# --------------------------------------------------------------------------- steps


def sync_mirror(engine: Engine, settings: Settings, *, full: bool = False,
                progress: Any = None, client: StripeReader | None = None,
                reason: str | None = None) -> SyncResult:
    """Sync the mirror from Stripe under the account's sync lock; :class:`LockBusy` when
    another sync (the worker's, another ``nrr sync``) holds it."""
    with account_lock(SYNC_LOCK, settings, engine) as acquired:
        if not acquired:
            raise LockBusy(SYNC_LOCK, lock_holder(SYNC_LOCK, settings, engine),
                           "another sync of this account is running")
        log.info("sync.started", full=full, reason=reason)
        return run_sync(engine, settings, full=full, progress=progress, client=client)


def apply_event(engine: Engine, settings: Settings, event_id: str, *,
                client: StripeReader | None = None) -> set[str]:
    """Apply one event recorded in ``stripe_events`` to the mirror (once); the customers
    it touched are marked dirty. :class:`LookupError` when the event is not recorded."""
    return process_stored_event(engine, settings, event_id, client=client)


def dirty_customers(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return sorted(session.scalars(select(DirtyCustomer.customer_id)))


def anything_due(engine: Engine, settings: Settings) -> bool:
    """A scheduled change took effect since the live rows were computed (a cancellation
    at ``cancel_at``, a trial ending...), or a month closed: a recompute has work although
    nothing is dirty (``nrr.services.recompute.due``)."""
    with session_scope(engine) as session:
        stale = due_since(session, settings, int(datetime.now(UTC).timestamp()))
    return stale.new_month or bool(stale.customer_ids)


def mark_dirty(engine: Engine, customer_ids: Iterable[str]) -> None:
    """Mark customers again, now: a recompute already running clears only the marks made
    before it started, so these survive it (their data may have reached it too late)."""
    with session_scope(engine) as session:
        stripe_mirror.mark_dirty(session, customer_ids)


def recompute(engine: Engine, settings: Settings, *, scope: str = "dirty",
              customer_ids: Iterable[str] = (), wait: float = 0.0,
              on_wait: Callable[[float], None] | None = None,
              on_locked: Callable[[], None] | None = None) -> Any:
    """Recompute under the account's recompute lock: ``all`` customers, every ``dirty``
    one (and ``customer_ids``), or only ``customer_ids``. Returns the recompute's result,
    or None when another recompute held the lock for ``wait`` seconds (the dirty marks
    stay for the next run). ``on_wait(wait)`` is called before waiting, ``on_locked()``
    once the lock is held, before the dirty marks are read."""
    if scope not in SCOPES:
        raise ValueError(f"unknown recompute scope {scope!r}: use all, dirty or customers")
    extra = set(customer_ids)
    with account_lock(RECOMPUTE_LOCK, settings, engine) as acquired:
        if acquired:
            return _recompute_locked(engine, settings, scope, extra, on_locked)
    if wait <= 0:
        return None
    if on_wait is not None:
        on_wait(wait)
    with account_lock(RECOMPUTE_LOCK, settings, engine, blocking=True,
                      timeout=wait) as acquired:
        if acquired:
            return _recompute_locked(engine, settings, scope, extra, on_locked)
    return None


def _recompute_locked(engine: Engine, settings: Settings, scope: str, extra: set[str],
                      on_locked: Callable[[], None] | None) -> Any:
    if on_locked is not None:
        on_locked()
    with session_scope(engine) as session:
        if scope == "all":
            return recompute_service.recompute(session, settings)
        ids = set(extra)
        if scope == "dirty":
            # Read under the lock: every mark committed before now is drained.
            ids |= set(session.scalars(select(DirtyCustomer.customer_id)))
        return recompute_service.recompute(session, settings, customer_ids=sorted(ids))


def snapshot(engine: Engine, settings: Settings, month: str | None = None, *,
             reason: str | None = None) -> tuple[str, dict[str, Any] | None, str | None]:
    """The retention snapshot of ``month`` (default: the month that just closed); a no-op
    unless its numbers changed. Returns (month, result, why it was skipped)."""
    month = month or last_closed_month(settings)
    try:
        with session_scope(engine) as session:
            result = take_snapshots(session, settings, month, reason=reason)
    except SnapshotError as exc:
        log.info("snapshot.skipped", month=month, reason=str(exc))
        return month, None, str(exc)
    # The HTML report page (NRR_REPORT_DIR) before the alerts, which link to it.
    from nrr.services.report_files import publish_report

    with session_scope(engine) as session:
        publish_report(session, settings, month)
    return month, result.as_dict(), None


def alerts(engine: Engine, settings: Settings, month: str | None, *,
           printer: Printer | None = None) -> dict[str, Any]:
    """Evaluate the alert rules for ``month`` and deliver what is pending (exactly once)."""
    result = evaluate(engine, settings, month, printer=printer)
    return {"month": month, "created": len(result.created)}


def follow_up(engine: Engine, settings: Settings, *, reason: str,
              printer: Printer | None = None) -> Refreshed:
    """What follows every committed recompute: the snapshot, then (when one was taken or
    was already there) the alerts, keyed by the snapshot version they read."""
    outcome = Refreshed()
    outcome.month, outcome.snapshot, outcome.snapshot_skipped = snapshot(
        engine, settings, reason=reason)
    if outcome.snapshot is not None:
        outcome.alerts = alerts(engine, settings, outcome.month, printer=printer)
    return outcome


def refresh(engine: Engine, settings: Settings, *, reason: str,
            touched: Iterable[str] = (), always: bool = False, wait: float = 0.0,
            on_wait: Callable[[float], None] | None = None,
            printer: Printer | None = None, then_follow_up: bool = True) -> Refreshed | None:
    """Recompute every dirty customer (and ``touched``) under the recompute lock, then the
    snapshot and the alerts (unless ``then_follow_up`` is False: the caller runs
    :func:`follow_up` itself). With nothing dirty and nothing due (no scheduled change
    took effect since the last recompute) nothing runs, unless ``always``. None when the
    lock stayed busy for ``wait`` seconds: the marks stay for whoever runs next."""
    touched = set(touched)
    if (not always and not touched and not dirty_customers(engine)
            and not anything_due(engine, settings)):
        return Refreshed()
    result = recompute(engine, settings, scope="dirty", customer_ids=touched, wait=wait,
                       on_wait=on_wait)
    if result is None:
        # The running recompute may have read before these customers' data committed:
        # marked again now, after it started, they outlive its clean-up.
        mark_dirty(engine, touched)
        log.info("pipeline.recompute_deferred", reason=reason,
                 detail="another recompute of this account holds the lock")
        return None
    outcome = (follow_up(engine, settings, reason=reason, printer=printer) if then_follow_up
               else Refreshed())
    outcome.recompute = result.as_dict() if hasattr(result, "as_dict") else result
    return outcome


# --------------------------------------------------------------------------- in process


class InProcessPipeline:
    """The pipeline on one background thread, for ``nrr serve`` without Redis.

    ``dispatch(event_id)`` (the webhook app's hand-off) queues the recorded event; the
    thread applies the events queued so far, then recomputes every dirty customer under
    the recompute lock, after every batch whatever the queue holds. When the lock is busy
    it tries again every ``retry_seconds`` until the marks are drained, with or without
    new events. The snapshot and the alerts follow once no event waits (or at least every
    ``follow_up_seconds`` while events keep coming): a burst costs one snapshot, and the
    numbers are current before it.
    """

    def __init__(self, settings: Settings, engine: Engine, *, retry_seconds: float = 2.0,
                 lock_wait_seconds: float = 5.0, batch: int = 100,
                 follow_up_seconds: float = 60.0, printer: Printer | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.retry_seconds = retry_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self.batch = batch
        self.printer = printer
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._idle = threading.Condition()
        self._busy = 0  # events queued or being applied, plus a pending refresh
        self._pending = False
        self._follow_up_due = False
        self.follow_up_seconds = follow_up_seconds
        self._last_follow_up = time.monotonic()
        self._reader: StripeReader | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="nrr-pipeline", daemon=True)
        self._thread.start()

    def __call__(self, event_id: str) -> None:
        with self._idle:
            self._busy += 1
        self._queue.put(event_id)

    def _client(self) -> StripeReader | None:
        if self._reader is None and self.settings.stripe_api_key is not None:
            self._reader = StripeReader(self.settings)
        return self._reader

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.retry_seconds if self._pending else None)
            except queue.Empty:
                first = ""  # no new event: try the pending refresh again
            if first is None:
                return
            events = [first] if first else []
            while len(events) < self.batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stopping = True
                    break
                events.append(more)
            touched: set[str] = set()
            for event_id in events:
                touched |= self._apply(event_id)
            self._refresh(touched, len(events))
            if self._stopping:
                return

    def _apply(self, event_id: str) -> set[str]:
        try:
            return apply_event(self.engine, self.settings, event_id, client=self._client())
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the others
            log.error("pipeline.event_failed", event_id=event_id,
                      error=f"{type(exc).__name__}: {exc}")
            return set()

    def _refresh(self, touched: set[str], applied: int) -> None:
        try:
            outcome = refresh(self.engine, self.settings, reason="webhook events",
                              touched=touched, wait=self.lock_wait_seconds,
                              printer=self.printer, then_follow_up=False)
        except Exception as exc:  # noqa: BLE001 - the marks stay; tried again later
            log.error("pipeline.refresh_failed", error=f"{type(exc).__name__}: {exc}")
            outcome = None
        if outcome is not None and outcome.recompute is not None:
            self._follow_up_due = True
        quiet = self._queue.empty()
        if self._follow_up_due and (
                quiet or time.monotonic() - self._last_follow_up >= self.follow_up_seconds):
            try:
                follow_up(self.engine, self.settings, reason="webhook events",
                          printer=self.printer)
            except Exception as exc:  # noqa: BLE001 - the next recompute follows up again
                log.error("pipeline.follow_up_failed", error=f"{type(exc).__name__}: {exc}")
            self._follow_up_due = False
            self._last_follow_up = time.monotonic()
        with self._idle:
            self._busy -= applied
            self._pending = outcome is None
            self._idle.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every dispatched event was applied and the dirty customers drained
        (tests, shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0 and not self._pending,
                                       timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self._reader is not None:
            self._reader.close()

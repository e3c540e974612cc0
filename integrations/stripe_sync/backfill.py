"""The backfill: every resource listed page by page, each page committed with its cursor
(see :mod:`integrations.stripe_sync`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine

from integrations import stripe_mirror
from integrations.stripe_client import (
    StripeAccessDenied,
    StripeReader,
)
from integrations.stripe_sync.pages import PagePipeline, store_extra_lines
from integrations.stripe_sync.state import (
    EVENTS_RESOURCE,
    RESOURCE_NAMES,
    RESOURCES,
    ProgressCallback,
    Resource,
    ResourceResult,
    SyncInterrupted,
    SyncResult,
    record_error,
    start_listing,
    state_row,
    utcnow,
)
from integrations.stripe_sync.windows import Window, backfill_windows, plan_windows, window_rows
from nrr.db import session_scope
from nrr.settings import Settings

T = TypeVar("T")


def prepare_backfill(engine: Engine, reader: StripeReader, *, restart: bool) -> None:
    """Reset (``restart``) or keep the per-resource cursors; store the event cursor first."""
    with session_scope(engine) as session:
        events = state_row(session, EVENTS_RESOURCE)
        fresh = restart or events.phase != "waiting" or events.event_cursor is None
        if fresh:
            newest = reader.newest_event_created()
            events.event_cursor = newest if newest is not None else int(time.time())
            events.phase = "waiting"
            events.started_at = utcnow()
            events.finished_at = None
            events.last_error = None
        for name in RESOURCE_NAMES:
            row = state_row(session, name)
            if fresh or row.phase not in ("running", "done"):
                for window_row in window_rows(session, name):
                    session.delete(window_row)
                start_listing(row)


def finish_backfill(engine: Engine) -> None:
    with session_scope(engine) as session:
        events = state_row(session, EVENTS_RESOURCE)
        events.phase = "idle"


def run_backfill(engine: Engine, settings: Settings, reader: StripeReader, result: SyncResult, *,
              progress: ProgressCallback | None, parallel: bool,
              page_hook: Callable[[str, int], None] | None,
              windows: Mapping[str, int] | None = None) -> None:
    stop = threading.Event()
    lock = threading.Lock()
    # Windowed resources split by the customers' created times: they wait for customers.
    customers_listed = threading.Event()
    per_resource = dict(backfill_windows(bool(settings.stripe_livemode),
                                         settings.stripe_backfill_windows)
                        if windows is None else windows)

    def run(resource: Resource) -> None:
        try:
            outcome = _backfill_resource(engine, reader, resource, progress=progress,
                                         stop=stop, page_hook=page_hook,
                                         windows=per_resource.get(resource.name, 1),
                                         customers_listed=customers_listed)
        except BaseException as exc:
            record_error(engine, resource.name, f"{type(exc).__name__}: {exc}")
            raise
        if resource.name == "customers":
            customers_listed.set()
        with lock:
            result.resources[resource.name] = outcome[0]
            result.objects_stored += outcome[0].stored
            result.skipped += outcome[0].skipped
            result.customer_ids |= outcome[1]

    side_by_side(RESOURCES, run, stop=stop, parallel=parallel, name="nrr-backfill")


def side_by_side(tasks: Sequence[T], work: Callable[[T], None], *, stop: threading.Event,
                  parallel: bool = True, name: str) -> None:
    """Run ``work`` on every task, in threads (or one after the other); the first failure
    sets ``stop`` for the others. Then raise the failure that says the most: an access
    problem (what to fix) before a real error before a :class:`SyncInterrupted` (a task
    that stopped because another failed)."""
    lock = threading.Lock()
    errors: list[BaseException] = []

    def guarded(task: T) -> None:
        try:
            work(task)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            stop.set()
            with lock:
                errors.append(exc)

    if parallel:
        with ThreadPoolExecutor(max_workers=max(1, len(tasks)), thread_name_prefix=name) as pool:
            list(pool.map(guarded, tasks))
    else:
        for task in tasks:
            if stop.is_set():
                break
            guarded(task)
    if errors:
        denied = [e for e in errors if isinstance(e, StripeAccessDenied)]
        interrupted = [e for e in errors if not isinstance(e, SyncInterrupted)]
        raise (denied or interrupted or errors)[0]


class _PageCounter:
    """Numbers a resource's pages across its windows for ``page_hook`` (tests)."""

    def __init__(self, name: str, hook: Callable[[str, int], None] | None) -> None:
        self._name = name
        self._hook = hook
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self._hook is None:
            return
        with self._lock:
            number = self._next
            self._next += 1
        self._hook(self._name, number)


def _backfill_resource(engine: Engine, reader: StripeReader, resource: Resource, *,
                       progress: ProgressCallback | None, stop: threading.Event,
                       page_hook: Callable[[str, int], None] | None, windows: int = 1,
                       customers_listed: threading.Event | None = None
                       ) -> tuple[ResourceResult, set[str]]:
    outcome = ResourceResult()
    touched: set[str] = set()
    with session_scope(engine) as session:
        row = state_row(session, resource.name)
        if row.phase == "done":
            if progress:
                progress(resource.name, 0, True)
            return outcome, touched
        cursor = row.cursor
        # A listed object is at least as new as the newest event read before the backfill
        # began; the events after that instant are applied over it, oldest first. (Stripe's
        # clock, not ours: the two need not agree.)
        state_at = state_row(session, EVENTS_RESOURCE).event_cursor or int(time.time())
        planned = [w for w in (Window.parse(r.resource)
                               for r in window_rows(session, resource.name)) if w is not None]
    if not planned and cursor is None and windows > 1:
        # Nothing listed yet: choose the windows once (kept on resume).
        if customers_listed is not None and resource.name != "customers":
            while not customers_listed.wait(0.05):
                if stop.is_set():
                    raise SyncInterrupted(f"{resource.name}: stopped because another "
                                          "resource failed")
        planned = plan_windows(engine, resource.name, windows, until=state_at)
    if progress:
        progress(resource.name, 0, False)
    count_page = _PageCounter(resource.name, page_hook)
    if not planned:
        _list_chain(engine, reader, resource, resource.name, resource.params, cursor,
                    state_at, outcome, touched, progress=progress, stop=stop,
                    count_page=count_page, final=True)
    else:
        lock = threading.Lock()
        # Windows are listed side by side but stored one page at a time: SQLite has one
        # writer anyway, and on PostgreSQL two windows' pages upserting shared rows (the
        # same discount on invoices of both) in different orders could deadlock.
        store_lock = threading.Lock()

        def run_window(window: Window) -> None:
            with session_scope(engine) as session:
                window_row = state_row(session, window.name)
                if window_row.phase == "done":
                    return
                window_cursor = window_row.cursor
            params = {**resource.params, "created": window.created}
            _list_chain(engine, reader, resource, window.name, params, window_cursor,
                        state_at, outcome, touched, progress=progress, stop=stop,
                        count_page=count_page, final=False, lock=lock, store_lock=store_lock)

        side_by_side(planned, run_window, stop=stop, name=f"nrr-{resource.name}-window")
    with session_scope(engine) as session:
        row = state_row(session, resource.name)
        if planned:
            row.objects_synced = sum(int(w.objects_synced or 0)
                                     for w in window_rows(session, resource.name))
        if row.phase != "done":  # an empty list ends without a has_more=false page
            row.phase = "done"
            row.cursor = None
            row.finished_at = utcnow()
    if progress and planned:
        progress(resource.name, 0, True)
    return outcome, touched


def _list_chain(engine: Engine, reader: StripeReader, resource: Resource, row_name: str,
                params: Mapping[str, Any], cursor: str | None, state_at: int,
                outcome: ResourceResult, touched: set[str], *,
                progress: ProgressCallback | None, stop: threading.Event,
                count_page: Callable[[], None], final: bool,
                lock: threading.Lock | None = None,
                store_lock: threading.Lock | None = None) -> None:
    """List one chain of pages (a resource, or one of its windows) into the mirror, each
    page committed with the chain's cursor in its ``sync_state`` row ``row_name``."""
    guard = lock if lock is not None else threading.Lock()
    # Pages are fetched (and their partial lists completed) ahead of the store, but stored
    # strictly in order, one transaction per page with its cursor: see PagePipeline.
    with PagePipeline(reader, resource, cursor, stop, params=params, label=row_name) \
            as pipeline:
        for fetched in pipeline:
            if stop.is_set():
                raise SyncInterrupted(f"{row_name}: stopped because another resource failed")
            page = fetched.page
            objects, extra_lines, line_pages = fetched.result()
            with store_lock or contextlib.nullcontext(), session_scope(engine) as session:
                count_page()
                stored = stripe_mirror.store_objects(session, resource.kind, objects,
                                                     state_at=state_at)
                page_touched = set(stored.customer_ids)
                for invoice_id, lines in extra_lines.items():
                    page_touched |= store_extra_lines(session, invoice_id, lines, state_at)
                row = state_row(session, row_name)
                row.cursor = page.last_id or row.cursor
                row.objects_synced = (row.objects_synced or 0) + stored.stored
                row.last_error = None
                if not page.has_more:
                    row.phase = "done"
                    row.cursor = None
                    row.finished_at = utcnow()
            with guard:
                touched |= page_touched
                outcome.line_pages += line_pages
                outcome.pages += 1
                outcome.stored += stored.stored
                outcome.skipped += stored.skipped
            if progress:
                progress(resource.name, stored.stored + stored.skipped,
                         final and not page.has_more)
    with session_scope(engine) as session:
        row = state_row(session, row_name)
        if row.phase != "done":  # an empty list ends without a has_more=false page
            row.phase = "done"
            row.cursor = None
            row.finished_at = utcnow()

"""One sync run: choose the mode (backfill, events, refresh) and run it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, select

from integrations.stripe_client import (
    StripeReader,
)
from integrations.stripe_sync.backfill import finish_backfill, prepare_backfill, run_backfill
from integrations.stripe_sync.events import apply_events
from integrations.stripe_sync.state import (
    EVENTS_RESOURCE,
    EVENTS_RETENTION_SECONDS,
    RESOURCE_NAMES,
    STALE_MARGIN_SECONDS,
    ProgressCallback,
    SyncResult,
)
from models.mirror import SyncState
from nrr.db import session_scope
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

def run_sync(engine: Engine, settings: Settings, *, full: bool = False,
             progress: ProgressCallback | None = None, client: StripeReader | None = None,
             parallel: bool = True, now: float | None = None,
             page_hook: Callable[[str, int], None] | None = None,
             windows: Mapping[str, int] | None = None) -> SyncResult:
    """Bring the mirror up to date with Stripe; see the module docstring.

    ``windows`` (resource -> number of ``created`` windows, default
    :func:`backfill_windows` for the key's mode) applies when a resource starts listing.

    ``page_hook(resource, pages_done)`` runs before each page is committed (tests use it
    to inject crashes); ``pages_done`` counts the resource's pages over all its windows. ``now`` (Unix seconds) overrides the clock for the 30-day check.
    """
    started = time.monotonic()
    own_client = client is None
    reader = client if client is not None else StripeReader(settings)
    requests_before = reader.requests_made
    counts_before = dict(reader.request_counts)
    clock_now = time.time() if now is None else now
    try:
        mode = _choose_mode(engine, full=full, now=clock_now)
        result = SyncResult(mode=mode)
        if mode == "refresh":
            result.notes.append("event cursor older than 30 days: list-based refresh")
            log.warning("sync.stale_cursor_refresh",
                        reason="the event cursor is older than Stripe's 30 days of events")
        if mode in ("backfill", "refresh"):
            prepare_backfill(engine, reader, restart=full or mode == "refresh")
            run_backfill(engine, settings, reader, result, progress=progress, parallel=parallel,
                      page_hook=page_hook, windows=windows)
            finish_backfill(engine)
        apply_events(engine, settings, reader, result, progress=progress)
    finally:
        if own_client:
            reader.close()
    result.requests = reader.requests_made - requests_before
    result.request_counts = {k: v - counts_before.get(k, 0)
                             for k, v in reader.request_counts.items()
                             if v - counts_before.get(k, 0)}
    result.seconds = time.monotonic() - started
    log.info("sync.finished", mode=result.mode, requests=result.requests,
             stored=result.objects_stored, skipped=result.skipped,
             events=result.events_applied, customers=len(result.customer_ids))
    return result


def _choose_mode(engine: Engine, *, full: bool, now: float) -> str:
    if full:
        return "backfill"
    with session_scope(engine) as session:
        rows = {r.resource: r for r in session.scalars(select(SyncState))}
    if any(rows.get(name) is None or rows[name].phase != "done" for name in RESOURCE_NAMES):
        return "backfill"
    events = rows.get(EVENTS_RESOURCE)
    if events is None or events.event_cursor is None:
        return "backfill"
    if events.event_cursor < now - EVENTS_RETENTION_SECONDS + STALE_MARGIN_SECONDS:
        return "refresh"
    return "events"

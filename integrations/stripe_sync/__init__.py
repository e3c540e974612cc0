"""Stripe sync: backfill, incremental events and list-based refresh into the mirror.

A package by job: :mod:`.run` chooses the mode and runs it, :mod:`.backfill` lists every
resource, :mod:`.windows` splits big resources into ``created`` windows, :mod:`.pages`
lists pages ahead of the store and completes partial embedded lists, :mod:`.events`
records and applies events, :mod:`.state` keeps the ``sync_state`` rows and results.

The sync only reads Stripe (through :class:`integrations.stripe_client.StripeReader`) and
writes through the mirror store (:mod:`integrations.stripe_mirror`).

**Backfill** (first sync, ``full=True``): every resource (:data:`RESOURCES`: customers,
products, prices, coupons, subscriptions, subscription schedules of every status, invoices)
is listed with ``expand[]`` (no per-object requests), newest first, 100 per page. After each page the objects and the
resource's ``sync_state.cursor`` (the last stored id) are committed in one transaction, so
a crash or kill resumes with ``starting_after=<cursor>``: no duplicates, nothing skipped.
Invoices whose embedded ``lines`` list is partial get the rest from
``/v1/invoices/{id}/lines`` before the page is committed. Independent resources are
listed in parallel threads, and within a resource the next page is already requested (and
its partial lists completed) while earlier pages are completed and stored, so the rate
limiter, not latency, sets the pace; pages are still stored strictly in order, one
transaction each with its cursor, and a prefetched page that was not stored is simply
listed again on resume. The event cursor (``created`` of the newest event, read before
the backfill starts) is stored first, and the events since then are applied once every
resource is done.

**Created windows**: one chain of pages cannot go faster than one page per round trip
(``starting_after`` needs the previous page), about 10 pages/s at 50 ms and 2-3 pages/s
on real Stripe, far below the 25/s per endpoint. So the big resources
(``BACKFILL_WINDOWS_LIVE`` / ``BACKFILL_WINDOWS_TEST``: invoices) are split into K disjoint ``created`` windows listed concurrently:
``created[lt]=b1``, ``created[gte]=b1&created[lt]=b2``, ..., ``created[gte]=b(K-1)`` (the
oldest window open downward, the newest upward, so every object falls in exactly one
window whatever the boundaries are; an object created exactly at ``b`` belongs to the
window starting at ``b``). Each window is a ``sync_state`` row of its own named
``<resource>@<gte>..<lt>`` (``invoices@..1700000000``, ``invoices@1700000000..``) with
its own cursor and phase, so resuming stays exact per window; the base row
(``invoices``) is ``running`` until every window is done, then ``done`` with the total.
The boundaries are chosen once, when the resource starts, and the window rows are written
in one transaction: a resumed backfill finds the rows and reuses their boundaries (a
resource already partly listed as one chain, with a cursor in its base row, goes on as
one chain). Choosing them costs no request: a windowed resource waits until customers are
listed, and invoices are split so each window holds about as many customer-months (an
invoice stream per customer from its ``created`` to the event cursor) as the others,
between the oldest customer and the event cursor. Objects older than every listed
customer (a deleted customer's invoices) still land in the oldest window. Each window may
end with one partial page, so a backfill makes at most K - 1 list pages more than one
chain would. The windows are fetched side by side but their pages are stored one at a time
(SQLite has one writer anyway; on PostgreSQL two pages upserting the same discount rows in
different orders could deadlock). Windows: 4 for invoices with a live key (100/s global: the per-endpoint 25/s
is what binds, and 4 chains at 10 pages/s reach it at 50 ms latency), 2 with a test key
(25/s global, shared with the line pages and the other resources, so more chains would
only queue in the limiter); ``run_sync(windows={...})`` overrides them (1 = one chain).

**Incremental**: ``/v1/events`` filtered to the types that matter, ``created[gte]`` the
cursor, applied oldest first, each recorded in ``stripe_events`` (insert if absent; an
event already processed is a no-op). ``state_at = event.created``, so an older state
never overwrites a newer one. An object is re-fetched when the event's API version is
not the pinned one or the payload is partial (embedded lists with ``has_more``, discount
ids instead of objects, a price's tiers or currency_options left out). A cursor older
than 30 days falls back to a list-based refresh (mode ``refresh``).
"""

from __future__ import annotations

from integrations.stripe_client import Page
from integrations.stripe_sync.events import (
    EVENT_TYPE_GROUPS,
    RELEVANT_EVENT_TYPES,
    apply_event,
    process_stored_event,
    record_event,
)
from integrations.stripe_sync.run import run_sync
from integrations.stripe_sync.state import (
    EVENTS_RESOURCE,
    RESOURCE_NAMES,
    RESOURCES,
    Resource,
    ResourceResult,
    SyncInterrupted,
    SyncResult,
    read_sync_state,
)
from integrations.stripe_sync.windows import (
    WINDOW_SEPARATOR,
    Window,
    backfill_windows,
    plan_boundaries,
    windows_from_boundaries,
)

__all__ = [
    "EVENTS_RESOURCE", "EVENT_TYPE_GROUPS", "RELEVANT_EVENT_TYPES", "RESOURCES",
    "RESOURCE_NAMES", "WINDOW_SEPARATOR", "Page", "Resource", "ResourceResult",
    "SyncInterrupted", "SyncResult", "Window", "apply_event", "backfill_windows",
    "plan_boundaries", "process_stored_event", "read_sync_state", "record_event", "run_sync",
    "windows_from_boundaries",
]

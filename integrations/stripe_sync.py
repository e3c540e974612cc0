"""Stripe sync: backfill, incremental events and list-based refresh into the mirror.

The sync only reads Stripe (through :class:`integrations.stripe_client.StripeReader`) and
writes through the mirror store (:mod:`integrations.stripe_mirror`).

**Backfill** (first sync, ``full=True``): every resource is listed with ``expand[]`` (no
per-object requests), newest first, 100 per page. After each page the objects and the
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

import bisect
import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, select
from sqlalchemy.orm import Session

from integrations import stripe_mirror
from integrations.stripe_client import (
    PINNED_API_VERSION,
    Page,
    StripeAccessDenied,
    StripeReader,
)
from models.mirror import QuarantinedObject, StripeCustomer, StripeEvent, SyncState
from nrr.db import session_scope
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

EVENTS_RETENTION_SECONDS = 30 * 24 * 3600
# A cursor this close to Stripe's 30-day horizon is treated as stale: events near the edge
# may already be gone by the time the list reaches them.
STALE_MARGIN_SECONDS = 3600
EVENTS_RESOURCE = "events"

ProgressCallback = Callable[[str, int, bool], None]
"""``progress(resource, objects_stored_now, finished)``; called after every page."""


@dataclass(frozen=True)
class Resource:
    name: str  # list endpoint name in the reader and the sync_state key
    kind: str  # mirror kind
    params: Mapping[str, Any]


RESOURCES: tuple[Resource, ...] = (
    Resource("customers", "customer", {}),
    Resource("products", "product", {}),
    # tiers and currency_options are includable: left out of responses unless expanded.
    Resource("prices", "price", {"expand": ["data.tiers", "data.currency_options"]}),
    Resource("coupons", "coupon", {}),
    Resource("subscriptions", "subscription",
             {"status": "all", "expand": ["data.discounts", "data.items.data.discounts"]}),
    Resource("invoices", "invoice", {"expand": ["data.discounts"]}),
)
RESOURCE_NAMES = tuple(r.name for r in RESOURCES)
T = TypeVar("T")

# Concurrent ``created`` windows per resource during a backfill (see the module docstring).
BACKFILL_WINDOWS_LIVE: Mapping[str, int] = {"invoices": 4}
BACKFILL_WINDOWS_TEST: Mapping[str, int] = {"invoices": 2}
WINDOW_SEPARATOR = "@"
_WINDOW_NAME = re.compile(r"^(?P<base>[a-z_]+)@(?P<gte>\d*)\.\.(?P<lt>\d*)$")


def backfill_windows(livemode: bool, configured: int | None = None) -> dict[str, int]:
    """The number of ``created`` windows per resource: ``configured``
    (``NRR_STRIPE_BACKFILL_WINDOWS``) for every windowed resource, else the key mode's."""
    defaults = BACKFILL_WINDOWS_LIVE if livemode else BACKFILL_WINDOWS_TEST
    if configured is not None:
        return {name: configured for name in defaults}
    return dict(defaults)


@dataclass(frozen=True)
class Window:
    """``created[gte]=gte&created[lt]=lt`` of one resource; None is open on that side."""

    base: str
    gte: int | None
    lt: int | None

    @property
    def name(self) -> str:
        return (f"{self.base}{WINDOW_SEPARATOR}{'' if self.gte is None else self.gte}.."
                f"{'' if self.lt is None else self.lt}")

    @property
    def created(self) -> dict[str, int]:
        bounds: dict[str, int] = {}
        if self.gte is not None:
            bounds["gte"] = self.gte
        if self.lt is not None:
            bounds["lt"] = self.lt
        return bounds

    @classmethod
    def parse(cls, name: str) -> Window | None:
        match = _WINDOW_NAME.match(name)
        if match is None:
            return None
        return cls(match["base"], int(match["gte"]) if match["gte"] else None,
                   int(match["lt"]) if match["lt"] else None)


def windows_from_boundaries(base: str, boundaries: list[int]) -> list[Window]:
    """K - 1 increasing boundaries -> K windows covering every ``created`` once."""
    edges: list[int | None] = [None, *sorted(set(boundaries)), None]
    return [Window(base, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


# /v1/events takes at most 20 names in types[]: two groups, each listed on its own.
EVENT_TYPE_GROUPS: tuple[tuple[str, ...], ...] = (
    (
        "customer.created", "customer.updated", "customer.deleted",
        "customer.subscription.created", "customer.subscription.updated",
        "customer.subscription.deleted", "customer.subscription.paused",
        "customer.subscription.resumed", "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
        "customer.discount.created", "customer.discount.updated", "customer.discount.deleted",
    ),
    (
        "invoice.created", "invoice.updated", "invoice.finalized", "invoice.paid",
        "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible",
        "invoice.deleted",
        "price.created", "price.updated", "price.deleted",
        "product.created", "product.updated", "product.deleted",
        "coupon.created", "coupon.updated", "coupon.deleted",
    ),
)
RELEVANT_EVENT_TYPES = frozenset(t for group in EVENT_TYPE_GROUPS for t in group)

# Stripe object type -> (mirror kind, reader resource, retrieve params)
_OBJECT_KINDS: dict[str, tuple[str, str, Mapping[str, Any]]] = {
    "customer": ("customer", "customers", {}),
    "product": ("product", "products", {}),
    "price": ("price", "prices", {"expand": ["tiers", "currency_options"]}),
    "coupon": ("coupon", "coupons", {}),
    "subscription": ("subscription", "subscriptions",
                     {"expand": ["discounts", "items.data.discounts"]}),
    "invoice": ("invoice", "invoices", {"expand": ["discounts"]}),
}
# Deletion events whose object is really gone (customer.subscription.deleted is a
# cancellation: the subscription still exists with status canceled, so it is stored).
_DELETION_TYPES = {
    "customer.deleted": "customer",
    "product.deleted": "product",
    "price.deleted": "price",
    "coupon.deleted": "coupon",
    "invoice.deleted": "invoice",
    "customer.discount.deleted": "discount",
}


class SyncInterrupted(Exception):
    """Raised by a page hook (tests) or when another resource failed: the sync stops."""


@dataclass
class ResourceResult:
    pages: int = 0
    line_pages: int = 0
    stored: int = 0
    skipped: int = 0


@dataclass
class SyncResult:
    mode: str  # backfill | events | refresh
    requests: int = 0
    objects_stored: int = 0
    skipped: int = 0
    events_applied: int = 0
    events_seen: int = 0
    customer_ids: set[str] = field(default_factory=set)
    resources: dict[str, ResourceResult] = field(default_factory=dict)
    request_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "requests": self.requests,
            "objects_stored": self.objects_stored,
            "skipped": self.skipped,
            "events_seen": self.events_seen,
            "events_applied": self.events_applied,
            "customers_touched": len(self.customer_ids),
            "seconds": round(self.seconds, 3),
            "resources": {name: vars(r) for name, r in self.resources.items()},
            "request_counts": dict(sorted(self.request_counts.items())),
            "notes": list(self.notes),
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- sync_state


def _state(session: Session, resource: str) -> SyncState:
    row = session.get(SyncState, resource)
    if row is None:
        row = SyncState(resource=resource, phase="idle", objects_synced=0)
        session.add(row)
        session.flush()
    return row


def _start_listing(row: SyncState) -> None:
    """A resource (or window) about to be listed from its first page."""
    row.phase = "running"
    row.cursor = None
    row.objects_synced = 0
    row.started_at = _utcnow()
    row.finished_at = None
    row.last_error = None


def read_sync_state(engine: Engine) -> list[dict[str, Any]]:
    """Every resource's sync state as plain rows (for ``nrr status``)."""
    with session_scope(engine) as session:
        rows = session.scalars(select(SyncState).order_by(SyncState.resource)).all()
        return [{
            "resource": r.resource, "phase": r.phase, "cursor": r.cursor,
            "event_cursor": r.event_cursor, "objects_synced": r.objects_synced,
            "started_at": r.started_at, "finished_at": r.finished_at,
            "last_error": r.last_error,
        } for r in rows]


def _window_rows(session: Session, base: str) -> list[SyncState]:
    prefix = base + WINDOW_SEPARATOR
    return [row for row in session.scalars(
        select(SyncState).where(SyncState.resource.startswith(prefix, autoescape=True))
        .order_by(SyncState.resource)) if Window.parse(row.resource) is not None]


def _record_error(engine: Engine, resource: str, message: str) -> None:
    with session_scope(engine) as session:
        row = _state(session, resource)
        row.last_error = message[:4000]


# --------------------------------------------------------------------------- events


def record_event(session: Session, event: Mapping[str, Any], *, source: str) -> bool:
    """Insert the event into ``stripe_events`` unless its id is there; True when new."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("event has no id")
    table: Table = StripeEvent.__table__  # type: ignore[assignment]
    obj = (event.get("data") or {}).get("object") or {}
    row = {
        "id": event_id,
        "type": str(event.get("type") or ""),
        "created": int(event.get("created") or 0),
        "api_version": event.get("api_version"),
        "object_id": obj.get("id") if isinstance(obj, Mapping) else None,
        "object_type": obj.get("object") if isinstance(obj, Mapping) else None,
        "livemode": bool(event.get("livemode", False)),
        "source": source,
        "received_at": _utcnow(),
        "processed_at": None,
        "raw": stripe_mirror.to_plain(event),
    }
    insert = stripe_mirror.dialect_insert(session, table)
    result = session.execute(insert.values(**row).on_conflict_do_nothing(index_elements=["id"]))
    return bool(getattr(result, "rowcount", 0))


def _quarantine(session: Session, object_type: str, object_id: str | None, reason: str,
                raw: Any, stage: str = "sync") -> None:
    session.add(QuarantinedObject(object_type=object_type, object_id=object_id, stage=stage,
                                  reason=reason[:4000], raw=stripe_mirror.to_plain(raw)))
    log.warning("sync.quarantined", object_type=object_type, object_id=object_id, reason=reason)


def _needs_refetch(event: Mapping[str, Any], obj: Mapping[str, Any]) -> str | None:
    """Why the event's payload cannot be stored as is, or None when it can."""
    if event.get("api_version") != PINNED_API_VERSION:
        return f"api_version {event.get('api_version')!r} is not {PINNED_API_VERSION}"
    object_type = obj.get("object")
    if object_type == "subscription":
        items = obj.get("items") or {}
        if isinstance(items, Mapping) and items.get("has_more"):
            return "subscription items list is partial"
        if any(isinstance(d, str) for d in obj.get("discounts") or []):
            return "subscription discounts are ids, not objects"
        for item in (items.get("data") or []) if isinstance(items, Mapping) else []:
            if any(isinstance(d, str) for d in (item.get("discounts") or [])):
                return "item discounts are ids, not objects"
    elif object_type == "invoice":
        if any(isinstance(d, str) for d in obj.get("discounts") or []):
            return "invoice discounts are ids, not objects"
    elif object_type == "price":
        if obj.get("billing_scheme") == "tiered" and not obj.get("tiers"):
            return "price tiers were left out"
        if "currency_options" not in obj:
            # Events never carry includable fields; a price used in another currency
            # cannot be priced without them.
            return "price currency_options were left out"
    return None


_PRICE_INCLUDABLES = ("tiers", "currency_options")


def _with_stored_includables(session: Session, price: dict[str, Any]) -> dict[str, Any]:
    """A price payload without its includable fields (as events carry it, when nothing
    could re-fetch it) keeps the stored ones rather than erasing them."""
    missing = [key for key in _PRICE_INCLUDABLES if key not in price]
    if not missing:
        return price
    table = stripe_mirror.table_for("price")
    found = session.execute(select(table.c.raw).where(table.c.id == price["id"])).first()
    stored = found.raw if found is not None and isinstance(found.raw, Mapping) else {}
    return {**price, **{key: stored[key] for key in missing if key in stored}}


def _stored_state_at(session: Session, kind: str, object_id: str) -> int | None:
    table = stripe_mirror.table_for(kind)
    found = session.execute(select(table.c.state_at).where(table.c.id == object_id)).first()
    return int(found.state_at) if found else None


def apply_event(session: Session, settings: Settings, event: Mapping[str, Any], *,
                client: StripeReader | None = None, refetch: bool = False) -> set[str]:
    """Apply one Stripe event to the mirror; returns the customers it touched.

    Deletions mark the object deleted; other events store ``data.object`` as of
    ``event.created``. When the payload cannot be trusted (API version, partial lists,
    unexpanded discounts), ties with the stored state's instant, or ``refetch`` is set,
    the object is re-fetched through ``client`` (when given). Never commits.
    """
    event_type = str(event.get("type") or "")
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise ValueError(f"event {event.get('id')} has no integer 'created'")
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        raise ValueError(f"event {event.get('id')} ({event_type}) carries no object with an id")
    object_id = str(obj["id"])
    object_type = str(obj.get("object") or "")

    if event_type in _DELETION_TYPES:
        kind = _DELETION_TYPES[event_type]
        touched = stripe_mirror.mark_deleted(session, kind, object_id, state_at=created)
        if kind == "discount":
            customer = obj.get("customer")
            if isinstance(customer, str):
                touched.add(customer)
                stripe_mirror.mark_dirty(session, {customer})
        return touched

    if object_type == "discount":
        # customer.discount.created|updated: the discount lives on its customer or
        # subscription; store the parent so the discount row comes with it.
        parent_type, parent_id = (("subscription", obj.get("subscription"))
                                  if isinstance(obj.get("subscription"), str)
                                  else ("customer", obj.get("customer")))
        if not isinstance(parent_id, str):
            raise ValueError(f"discount {object_id} names neither subscription nor customer")
        if client is None:
            stripe_mirror.mark_dirty(session, {str(obj.get("customer"))} - {"None"})
            return {c for c in [obj.get("customer")] if isinstance(c, str)}
        return _store_fetched(session, client, parent_type, parent_id, created)

    if object_type not in _OBJECT_KINDS:
        log.info("sync.event_ignored", event_id=event.get("id"), type=event_type,
                 reason=f"object type {object_type!r} is not mirrored")
        return set()
    kind, _resource, _params = _OBJECT_KINDS[object_type]

    reason = "asked to re-fetch" if refetch else _needs_refetch(event, obj)
    if reason is None and client is not None:
        stored_at = _stored_state_at(session, kind, object_id)
        if stored_at is not None and stored_at == created:
            # Two states stamped with the same second: only Stripe knows which is newer.
            reason = "another state of the object has the same instant"
    if reason is not None and client is not None:
        log.debug("sync.refetch", object_type=object_type, object_id=object_id, reason=reason)
        return _store_fetched(session, client, object_type, object_id, created)
    if reason is not None:
        log.info("sync.untrusted_payload_stored", object_id=object_id, reason=reason)

    payload = dict(obj)
    if object_type == "price":
        payload = _with_stored_includables(session, payload)
    touched = stripe_mirror.store_objects(session, kind, [payload], state_at=created).customer_ids
    if object_type == "invoice" and client is not None:
        extra = _missing_invoice_lines(client, obj)
        if extra is not None:
            touched |= _store_extra_lines(session, object_id, extra, created)
    return set(touched)


def _store_fetched(session: Session, client: StripeReader, object_type: str, object_id: str,
                   event_created: int) -> set[str]:
    kind, resource, params = _OBJECT_KINDS[object_type]
    # The fetched state is at least as new as the event; later events still apply over it.
    state_at = event_created
    fetched = client.retrieve(resource, object_id, params)
    if fetched is None:
        if kind == "subscription":
            log.warning("sync.subscription_missing", object_id=object_id)
            return set()
        return stripe_mirror.mark_deleted(session, kind, object_id, state_at=state_at)
    if kind == "subscription":
        fetched = _complete_subscription_items(client, fetched)
    extra = _missing_invoice_lines(client, fetched) if kind == "invoice" else None
    result = stripe_mirror.store_objects(session, kind, [fetched], state_at=state_at)
    touched = set(result.customer_ids)
    if extra is not None:
        touched |= _store_extra_lines(session, object_id, extra, state_at)
    return touched


def _complete_subscription_items(client: StripeReader, subscription: dict[str, Any]
                                 ) -> dict[str, Any]:
    """A subscription whose embedded items list is partial gets all its items."""
    items = subscription.get("items")
    if not isinstance(items, Mapping) or not items.get("has_more"):
        return subscription
    collected: list[dict[str, Any]] = []
    for page in client.iter_pages("subscription_items",
                                  {"subscription": subscription["id"],
                                   "expand": ["data.discounts"]}):
        collected.extend(page.data)
    completed = dict(subscription)
    completed["items"] = {**items, "data": collected, "has_more": False}
    return completed


def _missing_invoice_lines(client: StripeReader, invoice: Mapping[str, Any]
                           ) -> list[dict[str, Any]] | None:
    """The lines missing from a partial embedded list (None when the list is complete)."""
    lines = invoice.get("lines")
    if not isinstance(lines, Mapping) or not lines.get("has_more"):
        return None
    return _paged_invoice_lines(client, invoice)[0]


def _paged_invoice_lines(client: StripeReader, invoice: Mapping[str, Any]
                         ) -> tuple[list[dict[str, Any]], int]:
    """The lines after the embedded ones, from ``/v1/invoices/{id}/lines``, and the number
    of pages that took."""
    lines = invoice.get("lines")
    embedded = [line for line in (lines.get("data") or [] if isinstance(lines, Mapping) else [])
                if isinstance(line, Mapping)]
    after = str(embedded[-1]["id"]) if embedded and "id" in embedded[-1] else None
    extra: list[dict[str, Any]] = []
    pages = 0
    for page in client.invoice_lines_pages(str(invoice["id"]), starting_after=after):
        extra.extend(page.data)
        pages += 1
    return extra, pages


def _store_extra_lines(session: Session, invoice_id: str, lines: list[dict[str, Any]],
                       state_at: int) -> set[str]:
    """Store paged lines of a stored invoice and mark its line list complete."""
    for line in lines:
        line.setdefault("invoice", invoice_id)
    result = stripe_mirror.store_objects(session, "invoice_line", lines, state_at=state_at)
    stripe_mirror.mark_lines_complete(session, invoice_id)
    return result.customer_ids


def process_stored_event(engine: Engine, settings: Settings, event_id: str, *,
                         client: StripeReader | None = None) -> set[str]:
    """Apply an event recorded in ``stripe_events`` (webhook / worker path); idempotent."""
    with session_scope(engine) as session:
        row = session.get(StripeEvent, event_id)
        if row is None:
            raise LookupError(f"event {event_id} is not recorded")
        if row.processed_at is not None:
            return set()
        touched = _apply_recorded(session, settings, row, client=client)
        return touched


def _apply_recorded(session: Session, settings: Settings, row: StripeEvent, *,
                    client: StripeReader | None, superseded: bool = False,
                    refetch: bool = False) -> set[str]:
    touched: set[str] = set()
    if superseded:
        # A newer event of the same object comes later in this batch and carries a newer
        # full state; the event stays recorded (raw kept) for the history.
        pass
    elif row.type in RELEVANT_EVENT_TYPES:
        try:
            # apply_event checks the event's shape before it writes anything, so a
            # rejected event leaves nothing half-applied.
            touched = apply_event(session, settings, row.raw, client=client, refetch=refetch)
        except ValueError as exc:
            _quarantine(session, "event", row.id, f"cannot apply {row.type}: {exc}", row.raw,
                        stage="events")
    else:
        log.info("sync.event_ignored", event_id=row.id, type=row.type,
                 reason="event type does not affect revenue")
    row.processed_at = _utcnow()
    return touched


# --------------------------------------------------------------------------- run


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
            _prepare_backfill(engine, reader, restart=full or mode == "refresh")
            _backfill(engine, settings, reader, result, progress=progress, parallel=parallel,
                      page_hook=page_hook, windows=windows)
            _finish_backfill(engine)
        _apply_events(engine, settings, reader, result, progress=progress)
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


def _prepare_backfill(engine: Engine, reader: StripeReader, *, restart: bool) -> None:
    """Reset (``restart``) or keep the per-resource cursors; store the event cursor first."""
    with session_scope(engine) as session:
        events = _state(session, EVENTS_RESOURCE)
        fresh = restart or events.phase != "waiting" or events.event_cursor is None
        if fresh:
            newest = reader.newest_event_created()
            events.event_cursor = newest if newest is not None else int(time.time())
            events.phase = "waiting"
            events.started_at = _utcnow()
            events.finished_at = None
            events.last_error = None
        for name in RESOURCE_NAMES:
            row = _state(session, name)
            if fresh or row.phase not in ("running", "done"):
                for window_row in _window_rows(session, name):
                    session.delete(window_row)
                _start_listing(row)


def _finish_backfill(engine: Engine) -> None:
    with session_scope(engine) as session:
        events = _state(session, EVENTS_RESOURCE)
        events.phase = "idle"


def _backfill(engine: Engine, settings: Settings, reader: StripeReader, result: SyncResult, *,
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
            _record_error(engine, resource.name, f"{type(exc).__name__}: {exc}")
            raise
        if resource.name == "customers":
            customers_listed.set()
        with lock:
            result.resources[resource.name] = outcome[0]
            result.objects_stored += outcome[0].stored
            result.skipped += outcome[0].skipped
            result.customer_ids |= outcome[1]

    _side_by_side(RESOURCES, run, stop=stop, parallel=parallel, name="nrr-backfill")


def _side_by_side(tasks: Sequence[T], work: Callable[[T], None], *, stop: threading.Event,
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
        row = _state(session, resource.name)
        if row.phase == "done":
            if progress:
                progress(resource.name, 0, True)
            return outcome, touched
        cursor = row.cursor
        # A listed object is at least as new as the newest event read before the backfill
        # began; the events after that instant are applied over it, oldest first. (Stripe's
        # clock, not ours: the two need not agree.)
        state_at = _state(session, EVENTS_RESOURCE).event_cursor or int(time.time())
        planned = [w for w in (Window.parse(r.resource)
                               for r in _window_rows(session, resource.name)) if w is not None]
    if not planned and cursor is None and windows > 1:
        # Nothing listed yet: choose the windows once (kept on resume).
        if customers_listed is not None and resource.name != "customers":
            while not customers_listed.wait(0.05):
                if stop.is_set():
                    raise SyncInterrupted(f"{resource.name}: stopped because another "
                                          "resource failed")
        planned = _plan_windows(engine, resource.name, windows, until=state_at)
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
                window_row = _state(session, window.name)
                if window_row.phase == "done":
                    return
                window_cursor = window_row.cursor
            params = {**resource.params, "created": window.created}
            _list_chain(engine, reader, resource, window.name, params, window_cursor,
                        state_at, outcome, touched, progress=progress, stop=stop,
                        count_page=count_page, final=False, lock=lock, store_lock=store_lock)

        _side_by_side(planned, run_window, stop=stop, name=f"nrr-{resource.name}-window")
    with session_scope(engine) as session:
        row = _state(session, resource.name)
        if planned:
            row.objects_synced = sum(int(w.objects_synced or 0)
                                     for w in _window_rows(session, resource.name))
        if row.phase != "done":  # an empty list ends without a has_more=false page
            row.phase = "done"
            row.cursor = None
            row.finished_at = _utcnow()
    if progress and planned:
        progress(resource.name, 0, True)
    return outcome, touched


def plan_boundaries(customer_created: list[int], windows: int, until: int) -> list[int]:
    """K - 1 ``created`` boundaries giving each window about as many customer-months.

    A customer adds one invoice stream from its ``created`` to ``until``; the boundaries
    split the total of those streams' lengths in K equal parts. Empty (one window) when
    there are no customers or no time to split.
    """
    created = sorted(c for c in customer_created if c <= until)
    if windows < 2 or not created or created[0] >= until:
        return []
    prefix = [0]
    for value in created:
        prefix.append(prefix[-1] + value)

    def volume(t: int) -> int:  # sum over customers created <= t of (t - created)
        n = bisect.bisect_right(created, t)
        return n * t - prefix[n]

    total = volume(until)
    boundaries: list[int] = []
    for k in range(1, windows):
        target = total * k / windows
        lo, hi = created[0], until
        while lo < hi:
            mid = (lo + hi) // 2
            if volume(mid) < target:
                lo = mid + 1
            else:
                hi = mid
        if (not boundaries or lo > boundaries[-1]) and created[0] < lo < until:
            boundaries.append(lo)
    return boundaries


def _plan_windows(engine: Engine, base: str, windows: int, *, until: int) -> list[Window]:
    """Choose and store the windows of ``base`` in one transaction; [] for one chain."""
    with session_scope(engine) as session:
        created = [int(c) for c in session.scalars(select(StripeCustomer.created))
                   if c is not None]
        boundaries = plan_boundaries(created, windows, until)
        if not boundaries:
            return []
        planned = windows_from_boundaries(base, boundaries)
        for window in planned:
            _start_listing(_state(session, window.name))
    log.info("sync.windows", resource=base, windows=[w.name for w in planned])
    return planned


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
    # strictly in order, one transaction per page with its cursor: see _PagePipeline.
    with _PagePipeline(reader, resource, cursor, stop, params=params, label=row_name) \
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
                    page_touched |= _store_extra_lines(session, invoice_id, lines, state_at)
                row = _state(session, row_name)
                row.cursor = page.last_id or row.cursor
                row.objects_synced = (row.objects_synced or 0) + stored.stored
                row.last_error = None
                if not page.has_more:
                    row.phase = "done"
                    row.cursor = None
                    row.finished_at = _utcnow()
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
        row = _state(session, row_name)
        if row.phase != "done":  # an empty list ends without a has_more=false page
            row.phase = "done"
            row.cursor = None
            row.finished_at = _utcnow()


# How many listed pages may wait, fetched, for the store (besides the one being stored and
# the one being requested), and how many requests complete partial embedded lists at once.
PREFETCH_PAGES = 2
COMPLETION_THREADS = 4


@dataclass
class _FetchedPage:
    """A listed page and the requests completing its partial embedded lists (running)."""

    page: Page
    objects: Future[list[dict[str, Any]]] | None = None
    lines: dict[str, Future[tuple[list[dict[str, Any]], int]]] = field(default_factory=dict)

    def result(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], int]:
        """(objects, invoice id -> missing lines, line pages fetched); waits for them."""
        objects = self.objects.result() if self.objects is not None else self.page.data
        extra: dict[str, list[dict[str, Any]]] = {}
        line_pages = 0
        for invoice_id, future in self.lines.items():
            extra[invoice_id], pages = future.result()
            line_pages += pages
        return objects, extra, line_pages


_END = object()


class _PagePipeline:
    """Lists one resource in a background thread, ahead of the consumer that stores it.

    The next page is requested as soon as the previous one arrives (its ``starting_after``
    is known then), while the consumer completes and stores earlier pages; each page's
    partial embedded lists (invoice lines, subscription items) start being fetched as soon
    as it arrives. At most ``PREFETCH_PAGES`` fetched pages wait. Pages come out in list
    order, and the consumer stores them one at a time with their cursor, so a crash or a
    kill resumes from the last stored page: a prefetched page that was not stored is just
    listed again (from the stored cursor), never skipped. Closing the pipeline stops the
    lister and waits for the requests in flight, so none outlives the backfill.
    """

    def __init__(self, reader: StripeReader, resource: Resource, cursor: str | None,
                 stop: threading.Event, *, params: Mapping[str, Any] | None = None,
                 label: str | None = None) -> None:
        self._reader = reader
        self._resource = resource
        self._params = resource.params if params is None else params
        self._label = label or resource.name
        self._cursor = cursor
        self._stop = stop
        self._closed = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_PAGES)
        self._pool: ThreadPoolExecutor | None = None
        if resource.name in ("invoices", "subscriptions"):
            self._pool = ThreadPoolExecutor(max_workers=COMPLETION_THREADS,
                                            thread_name_prefix=f"nrr-{self._label}-complete")
        self._thread = threading.Thread(target=self._list, daemon=True,
                                        name=f"nrr-list-{self._label}")

    def __enter__(self) -> _PagePipeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[_FetchedPage]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _list(self) -> None:
        pages = self._reader.iter_pages(self._resource.name, self._params,
                                        starting_after=self._cursor)
        try:
            for page in pages:
                if not self._put(self._start_completion(page)):
                    return
                if self._stop.is_set():
                    # Not the end of the list: the consumer must not mark the resource done.
                    self._put(SyncInterrupted(
                        f"{self._label}: stopped because another resource failed"))
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _start_completion(self, page: Page) -> _FetchedPage:
        fetched = _FetchedPage(page)
        if self._pool is None:
            return fetched
        reader = self._reader
        if self._resource.name == "subscriptions":
            if any(isinstance(s.get("items"), Mapping) and s["items"].get("has_more")
                   for s in page.data):
                fetched.objects = self._pool.submit(
                    lambda: [_complete_subscription_items(reader, s) for s in page.data])
        elif self._resource.name == "invoices":
            # Different invoices' lines are independent: fetched side by side (the limiter
            # keeps the global and per-endpoint rates).
            for invoice in page.data:
                lines = invoice.get("lines")
                if (isinstance(lines, Mapping) and lines.get("has_more")
                        and isinstance(invoice.get("id"), str)):
                    fetched.lines[str(invoice["id"])] = self._pool.submit(
                        _paged_invoice_lines, reader, invoice)
        return fetched


def _fetch_events(reader: StripeReader, since: int) -> list[dict[str, Any]]:
    """Every relevant event created at or after ``since``, oldest first, without duplicates."""
    seen: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for group in EVENT_TYPE_GROUPS:
        newest_first: list[dict[str, Any]] = []
        for page in reader.iter_pages("events", {"types": list(group), "created": {"gte": since}}):
            newest_first.extend(page.data)
        for position, event in enumerate(reversed(newest_first)):
            seen.setdefault(str(event["id"]), (int(event.get("created") or 0), position, event))
    return [event for _c, _p, event in sorted(seen.values(), key=lambda t: (t[0], t[1]))]


def _object_key(event: Mapping[str, Any]) -> str | None:
    obj = (event.get("data") or {}).get("object")
    if isinstance(obj, Mapping) and isinstance(obj.get("id"), str):
        return f"{obj.get('object')}:{obj['id']}:{event.get('type') in _DELETION_TYPES}"
    return None


def _apply_events(engine: Engine, settings: Settings, reader: StripeReader, result: SyncResult,
                  *, progress: ProgressCallback | None) -> None:
    try:
        _apply_events_since_cursor(engine, settings, reader, result, progress=progress)
    except Exception as exc:
        _record_error(engine, EVENTS_RESOURCE, f"{type(exc).__name__}: {exc}")
        raise


def _apply_events_since_cursor(engine: Engine, settings: Settings, reader: StripeReader,
                               result: SyncResult, *,
                               progress: ProgressCallback | None) -> None:
    with session_scope(engine) as session:
        cursor = _state(session, EVENTS_RESOURCE).event_cursor
    if cursor is None:
        return
    events = _fetch_events(reader, cursor)
    result.events_seen += len(events)
    # Events carry full object states, so only the newest event of each object in the
    # batch needs applying (deletions and discount events are objects of their own).
    # When two events of one object share the newest second, only Stripe knows which
    # state is newer: the object is re-fetched.
    newest: dict[str, int] = {}
    ties: set[str] = set()
    for index, event in enumerate(events):
        key = _object_key(event)
        if key is None:
            continue
        previous = newest.get(key)
        if previous is not None and events[previous].get("created") == event.get("created"):
            ties.add(key)
        elif previous is not None:
            ties.discard(key)
        newest[key] = index
    if progress:
        progress(EVENTS_RESOURCE, 0, False)
    for index, event in enumerate(events):
        key = _object_key(event)
        superseded = key is not None and newest[key] != index
        with session_scope(engine) as session:
            record_event(session, event, source="events")
            row = session.get(StripeEvent, str(event["id"]))
            assert row is not None
            if row.processed_at is None:
                result.customer_ids |= _apply_recorded(
                    session, settings, row, client=reader, superseded=superseded,
                    refetch=key in ties and not superseded)
                result.events_applied += 1
            state = _state(session, EVENTS_RESOURCE)
            created = int(event.get("created") or 0)
            if state.event_cursor is None or created > state.event_cursor:
                state.event_cursor = created
            state.objects_synced = (state.objects_synced or 0) + 1
        if progress:
            progress(EVENTS_RESOURCE, 1, False)
    with session_scope(engine) as session:
        state = _state(session, EVENTS_RESOURCE)
        state.finished_at = _utcnow()
        state.phase = "idle"
        state.last_error = None
    if progress:
        progress(EVENTS_RESOURCE, 0, True)


__all__ = [
    "EVENT_TYPE_GROUPS", "RESOURCES", "Page", "SyncResult", "Window", "apply_event",
    "backfill_windows", "plan_boundaries",
    "process_stored_event", "read_sync_state", "record_event", "run_sync",
]

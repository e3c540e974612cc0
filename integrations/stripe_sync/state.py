"""Sync bookkeeping: the resources listed, the results, and the ``sync_state`` rows that
make a backfill resumable (one row per resource, window and the event cursor)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.mirror import SyncState
from nrr.db import session_scope

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
    # Every status: a released or canceled schedule replaces a stale active one. Phases name
    # their prices and discounts by id (the mirror holds those), so nothing is expanded.
    Resource("subscription_schedules", "subscription_schedule", {}),
    Resource("invoices", "invoice", {"expand": ["data.discounts"]}),
)


RESOURCE_NAMES = tuple(r.name for r in RESOURCES)


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def state_row(session: Session, resource: str) -> SyncState:
    row = session.get(SyncState, resource)
    if row is None:
        row = SyncState(resource=resource, phase="idle", objects_synced=0)
        session.add(row)
        session.flush()
    return row


def start_listing(row: SyncState) -> None:
    """A resource (or window) about to be listed from its first page."""
    row.phase = "running"
    row.cursor = None
    row.objects_synced = 0
    row.started_at = utcnow()
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


def record_error(engine: Engine, resource: str, message: str) -> None:
    with session_scope(engine) as session:
        row = state_row(session, resource)
        row.last_error = message[:4000]

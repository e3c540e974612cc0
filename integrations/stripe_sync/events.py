"""Events: recorded in ``stripe_events``, applied to the mirror oldest first; objects whose
payload cannot be trusted are re-fetched (see :mod:`integrations.stripe_sync`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, Table, select
from sqlalchemy.orm import Session

from integrations import stripe_mirror
from integrations.stripe_client import (
    PINNED_API_VERSION,
    StripeReader,
)
from integrations.stripe_sync.pages import (
    complete_subscription_items,
    missing_invoice_lines,
    store_extra_lines,
)
from integrations.stripe_sync.state import (
    EVENTS_RESOURCE,
    ProgressCallback,
    SyncResult,
    record_error,
    state_row,
    utcnow,
)
from models.mirror import QuarantinedObject, StripeEvent
from nrr.db import session_scope
from nrr.db.statements import dialect_insert
from nrr.domain import stripe_shapes
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

# /v1/events takes at most 20 names in types[]: two groups, each listed on its own.
EVENT_TYPE_GROUPS: tuple[tuple[str, ...], ...] = (
    (
        "customer.created", "customer.updated", "customer.deleted",
        "customer.subscription.created", "customer.subscription.updated",
        "customer.subscription.deleted", "customer.subscription.paused",
        "customer.subscription.resumed", "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
        "customer.discount.created", "customer.discount.updated", "customer.discount.deleted",
        # Subscription schedules: the later phases and ends the outlook reads.
        "subscription_schedule.created", "subscription_schedule.updated",
        "subscription_schedule.released", "subscription_schedule.canceled",
        "subscription_schedule.completed", "subscription_schedule.aborted",
        "subscription_schedule.expiring",
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
    "subscription_schedule": ("subscription_schedule", "subscription_schedules", {}),
}


# Deletion events whose object is really gone (customer.subscription.deleted is a
# cancellation: the subscription still exists with status canceled, so it is stored).
DELETION_TYPES = {
    "customer.deleted": "customer",
    "product.deleted": "product",
    "price.deleted": "price",
    "coupon.deleted": "coupon",
    "invoice.deleted": "invoice",
    "customer.discount.deleted": "discount",
}


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
        # The recompute reads an event's customer by this column (not a JSON path).
        "customer_id": stripe_shapes.event_customer_id(event),
        "livemode": bool(event.get("livemode", False)),
        "source": source,
        "received_at": utcnow(),
        "processed_at": None,
        "raw": stripe_mirror.to_plain(event),
    }
    insert = dialect_insert(session, table)
    # RETURNING, not rowcount: what a driver reports as the rowcount of a skipped insert
    # differs (PostgreSQL answered every duplicate as new).
    inserted = session.execute(insert.values(**row).on_conflict_do_nothing(
        index_elements=["id"]).returning(table.c.id)).first()
    return inserted is not None


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

    if event_type in DELETION_TYPES:
        kind = DELETION_TYPES[event_type]
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
        extra = missing_invoice_lines(client, obj)
        if extra is not None:
            touched |= store_extra_lines(session, object_id, extra, created)
    return set(touched)


def _store_fetched(session: Session, client: StripeReader, object_type: str, object_id: str,
                   event_created: int) -> set[str]:
    kind, resource, params = _OBJECT_KINDS[object_type]
    # The fetched state is at least as new as the event; later events still apply over it.
    state_at = event_created
    fetched = client.retrieve(resource, object_id, params)
    if fetched is None:
        if kind in ("subscription", "subscription_schedule"):
            log.warning(f"sync.{kind}_missing", object_id=object_id)
            return set()
        return stripe_mirror.mark_deleted(session, kind, object_id, state_at=state_at)
    if kind == "subscription":
        fetched = complete_subscription_items(client, fetched)
    extra = missing_invoice_lines(client, fetched) if kind == "invoice" else None
    result = stripe_mirror.store_objects(session, kind, [fetched], state_at=state_at)
    touched = set(result.customer_ids)
    if extra is not None:
        touched |= store_extra_lines(session, object_id, extra, state_at)
    return touched


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
    other_mode = _other_mode(session, settings, row)
    if other_mode is not None:
        # One endpoint may receive both modes' events; the other mode's never create or
        # change this mode's objects. The event stays recorded (raw kept).
        log.warning("sync.event_skipped", event_id=row.id, type=row.type, reason=other_mode)
    elif superseded:
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
    row.processed_at = utcnow()
    return touched


def _mode_name(livemode: bool) -> str:
    return "live" if livemode else "test"


def _other_mode(session: Session, settings: Settings, row: StripeEvent) -> str | None:
    """Why ``row`` belongs to the other mode than this deployment's, or None.

    This deployment's mode is its key's (``sk_live_``/``rk_test_``...); without a key (a
    webhook server that only records and hands on) it is the mode of the objects already
    mirrored. An event whose object is stored in the other mode is refused too.
    """
    event_live = bool(row.livemode)
    mode = settings.stripe_livemode
    if mode is None:
        stored = session.execute(select(stripe_mirror.table_for("customer").c.livemode)
                                 .limit(1)).first()
        mode = None if stored is None else bool(stored[0])
    if mode is not None and mode != event_live:
        return (f"a {_mode_name(event_live)}-mode event; this deployment is in "
                f"{_mode_name(mode)} mode")
    obj = (row.raw.get("data") or {}).get("object") if isinstance(row.raw, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("id"), str):
        return None
    kind = DELETION_TYPES.get(row.type) or _OBJECT_KINDS.get(str(obj.get("object")),
                                                              (None,))[0]
    if kind is None or kind == "discount":
        return None
    table = stripe_mirror.table_for(kind)
    if "livemode" not in table.c:
        return None
    stored = session.execute(select(table.c.livemode).where(table.c.id == obj["id"])).first()
    if stored is not None and bool(stored[0]) != event_live:
        return (f"a {_mode_name(event_live)}-mode event for {obj['id']}, stored in "
                f"{_mode_name(bool(stored[0]))} mode")
    return None


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
        return f"{obj.get('object')}:{obj['id']}:{event.get('type') in DELETION_TYPES}"
    return None


def apply_events(engine: Engine, settings: Settings, reader: StripeReader, result: SyncResult,
                  *, progress: ProgressCallback | None) -> None:
    try:
        _apply_events_since_cursor(engine, settings, reader, result, progress=progress)
    except Exception as exc:
        record_error(engine, EVENTS_RESOURCE, f"{type(exc).__name__}: {exc}")
        raise


def _apply_events_since_cursor(engine: Engine, settings: Settings, reader: StripeReader,
                               result: SyncResult, *,
                               progress: ProgressCallback | None) -> None:
    with session_scope(engine) as session:
        cursor = state_row(session, EVENTS_RESOURCE).event_cursor
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
            state = state_row(session, EVENTS_RESOURCE)
            created = int(event.get("created") or 0)
            if state.event_cursor is None or created > state.event_cursor:
                state.event_cursor = created
            state.objects_synced = (state.objects_synced or 0) + 1
        if progress:
            progress(EVENTS_RESOURCE, 1, False)
    with session_scope(engine) as session:
        state = state_row(session, EVENTS_RESOURCE)
        state.finished_at = utcnow()
        state.phase = "idle"
        state.last_error = None
    if progress:
        progress(EVENTS_RESOURCE, 0, True)

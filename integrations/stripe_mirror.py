"""The mirror store: Stripe objects (plain dicts, current API shape) into the mirror tables.

Every write is an upsert keyed by the Stripe id whose ``WHERE excluded.state_at >=
table.state_at`` guard keeps an older state from overwriting a newer one, whatever order
deliveries arrive in. The raw payload is kept beside the parsed columns so a rule change
recomputes without calling Stripe again. Statements are bulk (one executemany per table
per call), never a row at a time.

The columns are derived from the domain's records: each object is read once, by
:mod:`nrr.domain.stripe_shapes` (schedules by :mod:`nrr.domain.schedule_shapes`). An
object that cannot be understood (no id, wrong ``object``, or a parser's Skip: a field
of the wrong type, a required one missing, an embedded item or line that cannot be read)
goes to the ``quarantine`` table with the reason; the other objects of the call are stored. Customers
whose data changed are marked in ``dirty_customers`` for the incremental recompute.

``livemode`` is stored as given; the recompute keeps only the configured key's mode, so
objects of the other mode are never mixed into a number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from models.mirror import (
    DirtyCustomer,
    QuarantinedObject,
    StripeCoupon,
    StripeCustomer,
    StripeDiscount,
    StripeInvoice,
    StripeInvoiceLine,
    StripePrice,
    StripeProduct,
    StripeSubscription,
    StripeSubscriptionItem,
)
from models.outlook import StripeSubscriptionSchedule
from nrr.db.statements import dialect_insert, in_chunks, upsert_rows
from nrr.domain import fields, stripe_shapes
from nrr.domain.records import Coupon, Customer, InvoiceLine, Price, Product, Skip
from nrr.domain.schedule_shapes import parse_schedule
from nrr.logs import get_logger

log = get_logger(__name__)

KINDS = ("customer", "product", "price", "coupon", "subscription", "invoice", "invoice_line",
         "discount", "subscription_schedule")
DELETABLE_KINDS = ("customer", "product", "price", "coupon", "subscription",
                   "subscription_item", "invoice", "discount")

_TABLES: dict[str, Table] = {
    "customer": StripeCustomer.__table__,  # type: ignore[dict-item]
    "product": StripeProduct.__table__,  # type: ignore[dict-item]
    "price": StripePrice.__table__,  # type: ignore[dict-item]
    "coupon": StripeCoupon.__table__,  # type: ignore[dict-item]
    "subscription": StripeSubscription.__table__,  # type: ignore[dict-item]
    "subscription_item": StripeSubscriptionItem.__table__,  # type: ignore[dict-item]
    "discount": StripeDiscount.__table__,  # type: ignore[dict-item]
    "invoice": StripeInvoice.__table__,  # type: ignore[dict-item]
    "invoice_line": StripeInvoiceLine.__table__,  # type: ignore[dict-item]
    "subscription_schedule": StripeSubscriptionSchedule.__table__,  # type: ignore[dict-item]
}


def table_for(kind: str) -> Table:
    """The mirror table of ``kind`` (``customer``, ``price``, ``invoice_line``, ...)."""
    return _TABLES[kind]
_CUSTOMERS: Table = StripeCustomer.__table__  # type: ignore[assignment]
_ITEMS: Table = StripeSubscriptionItem.__table__  # type: ignore[assignment]
_SUBSCRIPTIONS: Table = StripeSubscription.__table__  # type: ignore[assignment]
_DISCOUNTS: Table = StripeDiscount.__table__  # type: ignore[assignment]
_INVOICES: Table = StripeInvoice.__table__  # type: ignore[assignment]
_LINES: Table = StripeInvoiceLine.__table__  # type: ignore[assignment]
_PRICES: Table = StripePrice.__table__  # type: ignore[assignment]
_DIRTY: Table = DirtyCustomer.__table__  # type: ignore[assignment]
_QUARANTINE: Table = QuarantinedObject.__table__  # type: ignore[assignment]

# Columns of stripe_discounts that say where a discount was seen: a later sighting
# elsewhere (an invoice after the subscription) adds to them, never blanks them.
_DISCOUNT_LINK_COLUMNS = ("customer_id", "subscription_id", "subscription_item_id", "invoice_id")

class MalformedObject(fields.FieldError):
    """The object cannot be understood; the message is the quarantine reason."""


@dataclass
class StoreResult:
    stored: int = 0
    skipped: int = 0
    customer_ids: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- payloads


_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any) -> Any:
    """JSON-safe copy of a payload: mappings become dicts with str keys, tuples lists,
    Decimals (an SDK object's ``to_dict()`` holds them) strings."""
    kind = type(value)
    if kind in _SCALARS:  # the bulk of a payload: exact types first, no ABC checks
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k if type(k) is str else str(k): to_plain(v) for k, v in value.items()}
    if kind is list or isinstance(value, tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def _object_id(obj: Any, kind: str) -> str:
    """The object's identity before it is read: an object, with an id that fits the
    column, of the kind it is stored as."""
    if not isinstance(obj, Mapping):
        raise MalformedObject(f"a {kind} must be an object, got {type(obj).__name__}")
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise MalformedObject("missing or empty 'id'")
    if len(value) > 255:
        raise MalformedObject("'id' longer than 255 characters")
    expected = "line_item" if kind == "invoice_line" else kind
    declared = obj.get("object")
    if declared is not None and declared != expected:
        raise MalformedObject(f"'object' is {declared!r}, expected {expected!r}")
    return value


def _read(parsed: Any) -> Any:
    """The record a domain parser gave, or its Skip raised as the quarantine reason."""
    if isinstance(parsed, Skip):
        raise MalformedObject(parsed.reason)
    return parsed


def _whole(skips: Sequence[Skip]) -> None:
    """An embedded item or line that cannot be read quarantines its parent: the parent
    is stored whole or not at all (a partial item list would retire the missing item)."""
    if skips:
        first = skips[0]
        raise MalformedObject(f"{first.object_type} {first.object_id}: {first.reason}")


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- rows
# Each kind's rows are derived from the records of ``nrr.domain.stripe_shapes`` (the one
# reading of a Stripe object); nothing here reads a payload's fields again.


@dataclass
class _Parsed:
    """Rows of one call, per table, before the bulk statements."""

    main: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    discounts: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    # subscription id -> ids of the items it lists (when the list is complete)
    item_sets: dict[str, set[str]] = field(default_factory=dict)
    # invoice id -> ids of its lines (when the list is complete)
    line_sets: dict[str, set[str]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    customer_ids: set[str] = field(default_factory=set)


def _base(record: Any, obj: Mapping[str, Any], state_at: int, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "livemode": record.livemode,
        "created": record.created,
        "state_at": state_at,
        "raw": obj,  # already plain: store_objects converts each object once
        "synced_at": now,
    }


def _discount_row(obj: Mapping[str, Any], *, state_at: int, now: datetime, livemode: bool,
                  found_on: Mapping[str, str | None]) -> dict[str, Any]:
    """An expanded discount object as a row; ``found_on`` names the object it was seen on."""
    _object_id(obj, "discount")
    discount, _coupon = _read(stripe_shapes.parse_discount(obj, found_on))
    return {
        "id": discount.id,
        "livemode": livemode,
        "created": discount.start,
        "state_at": state_at,
        "raw": obj,
        "synced_at": now,
        "coupon_id": discount.coupon_id,
        "customer_id": discount.customer_id,
        "subscription_id": discount.subscription_id,
        "subscription_item_id": discount.subscription_item_id,
        "invoice_id": discount.invoice_id,
        "start": discount.start,
        "end": discount.end,
    }


def _found_discount_rows(ids: Iterable[str], found: Mapping[str, Any], *, state_at: int,
                         now: datetime, livemode: bool,
                         found_on: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """Rows of the discounts ``ids`` that came expanded (``found``); bare ids store nothing."""
    return [_discount_row(found[d], state_at=state_at, now=now, livemode=livemode,
                          found_on=found_on) for d in ids if d in found]


def _customer_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    found: dict[str, Any] = {}
    customer: Customer = _read(stripe_shapes.parse_customer(obj, found))
    row = _base(customer, obj, state_at, now)
    row.update(email=customer.email, name=customer.name, country=customer.country,
               currency=customer.currency, metadata=dict(customer.metadata), deleted=False)
    discounts = _found_discount_rows(customer.discount_ids, found, state_at=state_at, now=now,
                                     livemode=customer.livemode,
                                     found_on={"customer_id": customer.id})
    out.main.append(row)
    out.discounts.extend(discounts)
    out.customer_ids.add(customer.id)


def _product_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    product: Product = _read(stripe_shapes.parse_product(obj))
    row = _base(product, obj, state_at, now)
    row.update(name=product.name, active=product.active, deleted=False)
    out.main.append(row)


def _price_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    price: Price = _read(stripe_shapes.parse_price(obj))
    row = _base(price, obj, state_at, now)
    row.update(
        product_id=price.product_id,
        currency=price.currency,
        active=price.active,
        type=price.type,
        billing_scheme=price.billing_scheme,
        tiers_mode=price.tiers_mode,
        unit_amount_decimal=_text(price.unit_amount_decimal),
        interval=price.interval,
        # A one-time price has no cycle: the record's defaults describe none.
        interval_count=price.interval_count if price.recurring else None,
        usage_type=price.usage_type if price.recurring else None,
        tax_behavior=price.tax_behavior,
        nickname=price.nickname,
        deleted=False,
    )
    out.main.append(row)


def _coupon_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    coupon: Coupon = _read(stripe_shapes.parse_coupon(obj))
    row = _base(coupon, obj, state_at, now)
    row.update(
        percent_off=_text(coupon.percent_off),
        amount_off=coupon.amount_off,
        currency=coupon.currency,
        duration=coupon.duration,
        duration_in_months=coupon.duration_in_months,
        deleted=False,
    )
    out.main.append(row)


def _subscription_rows(obj: Mapping[str, Any], state_at: int, now: datetime,
                       out: _Parsed) -> None:
    found: dict[str, Any] = {}
    sub, skips = _read(stripe_shapes.parse_subscription(obj, found))
    _whole(skips)
    row = _base(sub, obj, state_at, now)
    row.update(
        customer_id=sub.customer_id,
        status=sub.status,
        currency=sub.currency,
        start_date=sub.start_date,
        trial_start=sub.trial_start,
        trial_end=sub.trial_end,
        cancel_at=sub.cancel_at,
        cancel_at_period_end=sub.cancel_at_period_end,
        canceled_at=sub.canceled_at,
        ended_at=sub.ended_at,
        paused_at=sub.paused_at,
        pause_collection=(None if sub.pause_collection_behavior is None else
                          {"behavior": sub.pause_collection_behavior,
                           "resumes_at": sub.pause_collection_resumes_at}),
        discount_ids=list(sub.discount_ids),
        deleted=False,
    )
    links: dict[str, str | None] = {"customer_id": sub.customer_id, "subscription_id": sub.id}
    discounts = _found_discount_rows(sub.discount_ids, found, state_at=state_at, now=now,
                                     livemode=sub.livemode, found_on=links)
    items = []
    for item in sub.items:
        items.append({
            "id": item.id,
            "livemode": sub.livemode,
            "created": item.created,
            "state_at": state_at,
            "raw": item.payload,
            "synced_at": now,
            "subscription_id": sub.id,
            "customer_id": sub.customer_id,
            "price_id": item.price_id,
            "quantity": item.quantity,
            "current_period_start": item.current_period_start,
            "current_period_end": item.current_period_end,
            "discount_ids": list(item.discount_ids),
            "deleted": False,
        })
        discounts.extend(_found_discount_rows(
            item.discount_ids, found, state_at=state_at, now=now, livemode=sub.livemode,
            found_on={**links, "subscription_item_id": item.id}))
    out.main.append(row)
    out.items.extend(items)
    out.discounts.extend(discounts)
    if sub.items_complete:
        out.item_sets[sub.id] = {item.id for item in sub.items}
    out.customer_ids.add(sub.customer_id)


def _line_row(line: InvoiceLine, *, livemode: bool) -> dict[str, Any]:
    """A line's row; customer and status are its invoice's (``parse_invoice_line`` keywords)."""
    return {
        "id": line.id,
        "invoice_id": line.invoice_id,
        "customer_id": line.customer_id,
        "subscription_id": line.subscription_id,
        "subscription_item_id": line.subscription_item_id,
        "price_id": line.price_id,
        "invoice_status": line.invoice_status,
        "quantity": line.quantity,
        "quantity_decimal": _text(line.quantity_decimal),
        "period_start": line.period_start,
        "period_end": line.period_end,
        "amount": line.amount,
        "currency": line.currency,
        "proration": line.proration,
        "discount_amount": line.discount_amount,
        "discount_ids": list(line.discount_ids),
        "livemode": livemode,
        "raw": line.payload,
    }


def _invoice_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    found: dict[str, Any] = {}
    invoice, lines, skips = _read(stripe_shapes.parse_invoice(obj, found, one_off_lines=True))
    _whole(skips)
    row = _base(invoice, obj, state_at, now)
    row.update(
        customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id,
        status=invoice.status,
        billing_reason=invoice.billing_reason,
        currency=invoice.currency,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        finalized_at=invoice.finalized_at,
        paid_at=invoice.paid_at,
        total=invoice.total,
        discount_ids=list(invoice.discount_ids),
        lines_complete=invoice.lines_complete,
    )
    discounts = _found_discount_rows(
        invoice.discount_ids, found, state_at=state_at, now=now, livemode=invoice.livemode,
        found_on={"customer_id": invoice.customer_id, "invoice_id": invoice.id})
    out.main.append(row)
    out.lines.extend(_line_row(line, livemode=invoice.livemode) for line in lines)
    out.discounts.extend(discounts)
    if invoice.lines_complete:
        out.line_sets[invoice.id] = {line.id for line in lines}
    if invoice.customer_id:
        out.customer_ids.add(invoice.customer_id)


def _discount_rows(obj: Mapping[str, Any], state_at: int, now: datetime, out: _Parsed) -> None:
    """A discount object on its own (as a sync expands it, or from an event). A discount
    has no ``livemode`` of its own: its customer's is filled in when it is stored."""
    row = _discount_row(obj, state_at=state_at, now=now, livemode=False, found_on={})
    out.discounts.append(row)
    if row["customer_id"]:
        out.customer_ids.add(row["customer_id"])


def _subscription_schedule_rows(obj: Mapping[str, Any], state_at: int, now: datetime,
                                out: _Parsed) -> None:
    """A subscription schedule (the outlook reads its phases from ``raw``)."""
    schedule = _read(parse_schedule(obj))
    row = _base(schedule, obj, state_at, now)
    row.update(customer_id=schedule.customer_id, subscription_id=schedule.subscription_id,
               status=schedule.status, end_behavior=schedule.end_behavior)
    out.main.append(row)
    if schedule.customer_id:
        out.customer_ids.add(schedule.customer_id)


_ROWS = {
    "discount": _discount_rows,
    "subscription_schedule": _subscription_schedule_rows,
    "customer": _customer_rows,
    "product": _product_rows,
    "price": _price_rows,
    "coupon": _coupon_rows,
    "subscription": _subscription_rows,
    "invoice": _invoice_rows,
}


def mirror_rows(kind: str, objects: Iterable[Mapping[str, Any]], *, state_at: int,
                now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows :func:`store_objects` would write for ``objects`` of ``kind``, by table
    name, without a database (benchmark accounts are written with ``bulk_insert``).
    An object that cannot be understood raises :class:`MalformedObject`."""
    if kind not in _ROWS:
        raise ValueError(f"unknown object kind {kind!r}")
    now = now or datetime.now(UTC)
    parsed = _Parsed()
    for obj in objects:
        _object_id(obj, kind)
        _ROWS[kind](obj, state_at, now, parsed)
    out: dict[str, list[dict[str, Any]]] = {}
    if kind != "discount":
        out[_TABLES[kind].name] = _newest_by_id(parsed.main)
    out[_ITEMS.name] = _newest_by_id(parsed.items)
    out[_LINES.name] = _dedupe(parsed.lines)
    out[_DISCOUNTS.name] = _newest_by_id(parsed.discounts)
    return {name: rows for name, rows in out.items() if rows}


# --------------------------------------------------------------------------- statements


def _newest_by_id(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per id, the newest state (the last one given wins a tie)."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = chosen.get(row["id"])
        if current is None or row.get("state_at", 0) >= current.get("state_at", 0):
            chosen[row["id"]] = row
    return list(chosen.values())


def _stored_state(session: Session, table: Table, ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in in_chunks(list(ids)):
        for object_id, state_at in session.execute(
                select(table.c.id, table.c.state_at).where(table.c.id.in_(chunk))):
            found[object_id] = int(state_at)
    return found


def mark_dirty(session: Session, customer_ids: Iterable[str]) -> None:
    """Mark customers for the next incremental recompute (bulk, idempotent)."""
    ids = sorted({c for c in customer_ids if c})
    if not ids:
        return
    stmt = dialect_insert(session, _DIRTY)
    stmt = stmt.on_conflict_do_update(index_elements=["customer_id"],
                                      set_={"marked_at": stmt.excluded.marked_at})
    now = datetime.now(UTC)
    session.execute(stmt, [{"customer_id": c, "marked_at": now} for c in ids])


def quarantine(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Keep objects that could not be understood, with the reason (bulk)."""
    if rows:
        session.execute(_QUARANTINE.insert(), list(rows))


def _quarantine_row(kind: str, obj: Any, reason: str, stage: str = "mirror") -> dict[str, Any]:
    object_id = obj.get("id") if isinstance(obj, Mapping) else None
    try:
        raw = to_plain(obj)
        json.dumps(raw)
    except (TypeError, ValueError):
        raw = {"unserialisable": repr(obj)[:2000]}
    return {
        "object_type": kind,
        "object_id": str(object_id)[:255] if object_id is not None else None,
        "stage": stage,
        "reason": reason,
        "raw": raw,
        "created_at": datetime.now(UTC),
    }


def _customers_of_prices(session: Session, price_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in in_chunks(list(price_ids)):
        found.update(c for (c,) in session.execute(
            select(_ITEMS.c.customer_id).where(_ITEMS.c.price_id.in_(chunk)).distinct()) if c)
        found.update(c for (c,) in session.execute(
            select(_LINES.c.customer_id).where(_LINES.c.price_id.in_(chunk)).distinct()) if c)
    return found


def _customers_of_products(session: Session, product_ids: Sequence[str]) -> set[str]:
    price_ids: list[str] = []
    for chunk in in_chunks(list(product_ids)):
        price_ids.extend(p for (p,) in session.execute(
            select(_PRICES.c.id).where(_PRICES.c.product_id.in_(chunk))))
    return _customers_of_prices(session, price_ids)


def _customers_of_coupons(session: Session, coupon_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in in_chunks(list(coupon_ids)):
        found.update(c for (c,) in session.execute(
            select(_DISCOUNTS.c.customer_id).where(_DISCOUNTS.c.coupon_id.in_(chunk)).distinct())
            if c)
    return found


# --------------------------------------------------------------------------- public API


def store_objects(session: Session, kind: str, objects: Iterable[Any], *,
                  state_at: int) -> StoreResult:
    """Store Stripe objects of one ``kind`` (see ``KINDS``) as of ``state_at`` (Unix seconds).

    Returns how many were stored, how many were quarantined, and the customers touched
    (also marked dirty). Deleted objects (``"deleted": true``) go through
    :func:`mark_deleted`. Never commits.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(state_at, bool) or not isinstance(state_at, int):
        raise ValueError(f"state_at must be integer Unix seconds, got {state_at!r}")
    now = datetime.now(UTC)
    result = StoreResult()
    parsed = _Parsed()
    bad: list[dict[str, Any]] = []
    deleted: list[str] = []
    line_objects: list[tuple[Mapping[str, Any], str]] = []
    for obj in objects:
        try:
            # One JSON-safe copy per object: the rows' raw payloads (the object's and its
            # embedded items, lines and discounts) are parts of it, never copied again.
            obj = to_plain(obj)
            object_id = _object_id(obj, kind)
            if obj.get("deleted") is True:
                deleted.append(object_id)
                continue
            if kind == "invoice_line":
                line_objects.append((obj, object_id))
                continue
            scratch = _Parsed()
            _ROWS[kind](obj, state_at, now, scratch)
        except fields.FieldError as exc:
            bad.append(_quarantine_row(kind, obj, str(exc)))
            continue
        except (TypeError, AttributeError, KeyError) as exc:  # shapes nobody planned for
            bad.append(_quarantine_row(kind, obj, f"cannot read object: {type(exc).__name__}: {exc}"))
            continue
        parsed.main.extend(scratch.main)
        parsed.items.extend(scratch.items)
        parsed.discounts.extend(scratch.discounts)
        parsed.lines.extend(scratch.lines)
        parsed.item_sets.update(scratch.item_sets)
        parsed.line_sets.update(scratch.line_sets)
        parsed.customer_ids.update(scratch.customer_ids)

    if kind == "invoice_line":
        _store_lines(session, line_objects, parsed, bad)
        result.stored = len(parsed.lines)
    else:
        _store_parsed(session, kind, parsed)
        result.stored = len(parsed.discounts if kind == "discount" else parsed.main)

    for object_id in deleted:
        parsed.customer_ids |= mark_deleted(session, kind, object_id, state_at=state_at)
        result.stored += 1

    if kind == "price" and parsed.main:
        parsed.customer_ids |= _customers_of_prices(session, [r["id"] for r in parsed.main])
    elif kind == "product" and parsed.main:
        parsed.customer_ids |= _customers_of_products(session, [r["id"] for r in parsed.main])
    elif kind == "coupon" and parsed.main:
        parsed.customer_ids |= _customers_of_coupons(session, [r["id"] for r in parsed.main])

    quarantine(session, bad)
    for row in bad:
        log.warning("mirror.quarantined", object_type=kind, object_id=row["object_id"],
                    reason=row["reason"])
    result.skipped = len(bad)
    result.customer_ids = parsed.customer_ids
    mark_dirty(session, result.customer_ids)
    return result


def _store_parsed(session: Session, kind: str, parsed: _Parsed) -> None:
    table = _TABLES[kind]
    main = _newest_by_id(parsed.main)
    if kind != "discount":
        upsert_rows(session, table, main)
    if kind == "subscription" and main:
        upsert_rows(session, _ITEMS, _newest_by_id(parsed.items))
        won = _won(session, table, main)
        _retire_missing_items(session, {s: ids for s, ids in parsed.item_sets.items() if s in won})
    if kind == "invoice" and main:
        won = _won(session, table, main)
        lines = [line for line in parsed.lines if line["invoice_id"] in won]
        upsert_rows(session, _LINES, _dedupe(lines), guard=False)
        _drop_missing_lines(session, {i: ids for i, ids in parsed.line_sets.items() if i in won})
        # A status change (paid -> void) must reach lines stored from earlier pages.
        statuses = [{"b_id": r["id"], "b_status": r["status"], "b_customer": r["customer_id"]}
                    for r in main if r["id"] in won]
        if statuses:
            session.execute(
                update(_LINES).where(_LINES.c.invoice_id == bindparam("b_id")).values(
                    invoice_status=bindparam("b_status"), customer_id=bindparam("b_customer")),
                statuses,
                execution_options={"synchronize_session": False},
            )
    if kind == "discount" and parsed.discounts:
        customer_ids = sorted({r["customer_id"] for r in parsed.discounts if r["customer_id"]})
        live: set[str] = set()
        for chunk in in_chunks(customer_ids):
            live.update(c for (c,) in session.execute(
                select(_CUSTOMERS.c.id).where(_CUSTOMERS.c.id.in_(chunk),
                                              _CUSTOMERS.c.livemode.is_(True))))
        for row in parsed.discounts:
            row["livemode"] = row["customer_id"] in live
    if parsed.discounts:
        upsert_rows(session, _DISCOUNTS, _newest_by_id(parsed.discounts),
                    keep_columns=("removed_at",), coalesce_columns=_DISCOUNT_LINK_COLUMNS)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({row["id"]: row for row in rows}.values())


def _won(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Ids whose stored state is the one just written (the guard let it through)."""
    stored = _stored_state(session, table, [r["id"] for r in rows])
    return {r["id"] for r in rows if stored.get(r["id"]) == r["state_at"]}


def _retire_missing_items(session: Session, item_sets: Mapping[str, set[str]]) -> None:
    """Items no longer listed on a subscription were removed from it: flag them deleted."""
    for subscription_id, keep in item_sets.items():
        stmt = update(_ITEMS).where(_ITEMS.c.subscription_id == subscription_id,
                                    _ITEMS.c.deleted.is_(False))
        if keep:
            stmt = stmt.where(_ITEMS.c.id.not_in(sorted(keep)))
        session.execute(stmt.values(deleted=True), execution_options={"synchronize_session": False})


def _drop_missing_lines(session: Session, line_sets: Mapping[str, set[str]]) -> None:
    """A complete line list replaces the stored one (lines of a draft can change)."""
    for invoice_id, keep in line_sets.items():
        stmt = delete(_LINES).where(_LINES.c.invoice_id == invoice_id)
        if keep:
            stmt = stmt.where(_LINES.c.id.not_in(sorted(keep)))
        session.execute(stmt, execution_options={"synchronize_session": False})


def _store_lines(session: Session, line_objects: Sequence[tuple[Mapping[str, Any], str]],
                 parsed: _Parsed, bad: list[dict[str, Any]]) -> None:
    """Lines paged from ``/v1/invoices/{id}/lines``: the stored invoice gives customer and status."""
    invoice_ids = sorted({str(obj["invoice"]) for obj, _ in line_objects
                          if isinstance(obj.get("invoice"), str)})
    invoices: dict[str, tuple[str | None, str | None, str | None, bool]] = {}
    for chunk in in_chunks(invoice_ids):
        for found in session.execute(select(_INVOICES.c.id, _INVOICES.c.customer_id,
                                            _INVOICES.c.status, _INVOICES.c.currency,
                                            _INVOICES.c.livemode).where(_INVOICES.c.id.in_(chunk))):
            invoices[found.id] = (found.customer_id, found.status, found.currency,
                                  bool(found.livemode))
    for obj, object_id in line_objects:
        invoice_id = obj.get("invoice")
        try:
            if not isinstance(invoice_id, str) or not invoice_id:
                raise MalformedObject(f"line {object_id} names no invoice")
            if invoice_id not in invoices:
                raise MalformedObject(f"invoice {invoice_id} of line {object_id} is not stored yet; "
                                      "store the invoice first")
            customer_id, status, currency, livemode = invoices[invoice_id]
            line = _read(stripe_shapes.parse_invoice_line(
                obj, invoice_id=invoice_id, invoice_status=status, customer_id=customer_id,
                currency=currency, one_off=True))
            row = _line_row(line, livemode=livemode)
        except fields.FieldError as exc:
            bad.append(_quarantine_row("invoice_line", obj, str(exc)))
            continue
        except (TypeError, AttributeError, KeyError) as exc:
            bad.append(_quarantine_row("invoice_line", obj,
                                       f"cannot read object: {type(exc).__name__}: {exc}"))
            continue
        parsed.lines.append(row)
        if customer_id:
            parsed.customer_ids.add(customer_id)
    upsert_rows(session, _LINES, _dedupe(parsed.lines), guard=False)


def mark_lines_complete(session: Session, invoice_id: str) -> None:
    """Every line of the invoice is stored (after paging ``/v1/invoices/{id}/lines``)."""
    session.execute(update(_INVOICES).where(_INVOICES.c.id == invoice_id)
                    .values(lines_complete=True),
                    execution_options={"synchronize_session": False})


def mark_deleted(session: Session, kind: str, object_id: str, *, state_at: int) -> set[str]:
    """Record that Stripe deleted an object; returns (and marks dirty) the customers touched.

    Customers, products, prices, coupons, subscriptions and items are flagged ``deleted``
    and keep their rows (a deleted customer keeps its history). A deleted discount gets
    ``removed_at``. A deleted invoice (only drafts can be deleted) is removed with its
    lines, since drafts never describe service. An unknown id for a customer is
    remembered as a deleted stub so a late ``created`` event cannot bring it back.
    """
    if kind not in DELETABLE_KINDS and kind != "invoice_line":
        raise ValueError(f"unknown object kind {kind!r}")
    customers: set[str] = set()
    table = _TABLES[kind]
    now = datetime.now(UTC)
    if kind == "discount":
        row = session.execute(select(_DISCOUNTS.c.customer_id).where(
            _DISCOUNTS.c.id == object_id)).first()
        session.execute(update(_DISCOUNTS).where(_DISCOUNTS.c.id == object_id,
                                                 _DISCOUNTS.c.removed_at.is_(None))
                        .values(removed_at=state_at),
                        execution_options={"synchronize_session": False})
        if row and row.customer_id:
            customers.add(row.customer_id)
    elif kind == "invoice" or kind == "invoice_line":
        if kind == "invoice":
            row = session.execute(select(_INVOICES.c.customer_id).where(
                _INVOICES.c.id == object_id)).first()
            session.execute(delete(_LINES).where(_LINES.c.invoice_id == object_id),
                            execution_options={"synchronize_session": False})
            session.execute(delete(_INVOICES).where(_INVOICES.c.id == object_id,
                                                    _INVOICES.c.state_at <= state_at),
                            execution_options={"synchronize_session": False})
        else:
            row = session.execute(select(_LINES.c.customer_id).where(
                _LINES.c.id == object_id)).first()
            session.execute(delete(_LINES).where(_LINES.c.id == object_id),
                            execution_options={"synchronize_session": False})
        if row and row.customer_id:
            customers.add(row.customer_id)
    else:
        existing = session.execute(select(table.c.id).where(table.c.id == object_id)).first()
        if existing is None and kind == "customer":
            upsert_rows(session, table, [{
                "id": object_id, "livemode": False, "created": None, "state_at": state_at,
                "raw": {"id": object_id, "object": "customer", "deleted": True},
                "synced_at": now, "metadata": {}, "deleted": True,
            }])
        session.execute(update(table).where(table.c.id == object_id,
                                            table.c.state_at <= state_at)
                        .values(deleted=True, state_at=state_at, synced_at=now),
                        execution_options={"synchronize_session": False})
        if kind == "customer":
            customers.add(object_id)
        elif kind == "subscription":
            row = session.execute(select(_SUBSCRIPTIONS.c.customer_id).where(
                _SUBSCRIPTIONS.c.id == object_id)).first()
            if row:
                customers.add(row.customer_id)
        elif kind == "subscription_item":
            row = session.execute(select(_ITEMS.c.customer_id).where(
                _ITEMS.c.id == object_id)).first()
            if row and row.customer_id:
                customers.add(row.customer_id)
        elif kind == "price":
            customers |= _customers_of_prices(session, [object_id])
        elif kind == "product":
            customers |= _customers_of_products(session, [object_id])
        elif kind == "coupon":
            customers |= _customers_of_coupons(session, [object_id])
    mark_dirty(session, customers)
    return customers

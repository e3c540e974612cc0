"""The mirror store: Stripe objects (plain dicts, current API shape) into the mirror tables.

Every write is an upsert keyed by the Stripe id whose ``WHERE excluded.state_at >=
table.state_at`` guard keeps an older state from overwriting a newer one, whatever order
deliveries arrive in. The raw payload is kept beside the parsed columns so a rule change
recomputes without calling Stripe again. Statements are bulk (one executemany per table
per call), never a row at a time.

An object that cannot be understood (no id, wrong types, wrong ``object``) goes to the
``quarantine`` table with the reason; the other objects of the call are stored. Customers
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
from nrr.domain import fields
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


# --------------------------------------------------------------------------- field readers


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


# Typed field reads are the normaliser's (nrr.domain.fields); MalformedObject is a
# FieldError, so a wrong field quarantines the object with the reader's message.
_id_of = fields.ref
_int = fields.integer
_str = fields.text
_bool = fields.flag
_list = fields.entries


def _map(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    return fields.mapping(obj, key) or {}


def _decimal_text(value: Any, key: str) -> str | None:
    number = fields.decimal({key: value}, key)
    return None if number is None else str(number)


def _currency(obj: Mapping[str, Any], key: str = "currency", *, required: bool = False) -> str | None:
    return fields.currency(_str(obj, key, required=required), key)


def _object_id(obj: Any, kind: str) -> str:
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


def _discount_ids(obj: Mapping[str, Any], key: str = "discounts") -> list[str]:
    ids = []
    for entry in _list(obj, key):
        found = _id_of(entry, key)
        if found:
            ids.append(found)
    return ids


# --------------------------------------------------------------------------- parsers


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


def _base(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime) -> dict[str, Any]:
    return {
        "id": object_id,
        "livemode": _bool(obj, "livemode"),
        "created": _int(obj, "created"),
        "state_at": state_at,
        "raw": obj,  # already plain: store_objects converts each object once
        "synced_at": now,
    }


def _link(obj: Mapping[str, Any], key: str, links: Mapping[str, str | None]) -> str | None:
    if key in obj:
        return _id_of(obj.get(key), f"discount.{key}")
    return links.get(f"{key}_id")


def _discount_row(obj: Any, *, state_at: int, now: datetime, livemode: bool,
                  links: Mapping[str, str | None]) -> dict[str, Any] | None:
    """An expanded discount object as a row; a bare id gives None (nothing to store)."""
    if not isinstance(obj, Mapping):
        return None
    discount_id = _object_id(obj, "discount")
    source = _map(obj, "source")
    coupon_id = _id_of(source.get("coupon"), "discount.source.coupon")
    row = {
        "id": discount_id,
        "livemode": livemode,
        "created": _int(obj, "start"),
        "state_at": state_at,
        "raw": obj,
        "synced_at": now,
        "coupon_id": coupon_id,
        # Where the discount is attached: its own fields say so; the object it was found
        # on is only a fallback for shapes that lack the field (a customer-level discount
        # seen on an invoice is not an invoice discount).
        "customer_id": _id_of(obj.get("customer"), "discount.customer") or links.get("customer_id"),
        "subscription_id": _link(obj, "subscription", links),
        "subscription_item_id": _link(obj, "subscription_item", links),
        "invoice_id": _link(obj, "invoice", links),
        "start": _int(obj, "start"),
        "end": _int(obj, "end"),
    }
    return row


def _parse_customer(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                    out: _Parsed) -> None:
    metadata = _map(obj, "metadata")
    address = _map(obj, "address")
    row = _base(obj, object_id, state_at, now)
    row.update(
        email=_str(obj, "email"),
        name=_str(obj, "name"),
        country=_str(address, "country"),
        currency=_currency(obj),
        metadata=dict(metadata),
        deleted=False,
    )
    discount = _discount_row(obj.get("discount"), state_at=state_at, now=now,
                             livemode=row["livemode"], links={"customer_id": object_id})
    out.main.append(row)
    if discount:
        out.discounts.append(discount)
    out.customer_ids.add(object_id)


def _parse_product(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                   out: _Parsed) -> None:
    row = _base(obj, object_id, state_at, now)
    row.update(name=_str(obj, "name"), active=_bool(obj, "active", True), deleted=False)
    out.main.append(row)


def _parse_price(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                 out: _Parsed) -> None:
    recurring = _map(obj, "recurring")
    unit_decimal = _decimal_text(obj.get("unit_amount_decimal"), "unit_amount_decimal")
    if unit_decimal is None:
        unit = _int(obj, "unit_amount")
        unit_decimal = None if unit is None else str(unit)
    row = _base(obj, object_id, state_at, now)
    row.update(
        product_id=_id_of(obj.get("product"), "product"),
        currency=_currency(obj, required=True),
        active=_bool(obj, "active", True),
        type=_str(obj, "type"),
        billing_scheme=_str(obj, "billing_scheme"),
        tiers_mode=_str(obj, "tiers_mode"),
        unit_amount_decimal=unit_decimal,
        interval=_str(recurring, "interval"),
        interval_count=_int(recurring, "interval_count"),
        usage_type=_str(recurring, "usage_type"),
        tax_behavior=_str(obj, "tax_behavior"),
        nickname=_str(obj, "nickname"),
        deleted=False,
    )
    out.main.append(row)


def _parse_coupon(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                  out: _Parsed) -> None:
    row = _base(obj, object_id, state_at, now)
    row.update(
        percent_off=_decimal_text(obj.get("percent_off"), "percent_off"),
        amount_off=_int(obj, "amount_off"),
        currency=_currency(obj),
        duration=_str(obj, "duration"),
        duration_in_months=_int(obj, "duration_in_months"),
        deleted=False,
    )
    out.main.append(row)


def _parse_subscription(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                        out: _Parsed) -> None:
    customer_id = _id_of(obj.get("customer"), "customer")
    if customer_id is None:
        raise MalformedObject("missing required field 'customer'")
    status = _str(obj, "status", required=True)
    livemode = _bool(obj, "livemode")
    paused = _map(_map(obj, "status_details"), "paused")
    row = _base(obj, object_id, state_at, now)
    row.update(
        customer_id=customer_id,
        status=status,
        currency=_currency(obj),
        start_date=_int(obj, "start_date"),
        trial_start=_int(obj, "trial_start"),
        trial_end=_int(obj, "trial_end"),
        cancel_at=_int(obj, "cancel_at"),
        cancel_at_period_end=_bool(obj, "cancel_at_period_end"),
        canceled_at=_int(obj, "canceled_at"),
        ended_at=_int(obj, "ended_at"),
        paused_at=_int(paused, "transitioned_at"),
        pause_collection=obj["pause_collection"] if obj.get("pause_collection") else None,
        discount_ids=_discount_ids(obj),
        deleted=False,
    )
    discounts = []
    for entry in _list(obj, "discounts"):
        found = _discount_row(entry, state_at=state_at, now=now, livemode=livemode,
                              links={"customer_id": customer_id, "subscription_id": object_id})
        if found:
            discounts.append(found)
    items_list = _map(obj, "items")
    items = []
    for item in _list(items_list, "data"):
        item_id = _object_id(item, "subscription_item")
        price = item.get("price")
        price_id = _id_of(price, "item.price")
        if price_id is None:  # legacy plan field
            price_id = _id_of(item.get("plan"), "item.plan")
        items.append({
            "id": item_id,
            "livemode": livemode,
            "created": _int(item, "created"),
            "state_at": state_at,
            "raw": item,
            "synced_at": now,
            "subscription_id": object_id,
            "customer_id": customer_id,
            "price_id": price_id,
            "quantity": _int(item, "quantity"),
            "current_period_start": _int(item, "current_period_start"),
            "current_period_end": _int(item, "current_period_end"),
            "discount_ids": _discount_ids(item),
            "deleted": False,
        })
        for entry in _list(item, "discounts"):
            found = _discount_row(entry, state_at=state_at, now=now, livemode=livemode,
                                  links={"customer_id": customer_id, "subscription_id": object_id,
                                         "subscription_item_id": item_id})
            if found:
                discounts.append(found)
    out.main.append(row)
    out.items.extend(items)
    out.discounts.extend(discounts)
    if items_list and not items_list.get("has_more"):
        out.item_sets[object_id] = {item["id"] for item in items}
    out.customer_ids.add(customer_id)


def _line_row(line: Any, *, invoice_id: str | None, customer_id: str | None,
              invoice_status: str | None, livemode: bool | None) -> dict[str, Any]:
    line_id = _object_id(line, "invoice_line")
    invoice_id = invoice_id or _str(line, "invoice")
    if not invoice_id:
        raise MalformedObject(f"line {line_id} names no invoice")
    parent = _map(line, "parent")
    details = _map(parent, "subscription_item_details")
    pricing = _map(line, "pricing")
    price_details = _map(pricing, "price_details")
    period = _map(line, "period")
    discount_total = 0
    discount_ids: list[str] = []
    for entry in _list(line, "discount_amounts"):
        if not isinstance(entry, Mapping):
            raise MalformedObject(f"line {line_id}: discount_amounts entry is not an object")
        value = _int(entry, "amount", required=True) or 0
        discount_total += value
        found = _id_of(entry.get("discount"), "discount_amounts.discount")
        # The discounts that took something off this line, sorted (as nrr.domain reads them).
        if found and value and found not in discount_ids:
            discount_ids.append(found)
    discount_ids.sort()
    subscription_id = _str(details, "subscription") or _id_of(line.get("subscription"),
                                                             "line.subscription")
    return {
        "id": line_id,
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "subscription_id": subscription_id,
        "subscription_item_id": _str(details, "subscription_item"),
        "price_id": _id_of(price_details.get("price"), "pricing.price_details.price"),
        "invoice_status": invoice_status,
        "quantity": _int(line, "quantity"),
        "quantity_decimal": _decimal_text(line.get("quantity_decimal"), "quantity_decimal"),
        "period_start": _int(period, "start"),
        "period_end": _int(period, "end"),
        "amount": _int(line, "amount", required=True),
        "currency": _currency(line),
        "proration": _bool(details, "proration"),
        "discount_amount": discount_total,
        "discount_ids": discount_ids,
        "livemode": _bool(line, "livemode") if livemode is None else livemode,
        "raw": line,
    }


def _parse_invoice(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                   out: _Parsed) -> None:
    customer_id = _id_of(obj.get("customer"), "customer")
    livemode = _bool(obj, "livemode")
    status = _str(obj, "status")
    details = _map(_map(obj, "parent"), "subscription_details")
    transitions = _map(obj, "status_transitions")
    lines_list = _map(obj, "lines")
    row = _base(obj, object_id, state_at, now)
    currency = _currency(obj)
    row.update(
        customer_id=customer_id,
        subscription_id=_id_of(details.get("subscription"), "subscription_details.subscription"),
        status=status,
        billing_reason=_str(obj, "billing_reason"),
        currency=currency,
        period_start=_int(obj, "period_start"),
        period_end=_int(obj, "period_end"),
        finalized_at=_int(transitions, "finalized_at"),
        paid_at=_int(transitions, "paid_at"),
        total=_int(obj, "total"),
        discount_ids=_discount_ids(obj),
        lines_complete=bool(lines_list) and not lines_list.get("has_more", False),
    )
    lines = [
        _line_row(line, invoice_id=object_id, customer_id=customer_id, invoice_status=status,
                  livemode=livemode)
        for line in _list(lines_list, "data")
    ]
    for line in lines:
        line["currency"] = line["currency"] or currency
    discounts = []
    for entry in _list(obj, "discounts"):
        found = _discount_row(entry, state_at=state_at, now=now, livemode=livemode,
                              links={"customer_id": customer_id, "invoice_id": object_id})
        if found:
            discounts.append(found)
    out.main.append(row)
    out.lines.extend(lines)
    out.discounts.extend(discounts)
    if row["lines_complete"]:
        out.line_sets[object_id] = {line["id"] for line in lines}
    if customer_id:
        out.customer_ids.add(customer_id)


def _parse_discount(obj: Mapping[str, Any], object_id: str, state_at: int, now: datetime,
                    out: _Parsed) -> None:
    """A discount object on its own (as a sync expands it, or from an event). A discount
    has no ``livemode`` of its own: its customer's is filled in when it is stored."""
    row = _discount_row(obj, state_at=state_at, now=now, livemode=False, links={})
    assert row is not None
    out.discounts.append(row)
    if row["customer_id"]:
        out.customer_ids.add(row["customer_id"])


def _parse_subscription_schedule(obj: Mapping[str, Any], object_id: str, state_at: int,
                                 now: datetime, out: _Parsed) -> None:
    """A subscription schedule (the outlook reads its phases from ``raw``)."""
    from nrr.domain.records import Skip
    from nrr.domain.schedule_shapes import parse_schedule

    parsed = parse_schedule(obj)
    if isinstance(parsed, Skip):
        raise MalformedObject(parsed.reason)
    row = _base(obj, object_id, state_at, now)
    row.update(customer_id=parsed.customer_id, subscription_id=parsed.subscription_id,
               status=parsed.status, end_behavior=parsed.end_behavior)
    out.main.append(row)
    if parsed.customer_id:
        out.customer_ids.add(parsed.customer_id)


_PARSERS = {
    "discount": _parse_discount,
    "subscription_schedule": _parse_subscription_schedule,
    "customer": _parse_customer,
    "product": _parse_product,
    "price": _parse_price,
    "coupon": _parse_coupon,
    "subscription": _parse_subscription,
    "invoice": _parse_invoice,
}


def mirror_rows(kind: str, objects: Iterable[Mapping[str, Any]], *, state_at: int,
                now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows :func:`store_objects` would write for ``objects`` of ``kind``, by table
    name, without a database (benchmark accounts are written with ``bulk_insert``).
    An object that cannot be understood raises :class:`MalformedObject`."""
    if kind not in _PARSERS:
        raise ValueError(f"unknown object kind {kind!r}")
    now = now or datetime.now(UTC)
    parsed = _Parsed()
    for obj in objects:
        _PARSERS[kind](obj, _object_id(obj, kind), state_at, now, parsed)
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
            _PARSERS[kind](obj, object_id, state_at, now, scratch)
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
            row = _line_row(obj, invoice_id=invoice_id, customer_id=customer_id,
                            invoice_status=status, livemode=livemode)
            row["currency"] = row["currency"] or currency
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

"""Load: the mirror's rows of a range of customers, streamed in customer order and read
by column name into the domain's records (``nrr.domain.records.CustomerData``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nrr.domain import stripe_shapes
from nrr.domain.records import (
    Coupon,
    Customer,
    CustomerData,
    Discount,
    Invoice,
    InvoiceLine,
    Price,
    Skip,
    Subscription,
    SubscriptionItem,
)
from nrr.services.isolation import LeftOut
from nrr.services.recompute.common import T_COUPONS, T_PRICES, T_PRODUCTS
from nrr.services.recompute.queries import (
    ROW_TYPES,
    CustomerRow,
    DiscountRow,
    EventRow,
    InvoiceRow,
    ItemRow,
    LineRow,
    Span,
    SubscriptionRow,
    stream_queries,
)


@dataclass
class Catalogue:
    prices: dict[str, Price]
    coupons: dict[str, Coupon]
    product_names: dict[str, str]
    skips: list[Skip]


def load_catalogue(session: Session, livemode: bool) -> Catalogue:
    """Prices and coupons through the domain's parsers (few rows; raw keeps tiers etc.)."""
    skips: list[Skip] = []
    prices: dict[str, Price] = {}
    for raw in session.scalars(select(T_PRICES.c.raw).where(T_PRICES.c.livemode == livemode)):
        parsed = stripe_shapes.parse_price(raw)
        if isinstance(parsed, Skip):
            skips.append(parsed)
        else:
            prices[parsed.id] = parsed
    coupons: dict[str, Coupon] = {}
    for raw in session.scalars(select(T_COUPONS.c.raw).where(T_COUPONS.c.livemode == livemode)):
        parsed_coupon = stripe_shapes.parse_coupon(raw)
        if isinstance(parsed_coupon, Skip):
            skips.append(parsed_coupon)
        else:
            coupons[parsed_coupon.id] = parsed_coupon
    names = {row.id: row.name
             for row in session.execute(select(T_PRODUCTS.c.id, T_PRODUCTS.c.name)) if row.name}
    return Catalogue(prices, coupons, names, skips)


def _ids(value: Any) -> tuple[str, ...]:
    """A JSON list column as read by the driver (text on SQLite, a list on PostgreSQL)."""
    if not value:
        return ()
    if isinstance(value, str):
        if value == "[]":
            return ()
        value = json.loads(value)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _json_map(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, Mapping) else None


def _decimal(text: str | None) -> Decimal | None:
    """An exact decimal column (written by the mirror from the record's Decimal)."""
    return None if text is None else Decimal(text)


class _Stream:
    """Named rows ordered by customer id (first field), taken one customer at a time."""

    def __init__(self, rows: Iterator[Any]) -> None:
        self._rows = rows
        self._head: Any = next(rows, None)

    def take(self, customer_id: str) -> list[Any]:
        taken: list[Any] = []
        head = self._head
        while head is not None and head[0] < customer_id:  # rows of no known customer
            head = next(self._rows, None)
        while head is not None and head[0] == customer_id:
            taken.append(head)
            head = next(self._rows, None)
        self._head = head
        return taken


def _open_streams(session: Session, livemode: bool,
                  ids: Sequence[str] | Span | None) -> tuple[dict[str, _Stream], list[Any]]:
    connection = session.connection()
    dialect = connection.dialect.name
    raw = connection.connection.driver_connection
    assert raw is not None
    streams: dict[str, _Stream] = {}
    cursors: list[Any] = []
    for index, (name, (sql, params)) in enumerate(stream_queries(dialect, livemode, ids).items()):
        if dialect == "postgresql":
            cursor = raw.cursor(name=f"nrr_recompute_{name}_{index}")
            cursor.itersize = 5000
        else:
            cursor = raw.cursor()
            cursor.arraysize = 5000
        cursor.execute(sql, params)
        cursors.append(cursor)
        streams[name] = _Stream(map(ROW_TYPES[name]._make, cursor))
    return streams, cursors


def iter_customer_data(session: Session, ids: Sequence[str], catalogue: Catalogue,
                       livemode: bool, *, every_customer: bool = False, span: bool = False
                       ) -> Iterator[tuple[str, CustomerData | LeftOut, int]]:
    """``(customer_id, CustomerData, state lines read)`` for ``ids`` (sorted), streamed.

    With ``every_customer`` the queries read whole tables (a full recompute); with
    ``span`` the id range from ``ids[0]`` to ``ids[-1]`` (a slice of every customer);
    otherwise they are limited to ``ids``. A customer whose rows cannot be read into
    records comes as a :class:`LeftOut` (the streams go on with the next customer).
    """
    from nrr.domain.history import select_state_lines

    selection: Sequence[str] | Span | None = ids
    if every_customer:
        selection = None
    elif span and ids:
        selection = Span(ids[0], ids[-1])
    streams, cursors = _open_streams(session, livemode, selection)
    try:
        for cid in ids:
            try:
                data, lines_read = _customer_data(cid, streams, catalogue, livemode,
                                                  select_state_lines)
            except Exception as exc:  # noqa: BLE001 - one customer never blanks an account
                yield cid, LeftOut.from_error(cid, "load", exc), 0
                continue
            yield cid, data, lines_read
    finally:
        for cursor in cursors:
            cursor.close()


def _customer_data(cid: str, streams: Mapping[str, _Stream], catalogue: Catalogue,
                   livemode: bool, select_state_lines: Any) -> tuple[CustomerData, int]:
    customer_rows: list[CustomerRow] = streams["customers"].take(cid)
    if customer_rows:
        c = customer_rows[0]
        meta = _json_map(c.metadata) or {}
        customer = Customer(
            id=cid, email=c.email, country=c.country, currency=c.currency,
            metadata={str(k): str(v) for k, v in meta.items() if v is not None},
            deleted=bool(c.deleted), livemode=bool(c.livemode),
            discount_ids=((c.discount_id,) if isinstance(c.discount_id, str) and c.discount_id
                          else ()),
            name=c.name, created=c.created)
    else:
        customer = Customer(id=cid, deleted=True, livemode=livemode)

    items: dict[str, list[SubscriptionItem]] = {}
    item: ItemRow
    for item in streams["items"].take(cid):
        items.setdefault(item.subscription_id, []).append(SubscriptionItem(
            id=item.id, subscription_id=item.subscription_id, price_id=item.price_id,
            quantity=item.quantity, current_period_start=item.current_period_start,
            current_period_end=item.current_period_end,
            discount_ids=_ids(item.discount_ids), created=item.created,
            inclusive_tax_percent=_decimal(item.inclusive_tax_percent)))

    subscriptions = []
    s: SubscriptionRow
    for s in streams["subscriptions"].take(cid):
        pause = _json_map(s.pause_collection)
        resumes_at = pause.get("resumes_at") if pause else None
        anchor = s.billing_cycle_anchor
        subscriptions.append(Subscription(
            id=s.id, customer_id=cid, status=s.status, currency=(s.currency or "").lower(),
            start_date=s.start_date, created=s.created, trial_start=s.trial_start,
            trial_end=s.trial_end, cancel_at=s.cancel_at,
            cancel_at_period_end=bool(s.cancel_at_period_end), canceled_at=s.canceled_at,
            ended_at=s.ended_at, paused_at=s.paused_at,
            pause_collection_behavior=(str(pause.get("behavior") or "void") if pause else None),
            pause_collection_resumes_at=resumes_at if isinstance(resumes_at, int) else None,
            billing_cycle_anchor=anchor,
            items=tuple(items.get(s.id, ())), discount_ids=_ids(s.discount_ids),
            livemode=bool(s.livemode), state_at=s.state_at,
            default_inclusive_tax_percent=_decimal(s.default_inclusive_tax_percent)))

    discount_rows: list[DiscountRow] = streams["discounts"].take(cid)
    discounts = {
        d.id: Discount(id=d.id, coupon_id=d.coupon_id, customer_id=cid,
                       subscription_id=d.subscription_id,
                       subscription_item_id=d.subscription_item_id, start=d.start, end=d.end,
                       removed_at=d.removed_at, invoice_id=d.invoice_id)
        for d in discount_rows}

    invoice_rows: list[InvoiceRow] = streams["invoices"].take(cid)
    invoices = {
        v.id: Invoice(id=v.id, customer_id=cid, subscription_id=v.subscription_id,
                      status=v.status, currency=(v.currency or "").lower(),
                      billing_reason=v.billing_reason, created=v.created,
                      period_start=v.period_start, period_end=v.period_end,
                      finalized_at=v.finalized_at, paid_at=v.paid_at, total=v.total,
                      discount_ids=_ids(v.discount_ids), livemode=bool(v.livemode))
        for v in invoice_rows}

    lines: list[InvoiceLine] = []
    irregular: list[InvoiceLine] = []
    row: LineRow
    for row in streams["lines"].take(cid):
        line = InvoiceLine(
            id=row.id, invoice_id=row.invoice_id, invoice_status=row.invoice_status,
            customer_id=cid, subscription_id=row.subscription_id,
            subscription_item_id=row.subscription_item_id, price_id=row.price_id,
            quantity=row.quantity, period_start=row.period_start, period_end=row.period_end,
            amount=row.amount or 0, currency=(row.currency or "").lower(),
            proration=bool(row.proration),
            discount_ids=_ids(row.discount_ids),
            discount_amount=row.discount_amount or 0,
            tax_inclusive_amount=row.tax_inclusive_amount or 0, livemode=livemode,
            follows_gap=None if row.proration else False,
            credited=None if row.credited is None else bool(row.credited))
        (irregular if row.irregular else lines).append(line)
    if irregular:
        lines.extend(select_state_lines(irregular))
    observed = []
    event: EventRow
    for event in streams["events"].take(cid):
        changes = stripe_shapes.observed_changes(_json_map(event.raw))
        if not isinstance(changes, Skip):  # an event it cannot read dates nothing
            observed.extend(changes)
    return CustomerData(
        customer=customer, subscriptions=tuple(subscriptions), invoices=invoices,
        lines=tuple(lines), discounts=discounts, prices=catalogue.prices,
        coupons=catalogue.coupons, observed=tuple(observed)), len(lines)


def load_chunk(session: Session, ids: Sequence[str], catalogue: Catalogue,
               livemode: bool) -> tuple[dict[str, CustomerData], int]:
    """The domain input of the customers ``ids`` and how many state lines were read."""
    data: dict[str, CustomerData] = {}
    total = 0
    for cid, customer_data, lines_read in iter_customer_data(session, sorted(set(ids)),
                                                             catalogue, livemode):
        if isinstance(customer_data, LeftOut):
            continue
        data[cid] = customer_data
        total += lines_read
    return data, total

"""Rebuild the MRR timeline, the ledger and the monthly facts from the stored mirror.

Nothing here calls Stripe: a policy change is a recompute. The work is set-based:

* Only the invoice lines that can change a state are read. SQL window functions (LAG /
  LEAD over each subscription item's cycle lines, ordered by service period) keep every
  proration line, the first and the last cycle line of an item, the lines on either side
  of a gap, and a cycle line whose price, quantity or discounts differ from the previous
  one (metered lines, whose amount is the usage, whenever their amount changes). A cycle
  line that repeats the previous state tells the normaliser nothing new; this is the rule
  of ``nrr.domain.history.select_state_lines`` expressed in SQL, and a test checks the two
  agree.
* Customers are processed in chunks in id order; each chunk is six indexed queries, one
  pass of the pure domain functions per customer, and bulk inserts of the results
  (``executemany`` on SQLite, ``COPY`` on PostgreSQL). No ORM object per row: the
  domain hands back fact rows as tuples, JSON columns are serialised once per distinct
  value, and currency conversion uses exact integer factors cached per (currency, month).
* A full recompute empties the derived tables in one statement each and rebuilds them.
  From ``PARALLEL_MIN_CUSTOMERS`` customers on (and when the database is reachable from
  another process), worker processes read and compute the chunks (one index range per
  chunk on SQLite) while this process writes them, in the same order, so the result is
  the same as a single-process run. ``NRR_RECOMPUTE_WORKERS`` sets the number of workers
  (0 or 1: none).
* An incremental recompute rebuilds the given customers' timeline and ledger rows and
  compares their facts with the stored ones: only facts that changed are rewritten.

The service never commits: the caller's ``nrr.db.session_scope`` does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from models.derived import CustomerMonthFact, LedgerEntry, MrrTimelinePoint, RecomputeRun
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
from nrr.db.bulk import JsonText, bulk_insert
from nrr.domain import history as domain_history
from nrr.domain import movements as domain_movements
from nrr.domain import stripe_shapes
from nrr.domain.months import month_of
from nrr.domain.movements import FactorLookup
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
from nrr.logs import get_logger
from nrr.services.fx import MissingRate, RateBook, load_rate_book
from nrr.settings import Settings

log = get_logger(__name__)

T_CUSTOMERS: Table = StripeCustomer.__table__  # type: ignore[assignment]
T_SUBSCRIPTIONS: Table = StripeSubscription.__table__  # type: ignore[assignment]
T_ITEMS: Table = StripeSubscriptionItem.__table__  # type: ignore[assignment]
T_DISCOUNTS: Table = StripeDiscount.__table__  # type: ignore[assignment]
T_INVOICES: Table = StripeInvoice.__table__  # type: ignore[assignment]
T_LINES: Table = StripeInvoiceLine.__table__  # type: ignore[assignment]
T_PRICES: Table = StripePrice.__table__  # type: ignore[assignment]
T_PRODUCTS: Table = StripeProduct.__table__  # type: ignore[assignment]
T_COUPONS: Table = StripeCoupon.__table__  # type: ignore[assignment]
T_TIMELINE: Table = MrrTimelinePoint.__table__  # type: ignore[assignment]
T_LEDGER: Table = LedgerEntry.__table__  # type: ignore[assignment]
T_FACTS: Table = CustomerMonthFact.__table__  # type: ignore[assignment]
T_DIRTY: Table = DirtyCustomer.__table__  # type: ignore[assignment]
T_QUARANTINE: Table = QuarantinedObject.__table__  # type: ignore[assignment]

CHUNK = 2000
FLUSH_ROWS = 1_000_000
UNPAID_INVOICE_STATUSES = ("open", "uncollectible")
# Events that date changes exactly (``nrr.domain.stripe_shapes.observed_changes``).
OBSERVED_EVENT_TYPES = ("customer.subscription.updated", "customer.discount.deleted")

TIMELINE_COLUMNS = ["customer_id", "currency", "effective_at", "mrr_micro"]
LEDGER_COLUMNS = ["month", "effective_at", "customer_id", "subscription_id",
                  "subscription_item_id", "cause", "currency", "mrr_before_micro",
                  "mrr_after_micro", "before", "after", "stripe_ids"]
FACT_COLUMNS = ["month", "customer_id", "opening_mrr_micro", "closing_mrr_micro", "movement",
                "movement_micro", "fx_impact_micro", "first_paid_month", "currency", "plan",
                "product", "country", "metadata"]


class RecomputeError(Exception):
    """The recompute cannot finish (for example a missing exchange rate); nothing was written."""


@dataclass
class RecomputeResult:
    kind: str
    customers: int = 0
    excluded: int = 0
    skipped: int = 0
    lines_read: int = 0
    timeline_points: int = 0
    ledger_entries: int = 0
    facts: int = 0
    seconds: float = 0.0
    run_id: int | None = None
    livemode: bool = False
    skips: list[Skip] = field(default_factory=list)
    # Seconds spent reading the mirror, in the domain (history, facts) and writing rows.
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "customers": self.customers, "excluded": self.excluded,
            "skipped": self.skipped, "lines_read": self.lines_read,
            "timeline_points": self.timeline_points, "ledger_entries": self.ledger_entries,
            "facts": self.facts, "seconds": round(self.seconds, 3), "run_id": self.run_id,
            "livemode": self.livemode,
            "timings": {k: round(v, 3) for k, v in sorted(self.timings.items())},
        }


# --------------------------------------------------------------------------- SQL pieces


@dataclass(frozen=True)
class Span:
    """Every customer id from ``first`` to ``last`` (inclusive, SQLite's binary order, the
    same as Python's for str): one index range instead of a long IN list."""

    first: str
    last: str


class _Query:
    """SQL text plus positional parameters, in the driver's own placeholder style."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.params: list[Any] = []
        self.mark = "%s" if dialect == "postgresql" else "?"
        self.mod = "%%" if dialect == "postgresql" else "%"  # psycopg reads % as a placeholder
        # SQLite would walk an index and look every row up; a plain scan is faster for a
        # whole-table pass (PostgreSQL's planner needs no hint).
        self.scan = " NOT INDEXED" if dialect == "sqlite" else ""
        self.collate = ' COLLATE "C"' if dialect == "postgresql" else ""
        self.false, self.true = ("false", "true") if dialect == "postgresql" else ("0", "1")

    def p(self, value: Any) -> str:
        self.params.append(value)
        return self.mark

    def in_ids(self, column: str, ids: Sequence[str] | Span | None) -> str:
        """``AND column IN (...)``, ``AND column BETWEEN ...`` for a :class:`Span`, or
        nothing for every customer."""
        if ids is None:
            return ""
        if isinstance(ids, Span):
            return f" AND {column} BETWEEN {self.p(ids.first)} AND {self.p(ids.last)}"
        return f" AND {column} IN ({', '.join(self.p(i) for i in ids)})"

    def json_text(self, column: str, *path: str) -> str:
        if self.dialect == "postgresql":
            inner = "".join(f"->'{key}'" for key in path[:-1])
            return f"({column}{inner}->>'{path[-1]}')"
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def json_int(self, column: str, key: str) -> str:
        if self.dialect == "postgresql":
            return (f"(CASE WHEN jsonb_typeof({column}->'{key}') = 'number' "
                    f"THEN ({column}->>'{key}')::bigint END)")
        return f"json_extract({column}, '$.{key}')"


_LINE_COLUMNS = ("l.customer_id, l.id, l.invoice_id, l.subscription_id, l.subscription_item_id, "
                 "l.price_id, l.invoice_status, l.quantity, l.period_start, l.period_end, "
                 "l.amount, l.currency, l.proration, l.discount_ids, l.discount_amount")
_STATUS_CLASS = ("(CASE WHEN {t}.invoice_status = 'paid' THEN 'paid' "
                 "WHEN {t}.invoice_status IN ('open', 'uncollectible') THEN 'unpaid' "
                 "ELSE 'unbilled' END)")


def _mix(expression: str, mod: str = "%") -> str:
    """An integer hash of an instant. Intervals that tile [S, E) exactly (sorted, each
    starting where the previous ended) satisfy sum(h(end)) - sum(h(start)) = h(E) - h(S)
    and sum(end - start) = E - S; a gap and an overlap that cancel in the second sum
    practically never cancel in the first as well."""
    return (f"((({expression}) {mod} 1000003) * (({expression}) {mod} 1000033) "
            f"{mod} 999983)")


def state_lines_query(q: _Query, livemode: bool, ids: Sequence[str] | Span | None) -> str:
    """The state-changing lines (``nrr.domain.history`` docstring), ordered by customer.

    Per item, cycle lines with the same key (price, quantity, discounts, status class) are
    grouped. When an item's groups tile its service span exactly (each group contiguous,
    no gap or overlap anywhere: checked with sums of lengths and of hashed instants, see
    :func:`_mix`), each group is one run and only its first and last lines
    can change state: those are joined back through the (item, period_start) index. Any
    other item ("irregular": a gap, an overlap, a key that comes back, metered usage) gets
    all its cycle lines, flagged, and the caller applies ``select_state_lines`` to them.
    Proration lines are always kept.
    """
    def cycle(t: str) -> str:
        return (f"{t}.livemode = {q.p(livemode)} AND {t}.proration = {q.false} "
                f"AND {t}.subscription_item_id IS NOT NULL AND {t}.period_start IS NOT NULL "
                f"AND {t}.period_end IS NOT NULL{q.in_ids(f'{t}.customer_id', ids)}")

    status_g = _STATUS_CLASS.format(t="g0")
    status_l = _STATUS_CLASS.format(t="l")
    return f"""
    WITH grp AS (
        SELECT g0.subscription_item_id AS item, g0.price_id, g0.quantity, g0.discount_ids,
               {status_g} AS cls,
               MIN(g0.period_start) AS fs, MAX(g0.period_start) AS ls,
               MAX(g0.period_end) AS me, SUM(g0.period_end - g0.period_start) AS covered,
               SUM({_mix("g0.period_end", q.mod)}) - SUM({_mix("g0.period_start", q.mod)}) AS mixed
        FROM stripe_invoice_lines AS g0{q.scan if ids is None else ""}
        WHERE {cycle("g0")}
        GROUP BY g0.subscription_item_id, g0.price_id, g0.quantity, g0.discount_ids, {status_g}
    ), irregular AS (
        SELECT item FROM grp
        GROUP BY item
        HAVING SUM(covered) <> MAX(me) - MIN(fs)
            OR SUM(mixed) <> {_mix("MAX(me)", q.mod)} - {_mix("MIN(fs)", q.mod)}
            OR MAX(CASE WHEN covered <> me - fs OR quantity IS NULL THEN 1 ELSE 0 END) = 1
    )
    SELECT * FROM (
    SELECT {_LINE_COLUMNS}, 0 AS irregular
    FROM grp g JOIN stripe_invoice_lines l
      ON l.subscription_item_id = g.item AND (l.period_start = g.fs OR l.period_start = g.ls)
    WHERE g.item NOT IN (SELECT item FROM irregular) AND {cycle("l")}
      AND l.price_id IS NOT DISTINCT FROM g.price_id
      AND l.quantity IS NOT DISTINCT FROM g.quantity
      AND l.discount_ids IS NOT DISTINCT FROM g.discount_ids
      AND {status_l} = g.cls
    UNION ALL
    SELECT {_LINE_COLUMNS}, 1 AS irregular
    FROM stripe_invoice_lines l
    WHERE {cycle("l")} AND l.subscription_item_id IN (SELECT item FROM irregular)
    UNION ALL
    SELECT {_LINE_COLUMNS}, 0 AS irregular
    FROM stripe_invoice_lines AS l{q.scan if ids is None else ""}
    WHERE l.livemode = {q.p(livemode)} AND l.proration = {q.true}
      AND l.subscription_item_id IS NOT NULL AND l.period_start IS NOT NULL
      AND l.period_end IS NOT NULL{q.in_ids("l.customer_id", ids)}
    ) AS state_lines
    ORDER BY state_lines.customer_id{q.collate}
    """


def _stream_queries(dialect: str, livemode: bool,
                    ids: Sequence[str] | Span | None) -> dict[str, tuple[str, list[Any]]]:
    """One query per source, each ordered by customer id (first column)."""
    queries: dict[str, tuple[str, list[Any]]] = {}

    q = _Query(dialect)
    queries["customers"] = (
        f"SELECT c.id, c.email, c.country, c.currency, c.metadata, c.deleted, c.livemode, "
        f"{q.json_text('c.raw', 'discount', 'id')} FROM stripe_customers c "
        f"WHERE c.livemode = {q.p(livemode)}{q.in_ids('c.id', ids)} ORDER BY c.id{q.collate}",
        q.params)
    q = _Query(dialect)
    queries["subscriptions"] = (
        f"SELECT s.customer_id, s.id, s.status, s.currency, s.start_date, s.created, "
        f"s.trial_start, s.trial_end, s.cancel_at, s.cancel_at_period_end, s.canceled_at, "
        f"s.ended_at, s.paused_at, s.pause_collection, s.discount_ids, s.livemode, s.state_at, "
        f"{q.json_int('s.raw', 'billing_cycle_anchor')} FROM stripe_subscriptions s "
        f"WHERE s.livemode = {q.p(livemode)}{q.in_ids('s.customer_id', ids)} "
        f"ORDER BY s.customer_id{q.collate}, s.created, s.id", q.params)
    q = _Query(dialect)
    queries["items"] = (
        f"SELECT i.customer_id, i.id, i.subscription_id, i.price_id, i.quantity, "
        f"i.current_period_start, i.current_period_end, i.discount_ids, i.created "
        f"FROM stripe_subscription_items i WHERE i.deleted = {q.false} "
        f"AND i.livemode = {q.p(livemode)}{q.in_ids('i.customer_id', ids)} "
        f"ORDER BY i.customer_id{q.collate}, i.subscription_id, i.created, i.id", q.params)
    q = _Query(dialect)
    queries["discounts"] = (
        f'SELECT d.customer_id, d.id, d.coupon_id, d.subscription_id, d.subscription_item_id, '
        f'd.start, d."end", d.removed_at, d.invoice_id FROM stripe_discounts d '
        f"WHERE d.livemode = {q.p(livemode)}{q.in_ids('d.customer_id', ids)} "
        f"ORDER BY d.customer_id{q.collate}, d.id", q.params)
    q = _Query(dialect)
    unpaid = ", ".join(f"'{s}'" for s in UNPAID_INVOICE_STATUSES)
    queries["invoices"] = (
        f"SELECT v.customer_id, v.id, v.subscription_id, v.status, v.currency, "
        f"v.billing_reason, v.created, v.period_start, v.period_end, v.finalized_at, v.paid_at, "
        f"v.total, v.discount_ids, v.livemode FROM stripe_invoices v "
        f"WHERE v.status IN ({unpaid}) AND v.livemode = {q.p(livemode)}"
        f"{q.in_ids('v.customer_id', ids)} ORDER BY v.customer_id{q.collate}, v.id", q.params)
    q = _Query(dialect)
    queries["lines"] = (state_lines_query(q, livemode, ids), q.params)
    q = _Query(dialect)
    customer = q.json_text("e.raw", "data", "object", "customer")
    kinds = ", ".join(f"'{k}'" for k in OBSERVED_EVENT_TYPES)
    queries["events"] = (
        f"SELECT * FROM (SELECT {customer} AS customer_id, e.created, e.id, e.raw "
        f"FROM stripe_events e WHERE e.type IN ({kinds}) AND e.livemode = {q.p(livemode)}) ev "
        f"WHERE ev.customer_id IS NOT NULL{q.in_ids('ev.customer_id', ids)} "
        f"ORDER BY ev.customer_id{q.collate}, ev.created, ev.id", q.params)
    return queries


# --------------------------------------------------------------------------- loading


def _mode(session: Session, settings: Settings) -> bool:
    """The key's mode; without a key, the mode most stored customers are in."""
    mode = settings.stripe_livemode
    if mode is not None:
        return mode
    counts = {bool(m): int(n) for m, n in session.execute(
        select(T_CUSTOMERS.c.livemode, func.count()).group_by(T_CUSTOMERS.c.livemode))}
    return counts.get(True, 0) > counts.get(False, 0)


@dataclass
class Catalogue:
    prices: dict[str, Price]
    coupons: dict[str, Coupon]
    product_names: dict[str, str]
    tax_inclusive_prices: set[str]
    skips: list[Skip]


def load_catalogue(session: Session, livemode: bool) -> Catalogue:
    """Prices and coupons through the domain's parsers (few rows; raw keeps tiers etc.)."""
    skips: list[Skip] = []
    prices: dict[str, Price] = {}
    for raw, in session.execute(select(T_PRICES.c.raw).where(T_PRICES.c.livemode == livemode)):
        parsed = stripe_shapes.parse_price(raw)
        if isinstance(parsed, Skip):
            skips.append(parsed)
        else:
            prices[parsed.id] = parsed
    coupons: dict[str, Coupon] = {}
    for raw, in session.execute(select(T_COUPONS.c.raw).where(T_COUPONS.c.livemode == livemode)):
        parsed_coupon = stripe_shapes.parse_coupon(raw)
        if isinstance(parsed_coupon, Skip):
            skips.append(parsed_coupon)
        else:
            coupons[parsed_coupon.id] = parsed_coupon
    names = {pid: name for pid, name in session.execute(select(T_PRODUCTS.c.id, T_PRODUCTS.c.name))
             if name}
    inclusive = {p.id for p in prices.values() if p.tax_behavior == "inclusive"}
    return Catalogue(prices, coupons, names, inclusive, skips)


def _customer_ids(session: Session, livemode: bool) -> list[str]:
    """Every customer of the mode that has a customer row or a subscription (sorted)."""
    ids = set(session.scalars(select(T_CUSTOMERS.c.id).where(T_CUSTOMERS.c.livemode == livemode)))
    ids.update(session.scalars(select(T_SUBSCRIPTIONS.c.customer_id)
                               .where(T_SUBSCRIPTIONS.c.livemode == livemode).distinct()))
    return sorted(ids)


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


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


def _tax_inclusive_amount(raw: Any) -> int:
    total = 0
    raw = _json_map(raw) if isinstance(raw, str) else raw
    if isinstance(raw, Mapping):
        for entry in raw.get("taxes") or []:
            if isinstance(entry, Mapping) and entry.get("tax_behavior") == "inclusive":
                amount = entry.get("amount")
                if isinstance(amount, int) and not isinstance(amount, bool):
                    total += amount
    return total


class _Stream:
    """Rows ordered by customer id (first column), taken one customer at a time."""

    def __init__(self, rows: Iterator[Sequence[Any]]) -> None:
        self._rows = rows
        self._head: Sequence[Any] | None = next(rows, None)

    def take(self, customer_id: str) -> list[Sequence[Any]]:
        taken: list[Sequence[Any]] = []
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
    for index, (name, (sql, params)) in enumerate(_stream_queries(dialect, livemode, ids).items()):
        if dialect == "postgresql":
            cursor = raw.cursor(name=f"nrr_recompute_{name}_{index}")
            cursor.itersize = 5000
        else:
            cursor = raw.cursor()
            cursor.arraysize = 5000
        cursor.execute(sql, params)
        cursors.append(cursor)
        streams[name] = _Stream(iter(cursor))
    return streams, cursors


def iter_customer_data(session: Session, ids: Sequence[str], catalogue: Catalogue,
                       livemode: bool, *, every_customer: bool = False, span: bool = False
                       ) -> Iterator[tuple[str, CustomerData, int]]:
    """``(customer_id, CustomerData, state lines read)`` for ``ids`` (sorted), streamed.

    With ``every_customer`` the queries read whole tables (a full recompute); with
    ``span`` the id range from ``ids[0]`` to ``ids[-1]`` (a slice of every customer);
    otherwise they are limited to ``ids``.
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
            yield cid, *_customer_data(cid, streams, catalogue, livemode, select_state_lines)
    finally:
        for cursor in cursors:
            cursor.close()


def _customer_data(cid: str, streams: Mapping[str, _Stream], catalogue: Catalogue,
                   livemode: bool, select_state_lines: Any) -> tuple[CustomerData, int]:
    rows = streams["customers"].take(cid)
    if rows:
        (_, email, country, currency, metadata, deleted, row_mode, discount_id) = rows[0]
        meta = _json_map(metadata) or {}
        customer = Customer(
            id=cid, email=email, country=country, currency=currency,
            metadata={str(k): str(v) for k, v in meta.items() if v is not None},
            deleted=bool(deleted), livemode=bool(row_mode),
            discount_ids=(discount_id,) if isinstance(discount_id, str) and discount_id else ())
    else:
        customer = Customer(id=cid, deleted=True, livemode=livemode)

    items: dict[str, list[SubscriptionItem]] = {}
    for (_, iid, sub_id, price_id, quantity, period_start, period_end, discount_ids,
         created) in streams["items"].take(cid):
        items.setdefault(sub_id, []).append(SubscriptionItem(
            id=iid, subscription_id=sub_id, price_id=price_id, quantity=quantity,
            current_period_start=period_start, current_period_end=period_end,
            discount_ids=_ids(discount_ids), created=created))

    subscriptions = []
    for (_, sid, status, currency, start_date, created, trial_start, trial_end, cancel_at,
         cancel_at_period_end, canceled_at, ended_at, paused_at, pause_collection, discount_ids,
         row_mode, state_at, anchor) in streams["subscriptions"].take(cid):
        pause = _json_map(pause_collection)
        resumes_at = pause.get("resumes_at") if pause else None
        subscriptions.append(Subscription(
            id=sid, customer_id=cid, status=status, currency=(currency or "").lower(),
            start_date=start_date, created=created, trial_start=trial_start,
            trial_end=trial_end, cancel_at=cancel_at,
            cancel_at_period_end=bool(cancel_at_period_end), canceled_at=canceled_at,
            ended_at=ended_at, paused_at=paused_at,
            pause_collection_behavior=(str(pause.get("behavior") or "void") if pause else None),
            pause_collection_resumes_at=resumes_at if isinstance(resumes_at, int) else None,
            billing_cycle_anchor=anchor if isinstance(anchor, int) else None,
            items=tuple(items.get(sid, ())), discount_ids=_ids(discount_ids),
            livemode=bool(row_mode), state_at=state_at))

    discounts = {
        did: Discount(id=did, coupon_id=coupon_id, customer_id=cid, subscription_id=sub_id,
                      subscription_item_id=item_id, start=start, end=end, removed_at=removed_at,
                      invoice_id=invoice_id)
        for (_, did, coupon_id, sub_id, item_id, start, end, removed_at, invoice_id)
        in streams["discounts"].take(cid)}

    invoices = {
        iid: Invoice(id=iid, customer_id=cid, subscription_id=sub_id, status=status,
                     currency=(currency or "").lower(), billing_reason=reason, created=created,
                     period_start=period_start, period_end=period_end, finalized_at=finalized_at,
                     paid_at=paid_at, total=total, discount_ids=_ids(discount_ids),
                     livemode=bool(row_mode))
        for (_, iid, sub_id, status, currency, reason, created, period_start, period_end,
             finalized_at, paid_at, total, discount_ids, row_mode) in streams["invoices"].take(cid)}

    lines: list[InvoiceLine] = []
    irregular: list[InvoiceLine] = []
    line_rows = streams["lines"].take(cid)
    for (_, lid, invoice_id, sub_id, item_id, price_id, status, quantity, period_start,
         period_end, amount, currency, proration, discount_ids, discount_amount,
         is_irregular) in line_rows:
        line = InvoiceLine(
            id=lid, invoice_id=invoice_id, invoice_status=status, customer_id=cid,
            subscription_id=sub_id, subscription_item_id=item_id, price_id=price_id,
            quantity=quantity, period_start=period_start, period_end=period_end,
            amount=amount or 0, currency=(currency or "").lower(), proration=bool(proration),
            discount_ids=tuple(sorted(_ids(discount_ids))), discount_amount=discount_amount or 0,
            livemode=livemode, follows_gap=None if proration else False)
        (irregular if is_irregular else lines).append(line)
    if irregular:
        lines.extend(select_state_lines(irregular))
    observed = []
    for (_, _created, _event_id, raw_event) in streams["events"].take(cid):
        changes = stripe_shapes.observed_changes(_json_map(raw_event))
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
        data[cid] = customer_data
        total += lines_read
    _fill_inclusive_tax(session, data, catalogue)
    return data, total


def _fill_inclusive_tax(session: Session, data: dict[str, CustomerData],
                        catalogue: Catalogue) -> None:
    """Lines of tax-inclusive prices carry their included tax (read from the raw line)."""
    from dataclasses import replace

    if not catalogue.tax_inclusive_prices:
        return
    wanted = [line.id for d in data.values() for line in d.lines
              if line.price_id in catalogue.tax_inclusive_prices]
    if not wanted:
        return
    taxes: dict[str, int] = {}
    for chunk in _chunks(wanted, 500):
        for line_id, raw in session.execute(select(T_LINES.c.id, T_LINES.c.raw)
                                            .where(T_LINES.c.id.in_(chunk))):
            taxes[line_id] = _tax_inclusive_amount(raw)
    for cid, customer_data in list(data.items()):
        if any(line.id in taxes for line in customer_data.lines):
            data[cid] = replace(customer_data, lines=tuple(
                replace(line, tax_inclusive_amount=taxes[line.id]) if line.id in taxes else line
                for line in customer_data.lines))


# --------------------------------------------------------------------------- domain calls


# ``json.dumps(value, separators=(",", ":"), default=str)``, as ``bulk_insert`` writes JSON.
_encode_json = json.JSONEncoder(separators=(",", ":"), default=str).encode
_STATE_JSON: dict[tuple[Any, ...], JsonText] = {}


def _state_json(state: Mapping[str, Any] | None) -> JsonText | None:
    """A ledger item state (``{"price", "quantity", "discount", "status"}``) as JSON text."""
    if state is None:
        return None
    if len(state) != 4 or not isinstance(state.get("discount"), list):
        return JsonText(_encode_json(state))
    key = (state.get("price"), state.get("quantity"), tuple(state["discount"]),
           state.get("status"), tuple(state))
    found = _STATE_JSON.get(key)
    if found is None:
        if len(_STATE_JSON) > 100_000:
            _STATE_JSON.clear()
        found = _STATE_JSON[key] = JsonText(_encode_json(state))
    return found


def _insert_rows(session: Session, table: Table, columns: Sequence[str],
                 rows: list[tuple[Any, ...]]) -> int:
    """Insert rows whose JSON columns are already :class:`JsonText` (or None) and that
    hold no datetimes: straight ``executemany`` on SQLite, ``bulk_insert`` (COPY) on
    PostgreSQL."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return bulk_insert(session, table, columns, rows)
    if not rows:
        return 0
    raw = connection.connection.driver_connection
    assert raw is not None
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    cursor = raw.cursor()
    try:
        cursor.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
    finally:
        cursor.close()
    return len(rows)


def customer_rows(data: CustomerData, settings: Settings, rates: RateBook, *, now: int,
                  catalogue: Catalogue, timings: dict[str, float] | None = None,
                  factor: FactorLookup | None = None
                  ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                             list[tuple[Any, ...]], list[Skip], bool]:
    """Timeline, ledger and fact rows of one customer (tuples in the column orders above).

    ``factor``: a shared :func:`nrr.domain.movements.factor_lookup` over ``rates`` (one per
    recompute, so conversion factors are computed once per currency and month)."""
    tz = settings.tz
    clock = time.perf_counter()
    result = domain_history.customer_history(data, settings.policies, now=now)
    if timings is not None:
        _add_seconds(timings, "history", clock)
    if result.excluded:
        return [], [], [], list(result.skips), True
    cid = data.customer.id
    timeline = [(cid, currency, at, mrr)
                for currency, steps in result.points.items() for at, mrr in steps]
    # JSON columns serialised here (item states repeat: memoised), as ``bulk_insert`` would.
    ledger = [(month_of(ch.effective_at, tz), ch.effective_at, ch.customer_id, ch.subscription_id,
               ch.subscription_item_id, ch.cause, ch.currency, ch.mrr_before_micro,
               ch.mrr_after_micro, _state_json(ch.before), _state_json(ch.after),
               None if ch.stripe_ids is None else JsonText(_encode_json(ch.stripe_ids)))
              for ch in result.ledger]
    clock = time.perf_counter()
    if factor is None:
        factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    # The customer's metadata repeats on every month: serialise it once.
    metadata = dict(data.customer.metadata) or None
    metadata_text = None if metadata is None else JsonText(json.dumps(metadata, sort_keys=True))
    facts: list[tuple[Any, ...]] = domain_movements.customer_month_fact_rows(  # type: ignore[assignment]
        result, data.customer, factor=factor,
        reporting_currency=settings.reporting_currency, tz=tz, now=now,
        product_names=catalogue.product_names, metadata=metadata_text)
    if timings is not None:
        _add_seconds(timings, "facts", clock)
    return timeline, ledger, facts, list(result.skips), False


# --------------------------------------------------------------------------- the service


def recompute(session: Session, settings: Settings, *, customer_ids: Iterable[str] | None = None,
              now: datetime | None = None) -> RecomputeResult:
    """Rebuild derived rows for all customers (``customer_ids`` None) or the given ones."""
    started = time.perf_counter()
    moment = now or datetime.now(UTC)
    now_ts = int(moment.timestamp())
    full = customer_ids is None
    result = RecomputeResult(kind="full" if full else "incremental")
    livemode = _mode(session, settings)
    result.livemode = livemode
    run = RecomputeRun(kind=result.kind, started_at=datetime.now(UTC),
                       policies=settings.policies.as_dict(),
                       reporting_currency=settings.reporting_currency,
                       timezone=settings.timezone)
    session.add(run)
    session.flush()
    result.run_id = run.id

    catalogue = load_catalogue(session, livemode)
    rates = load_rate_book(session, settings.reporting_currency)
    factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    result.skips.extend(catalogue.skips)

    restore_pragmas = _sqlite_bulk_pragmas(session) if full else []
    dropped_indexes: list[Any] = []
    if full:
        ids = _customer_ids(session, livemode)
        dropped_indexes = _empty_derived(session)
    else:
        ids = sorted({c for c in customer_ids or () if c})
        # Facts are diffed against the stored ones per chunk (``_keep_changed_facts``): a
        # change rewrites a few recent months, not a customer's whole history.
        for chunk in _chunks(ids, CHUNK):
            for table in (T_TIMELINE, T_LEDGER):
                session.execute(delete(table).where(table.c.customer_id.in_(list(chunk))),
                                execution_options={"synchronize_session": False})

    timeline: list[tuple[Any, ...]] = []
    ledger: list[tuple[Any, ...]] = []
    facts: list[tuple[Any, ...]] = []

    def flush() -> None:
        clock = time.perf_counter()
        # Rows in primary-key order append to the b-tree instead of splitting pages all over.
        facts.sort(key=_fact_key)
        result.timeline_points += _insert_rows(session, T_TIMELINE, TIMELINE_COLUMNS, timeline)
        result.ledger_entries += _insert_rows(session, T_LEDGER, LEDGER_COLUMNS, ledger)
        result.facts += _insert_rows(session, T_FACTS, FACT_COLUMNS, facts)
        timeline.clear()
        ledger.clear()
        facts.clear()
        _add_seconds(result.timings, "write", clock)

    workers = _parallel_workers(session, settings, len(ids)) if full else 0
    pool = (_start_pool(session, workers, settings, catalogue, rates, livemode, now_ts)
            if workers else None)
    if pool is not None:
        # Worker processes read and compute chunks of customers (in order); this process
        # only writes, so the database work overlaps the domain work.
        for part, t_rows, l_rows, f_rows in _parallel_chunks(pool, ids, result):
            result.customers += part.customers
            result.excluded += part.excluded
            result.lines_read += part.lines_read
            result.skips.extend(part.skips)
            for key, seconds in part.timings.items():
                result.timings[key] = result.timings.get(key, 0.0) + seconds
            timeline.extend(t_rows)
            ledger.extend(l_rows)
            facts.extend(f_rows)
            if len(facts) >= FLUSH_ROWS:
                flush()
    # A full recompute streams whole tables once; an incremental one asks for its customers.
    groups = [] if pool is not None else [ids] if full else list(_chunks(ids, CHUNK))
    for group in groups:
        first_fact = len(facts)
        batch: dict[str, CustomerData] = {}
        stream = _timed(iter_customer_data(session, group, catalogue, livemode,
                                           every_customer=full), result.timings, "load")
        for cid, data, lines_read in stream:
            result.lines_read += lines_read
            batch[cid] = data
            if len(batch) >= CHUNK:
                _compute_batch(session, batch, settings, rates, now_ts, catalogue, result,
                               timeline, ledger, facts, factor)
                batch = {}
                if len(facts) >= FLUSH_ROWS:
                    flush()
        _compute_batch(session, batch, settings, rates, now_ts, catalogue, result, timeline,
                       ledger, facts, factor)
        if not full:
            clock = time.perf_counter()
            fresh = _keep_changed_facts(session, group, facts[first_fact:])
            result.facts += len(facts) - first_fact - len(fresh)  # stored already, unchanged
            facts[first_fact:] = fresh
            _add_seconds(result.timings, "write", clock)
    flush()
    clock = time.perf_counter()
    _restore_indexes(session, dropped_indexes)
    for statement in restore_pragmas:
        _sqlite_pragma(session, statement)
    _add_seconds(result.timings, "write", clock)

    result.skipped = len(result.skips)
    for skip in result.skips[:50]:
        log.warning("recompute.skipped", object_type=skip.object_type, object_id=skip.object_id,
                    reason=skip.reason)
    if full:
        _record_skips(session, result.skips)
    session.execute(update(RecomputeRun).where(RecomputeRun.id == run.id).values(
        finished_at=datetime.now(UTC), customers=result.customers - result.excluded,
        skipped=result.skipped), execution_options={"synchronize_session": False})
    # Marks made while this run read the mirror stay for the next run.
    if full:
        session.execute(delete(T_DIRTY).where(T_DIRTY.c.marked_at <= run.started_at),
                        execution_options={"synchronize_session": False})
    else:
        for chunk in _chunks(ids, CHUNK):
            session.execute(delete(T_DIRTY).where(T_DIRTY.c.marked_at <= run.started_at,
                                                  T_DIRTY.c.customer_id.in_(list(chunk))),
                            execution_options={"synchronize_session": False})
    result.seconds = time.perf_counter() - started
    log.info("recompute.finished", **result.as_dict())
    return result


def _keep_changed_facts(session: Session, ids: Sequence[str],
                        rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Of the new fact ``rows`` of customers ``ids``, the ones to insert; stored facts of
    these customers that are gone or differ are deleted. The table ends up exactly as if
    every fact of ``ids`` had been deleted and ``rows`` inserted."""
    stored: dict[tuple[str, str], tuple[Any, ...]] = {}
    columns = [T_FACTS.c[name] for name in FACT_COLUMNS]
    metadata_at = FACT_COLUMNS.index("metadata")
    for chunk in _chunks(list(ids), 500):
        for stored_row in session.execute(select(*columns).where(T_FACTS.c.customer_id.in_(list(chunk)))):
            values: tuple[Any, ...] = tuple(stored_row)
            metadata = values[metadata_at]
            if metadata is not None and not isinstance(metadata, str):  # PostgreSQL: a dict
                values = (*values[:metadata_at], json.dumps(metadata, sort_keys=True),
                          *values[metadata_at + 1:])
            stored[(values[0], values[1])] = values
    fresh: list[tuple[Any, ...]] = []
    for row in rows:
        if stored.pop((row[0], row[1]), None) != tuple(row):
            fresh.append(row)
    stale = list(stored) + [(row[0], row[1]) for row in fresh]
    if stale:
        session.execute(delete(T_FACTS).where(T_FACTS.c.month == bindparam("b_month"),
                                              T_FACTS.c.customer_id == bindparam("b_customer")),
                        [{"b_month": month, "b_customer": cid} for month, cid in stale],
                        execution_options={"synchronize_session": False})
    return fresh


_fact_key = itemgetter(0, 1)  # (month, customer_id): the facts' primary key


def _add_seconds(timings: dict[str, float], key: str, since: float) -> None:
    """Add the seconds since ``since`` (a ``perf_counter`` reading) to ``timings[key]``."""
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - since


def _timed(items: Iterator[Any], timings: dict[str, float], key: str) -> Iterator[Any]:
    """Yield from ``items``, adding the time spent producing them to ``timings[key]``."""
    while True:
        clock = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            _add_seconds(timings, key, clock)
            return
        _add_seconds(timings, key, clock)
        yield item


def _compute_batch(session: Session, batch: dict[str, CustomerData], settings: Settings, rates: RateBook,
                   now_ts: int, catalogue: Catalogue, result: RecomputeResult,
                   timeline: list[tuple[Any, ...]], ledger: list[tuple[Any, ...]],
                   facts: list[tuple[Any, ...]], factor: FactorLookup | None = None) -> None:
    if not batch:
        return
    if factor is None:
        factor = domain_movements.factor_lookup(rates.rate, settings.reporting_currency.lower())
    _fill_inclusive_tax(session, batch, catalogue)
    for cid, data in batch.items():
        try:
            t_rows, l_rows, f_rows, skips, excluded = customer_rows(
                data, settings, rates, now=now_ts, catalogue=catalogue, timings=result.timings,
                factor=factor)
        except MissingRate as exc:
            raise RecomputeError(f"customer {cid}: {exc}") from exc
        result.customers += 1
        result.skips.extend(skips)
        if excluded:
            result.excluded += 1
            continue
        timeline.extend(t_rows)
        ledger.extend(l_rows)
        facts.extend(f_rows)


# --------------------------------------------------------------------------- parallel compute

# A full recompute of at least this many customers runs the reading and the domain work
# in worker processes (``NRR_RECOMPUTE_WORKERS`` sets their number; 0 or 1 turns it off).
PARALLEL_MIN_CUSTOMERS = 5_000
MAX_WORKERS = 4


def _parallel_workers(session: Session, settings: Settings, customers: int) -> int:
    """How many worker processes a full recompute of ``customers`` uses (0: none)."""
    if settings.recompute_workers is not None:
        workers = settings.recompute_workers
    elif customers < PARALLEL_MIN_CUSTOMERS:
        return 0
    else:
        workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)))
    if workers < 2:
        return 0
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return 0  # another process cannot see an in-memory database
    return workers


def _start_pool(session: Session, workers: int, settings: Settings, catalogue: Catalogue,
                rates: RateBook, livemode: bool, now_ts: int) -> Any | None:
    """A pool of ``workers`` fresh processes set up for :func:`_worker_chunk`, or None when
    this process cannot start children (then the recompute runs here)."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return None  # a daemonic process may not have children
    url = session.get_bind().engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")  # no inherited connections or locks
    try:
        return context.Pool(workers, initializer=_worker_init,
                            initargs=(url, settings, catalogue, rates, livemode, now_ts))
    except (AssertionError, OSError) as exc:
        log.warning("recompute.parallel_unavailable", error=str(exc))
        return None


def _parallel_chunks(pool: Any, ids: Sequence[str], result: RecomputeResult
                     ) -> Iterator[tuple[RecomputeResult, list[tuple[Any, ...]],
                                         list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """The rows of ``ids`` computed by the ``pool``'s processes, chunk by chunk in id order.

    Workers open their own connections and read only the mirror (committed data: on
    SQLite in WAL mode and on PostgreSQL a reader is not blocked by this transaction).
    The pool is closed at the end (or terminated on an error)."""
    try:
        parts = pool.imap(_worker_chunk, [list(chunk) for chunk in _chunks(ids, CHUNK)])
        while True:
            clock = time.perf_counter()
            part = next(parts, None)
            _add_seconds(result.timings, "wait", clock)
            if part is None:
                break
            yield part
        pool.close()
    finally:
        pool.terminate()
        pool.join()


_WORKER: dict[str, Any] = {}


def _worker_init(url: str, settings: Settings, catalogue: Catalogue, rates: RateBook,
                 livemode: bool, now_ts: int) -> None:
    from nrr.db import make_engine

    _WORKER.update(engine=make_engine(url), settings=settings, catalogue=catalogue,
                   rates=rates, livemode=livemode, now_ts=now_ts,
                   factor=domain_movements.factor_lookup(
                       rates.rate, settings.reporting_currency.lower()))


def _worker_chunk(ids: list[str]) -> tuple[RecomputeResult, list[tuple[Any, ...]],
                                           list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """One chunk of customers read and computed in a worker (rows in the column orders)."""
    w = _WORKER
    part = RecomputeResult(kind="chunk")
    timeline: list[tuple[Any, ...]] = []
    ledger: list[tuple[Any, ...]] = []
    facts: list[tuple[Any, ...]] = []
    with Session(bind=w["engine"]) as session:
        batch: dict[str, CustomerData] = {}
        # SQLite walks one index range per chunk; PostgreSQL's ids sort in "C" order
        # while its columns compare in the database's collation: a list of ids there.
        span = session.get_bind().dialect.name == "sqlite"
        for cid, data, lines_read in _timed(iter_customer_data(
                session, ids, w["catalogue"], w["livemode"], span=span), part.timings, "load"):
            part.lines_read += lines_read
            batch[cid] = data
        _compute_batch(session, batch, w["settings"], w["rates"], w["now_ts"], w["catalogue"],
                       part, timeline, ledger, facts, w["factor"])
        session.rollback()
    return part, timeline, ledger, facts


def recompute_dirty(session: Session, settings: Settings, *,
                    now: datetime | None = None) -> RecomputeResult:
    """Recompute the customers marked in ``dirty_customers``, then clear them."""
    ids = list(session.scalars(select(T_DIRTY.c.customer_id).order_by(T_DIRTY.c.customer_id)))
    return recompute(session, settings, customer_ids=ids, now=now)


def _sqlite_bulk_pragmas(session: Session) -> list[str]:
    """A bigger page cache and in-memory temp b-trees for a full rebuild on SQLite (the
    GROUP BY of the line selection, the index builds); returns the statements that put the
    connection back as it was. Both are only speed: a setting SQLite refuses (``temp_store``
    cannot change inside a transaction once the connection has temp storage) is left."""
    if session.get_bind().dialect.name != "sqlite":
        return []
    restore = []
    for name, value in (("cache_size", "-262144"), ("temp_store", "2")):
        old = session.execute(text(f"PRAGMA {name}")).scalar()
        if _sqlite_pragma(session, f"PRAGMA {name}={value}"):
            restore.append(f"PRAGMA {name}={old}")
    return restore


def _sqlite_pragma(session: Session, statement: str) -> bool:
    """Run a PRAGMA on the driver connection; False when SQLite refuses it."""
    import sqlite3

    raw = session.connection().connection.driver_connection
    assert raw is not None
    try:
        raw.execute(statement).close()
    except sqlite3.OperationalError as exc:
        log.info("recompute.sqlite_pragma_skipped", statement=statement, error=str(exc))
        return False
    return True


def _empty_derived(session: Session) -> list[Any]:
    """Empty the derived tables and drop their secondary indexes (rebuilt by
    :func:`_restore_indexes` after the bulk load: one sorted build beats millions of
    scattered index inserts). Returns the dropped indexes. All inside the transaction."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("TRUNCATE mrr_timeline, mrr_ledger, customer_month_facts"))
    else:
        for table in (T_TIMELINE, T_LEDGER, T_FACTS):
            session.execute(delete(table), execution_options={"synchronize_session": False})
    from sqlalchemy import inspect

    connection = session.connection()
    inspector = inspect(connection)
    dropped = []
    for table in (T_TIMELINE, T_LEDGER, T_FACTS):
        present = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name in present:
                index.drop(connection)
                dropped.append(index)
    return dropped


def _restore_indexes(session: Session, indexes: Sequence[Any]) -> None:
    connection = session.connection()
    for index in indexes:
        index.create(connection)


def _record_skips(session: Session, skips: Sequence[Skip]) -> None:
    """A full recompute replaces the recorded normalisation skips with the current ones."""
    session.execute(delete(T_QUARANTINE).where(T_QUARANTINE.c.stage == "recompute"),
                    execution_options={"synchronize_session": False})
    if skips:
        now = datetime.now(UTC)
        session.execute(T_QUARANTINE.insert(), [
            {"object_type": s.object_type, "object_id": s.object_id, "stage": "recompute",
             "reason": s.reason, "raw": None, "created_at": now} for s in skips])

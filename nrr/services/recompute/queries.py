"""The SQL that reads the mirror for a recompute, and the named rows it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from nrr.domain.history import PAID_LATE

UNPAID_INVOICE_STATUSES = ("open", "uncollectible")
# Events that date changes exactly (``nrr.domain.stripe_shapes.observed_changes``).
OBSERVED_EVENT_TYPES = ("customer.subscription.updated", "customer.discount.deleted",
                        "customer.subscription.paused", "customer.subscription.resumed")

# --------------------------------------------------------------------------- rows by name
# Each stream's rows are named tuples; its SELECT list is built from the tuple's fields, so a
# column is read by its name and the query and the reader cannot disagree on positions.


class CustomerRow(NamedTuple):
    customer_id: str
    email: str | None
    country: str | None
    currency: str | None
    metadata: Any
    deleted: Any
    livemode: Any
    discount_id: str | None
    name: str | None
    created: int | None


class SubscriptionRow(NamedTuple):
    customer_id: str
    id: str
    status: str
    currency: str | None
    start_date: int | None
    created: int | None
    trial_start: int | None
    trial_end: int | None
    cancel_at: int | None
    cancel_at_period_end: Any
    canceled_at: int | None
    ended_at: int | None
    paused_at: int | None
    pause_collection: Any
    discount_ids: Any
    livemode: Any
    state_at: int | None
    billing_cycle_anchor: int | None
    default_inclusive_tax_percent: str | None


class ItemRow(NamedTuple):
    customer_id: str
    id: str
    subscription_id: str
    price_id: str | None
    quantity: int | None
    current_period_start: int | None
    current_period_end: int | None
    discount_ids: Any
    created: int | None
    inclusive_tax_percent: str | None


class DiscountRow(NamedTuple):
    customer_id: str
    id: str
    coupon_id: str | None
    subscription_id: str | None
    subscription_item_id: str | None
    start: int | None
    end: int | None
    removed_at: int | None
    invoice_id: str | None


class InvoiceRow(NamedTuple):
    customer_id: str
    id: str
    subscription_id: str | None
    status: str | None
    currency: str | None
    billing_reason: str | None
    created: int | None
    period_start: int | None
    period_end: int | None
    finalized_at: int | None
    paid_at: int | None
    total: int | None
    discount_ids: Any
    livemode: Any


class LineRow(NamedTuple):
    customer_id: str
    id: str
    invoice_id: str
    subscription_id: str | None
    subscription_item_id: str | None
    price_id: str | None
    invoice_status: str | None
    quantity: int | None
    period_start: int  # the query keeps lines with both ends only
    period_end: int
    amount: int | None
    currency: str | None
    proration: Any
    discount_ids: Any
    discount_amount: int | None
    tax_inclusive_amount: int | None
    irregular: int  # 1: the item's cycle lines all came, ``select_state_lines`` picks
    credited: int | None  # proration lines: 1 credit of unused time, 0 new state, None unknown


class EventRow(NamedTuple):
    customer_id: str
    created: int
    id: str
    raw: Any


ROW_TYPES: dict[str, Any] = {
    "customers": CustomerRow, "subscriptions": SubscriptionRow, "items": ItemRow,
    "discounts": DiscountRow, "invoices": InvoiceRow, "lines": LineRow, "events": EventRow}


def _select(row: Any, table_alias: str, expressions: Mapping[str, str] | None = None) -> str:
    """``SELECT`` list of the fields of ``row`` (a NamedTuple type): a field is the column of
    the same name unless ``expressions`` gives another expression for it."""
    expressions = expressions or {}
    unknown = set(expressions) - set(row._fields)
    assert not unknown, f"no field {unknown} in {row.__name__}"
    return ", ".join(expressions.get(name, f'{table_alias}."{name}"') for name in row._fields)


@dataclass(frozen=True)
class Span:
    """Every customer id from ``first`` to ``last`` (inclusive, SQLite's binary order, the
    same as Python's for str): one index range instead of a long IN list."""

    first: str
    last: str


class Query:
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


# The stored columns: every field but the two the query computes.
_LINE_COLUMNS = ", ".join(f"l.{name}" for name in LineRow._fields
                          if name not in ("irregular", "credited"))
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


def _credited(q: Query) -> str:
    """Is a proration line the credit of unused time (1), the new state's line (0), or
    unknown (NULL)? The column as an integer, the same type in every part of the UNION."""
    return f"(CASE WHEN l.credited = {q.true} THEN 1 WHEN l.credited = {q.false} THEN 0 END)"


def state_lines_query(q: Query, livemode: bool, ids: Sequence[str] | Span | None) -> str:
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
    SELECT {_LINE_COLUMNS}, 0 AS irregular, CAST(NULL AS INTEGER) AS credited
    FROM grp g JOIN stripe_invoice_lines l
      ON l.subscription_item_id = g.item AND (l.period_start = g.fs OR l.period_start = g.ls)
    WHERE g.item NOT IN (SELECT item FROM irregular) AND {cycle("l")}
      AND l.price_id IS NOT DISTINCT FROM g.price_id
      AND l.quantity IS NOT DISTINCT FROM g.quantity
      AND l.discount_ids IS NOT DISTINCT FROM g.discount_ids
      AND {status_l} = g.cls
    UNION ALL
    SELECT {_LINE_COLUMNS}, 1 AS irregular, CAST(NULL AS INTEGER) AS credited
    FROM stripe_invoice_lines l
    WHERE {cycle("l")} AND l.subscription_item_id IN (SELECT item FROM irregular)
    UNION ALL
    SELECT {_LINE_COLUMNS}, 0 AS irregular, {_credited(q)} AS credited
    FROM stripe_invoice_lines AS l{q.scan if ids is None else ""}
    WHERE l.livemode = {q.p(livemode)} AND l.proration = {q.true}
      AND l.subscription_item_id IS NOT NULL AND l.period_start IS NOT NULL
      AND l.period_end IS NOT NULL{q.in_ids("l.customer_id", ids)}
    ) AS state_lines
    ORDER BY state_lines.customer_id{q.collate}
    """


def stream_queries(dialect: str, livemode: bool,
                   ids: Sequence[str] | Span | None) -> dict[str, tuple[str, list[Any]]]:
    """One query per source (keys of :data:`ROW_TYPES`), each ordered by customer id (the
    rows' first field)."""
    queries: dict[str, tuple[str, list[Any]]] = {}

    q = Query(dialect)
    columns = _select(CustomerRow, "c", {"customer_id": "c.id"})
    queries["customers"] = (
        f"SELECT {columns} FROM stripe_customers c "
        f"WHERE c.livemode = {q.p(livemode)}{q.in_ids('c.id', ids)} ORDER BY c.id{q.collate}",
        q.params)
    q = Query(dialect)
    columns = _select(SubscriptionRow, "s")
    queries["subscriptions"] = (
        f"SELECT {columns} FROM stripe_subscriptions s "
        f"WHERE s.livemode = {q.p(livemode)}{q.in_ids('s.customer_id', ids)} "
        f"ORDER BY s.customer_id{q.collate}, s.created, s.id", q.params)
    q = Query(dialect)
    queries["items"] = (
        f"SELECT {_select(ItemRow, 'i')} "
        f"FROM stripe_subscription_items i WHERE i.deleted = {q.false} "
        f"AND i.livemode = {q.p(livemode)}{q.in_ids('i.customer_id', ids)} "
        f"ORDER BY i.customer_id{q.collate}, i.subscription_id, i.created, i.id", q.params)
    q = Query(dialect)
    queries["discounts"] = (
        f"SELECT {_select(DiscountRow, 'd')} FROM stripe_discounts d "
        f"WHERE d.livemode = {q.p(livemode)}{q.in_ids('d.customer_id', ids)} "
        f"ORDER BY d.customer_id{q.collate}, d.id", q.params)
    q = Query(dialect)
    unpaid = ", ".join(f"'{s}'" for s in UNPAID_INVOICE_STATUSES)
    queries["invoices"] = (
        f"SELECT {_select(InvoiceRow, 'v')} FROM stripe_invoices v "
        # Unpaid invoices, and paid ones that were past due a while (policy
        # past_due_churn_after_days): they date when a subscription stopped counting.
        f"WHERE (v.status IN ({unpaid}) OR (v.status = 'paid' AND v.paid_at - v.finalized_at > "
        f"{PAID_LATE})) AND v.livemode = {q.p(livemode)}"
        f"{q.in_ids('v.customer_id', ids)} ORDER BY v.customer_id{q.collate}, v.id", q.params)
    q = Query(dialect)
    queries["lines"] = (state_lines_query(q, livemode, ids), q.params)
    q = Query(dialect)
    kinds = ", ".join(f"'{k}'" for k in OBSERVED_EVENT_TYPES)
    queries["events"] = (
        f"SELECT {_select(EventRow, 'e')} FROM stripe_events e "
        f"WHERE e.type IN ({kinds}) AND e.livemode = {q.p(livemode)} "
        f"AND e.customer_id IS NOT NULL{q.in_ids('e.customer_id', ids)} "
        f"ORDER BY e.customer_id{q.collate}, e.created, e.id", q.params)
    return queries

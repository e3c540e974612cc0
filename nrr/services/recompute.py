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
  (``executemany`` on SQLite, ``COPY`` on PostgreSQL). No ORM object per row.
* A full recompute empties the derived tables in one statement each and rebuilds them;
  an incremental one deletes and rebuilds only the given customers' rows.

The service never commits: the caller's ``nrr.db.session_scope`` does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from integrations.stripe_mirror import bulk_insert
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
from nrr.domain import stripe_shapes
from nrr.domain.months import month_of
from nrr.domain.records import (
    SERVICE_INVOICE_STATUSES,
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
UNPAID_INVOICE_STATUSES = ("open", "uncollectible")

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "customers": self.customers, "excluded": self.excluded,
            "skipped": self.skipped, "lines_read": self.lines_read,
            "timeline_points": self.timeline_points, "ledger_entries": self.ledger_entries,
            "facts": self.facts, "seconds": round(self.seconds, 3), "run_id": self.run_id,
            "livemode": self.livemode,
        }


# --------------------------------------------------------------------------- SQL pieces


def _ids_param(name: str = "ids") -> Any:
    return bindparam(name, expanding=True)


def state_lines_sql(dialect: str) -> str:
    """The state-changing lines of the customers in ``:ids`` (expanding), one mode.

    Cycle lines (not prorations) are compared with their neighbours of the same item in
    service order; prorations are always kept. Ordered by customer, then period.
    """
    distinct = "IS DISTINCT FROM"
    false, true = ("false", "true") if dialect == "postgresql" else ("0", "1")
    services = ", ".join(f"'{s}'" for s in sorted(SERVICE_INVOICE_STATUSES))
    return f"""
    WITH cycle AS (
        SELECT l.id, l.invoice_id, l.customer_id, l.subscription_id, l.subscription_item_id,
               l.price_id, l.invoice_status, l.quantity, l.period_start, l.period_end,
               l.amount, l.currency, l.proration, l.discount_ids, l.discount_amount,
               LAG(l.price_id) OVER w AS prev_price,
               LAG(l.quantity) OVER w AS prev_quantity,
               LAG(l.discount_ids) OVER w AS prev_discounts,
               LAG(l.amount) OVER w AS prev_amount,
               LAG(l.period_end) OVER w AS prev_end,
               LEAD(l.period_start) OVER w AS next_start
        FROM stripe_invoice_lines l
        WHERE l.customer_id IN :ids AND l.livemode = :livemode AND l.proration = {false}
          AND l.subscription_item_id IS NOT NULL AND l.invoice_status IN ({services})
          AND l.period_start IS NOT NULL AND l.period_end IS NOT NULL
        WINDOW w AS (PARTITION BY l.subscription_item_id ORDER BY l.period_start, l.id)
    )
    SELECT id, invoice_id, customer_id, subscription_id, subscription_item_id, price_id,
           invoice_status, quantity, period_start, period_end, amount, currency, proration,
           discount_ids, discount_amount
    FROM cycle
    WHERE prev_end IS NULL OR next_start IS NULL
       OR prev_end <> period_start OR next_start <> period_end
       OR price_id {distinct} prev_price OR quantity {distinct} prev_quantity
       OR discount_ids {distinct} prev_discounts
       OR (quantity IS NULL AND amount {distinct} prev_amount)
    UNION ALL
    SELECT l.id, l.invoice_id, l.customer_id, l.subscription_id, l.subscription_item_id,
           l.price_id, l.invoice_status, l.quantity, l.period_start, l.period_end, l.amount,
           l.currency, l.proration, l.discount_ids, l.discount_amount
    FROM stripe_invoice_lines l
    WHERE l.customer_id IN :ids AND l.livemode = :livemode AND l.proration = {true}
      AND l.subscription_item_id IS NOT NULL AND l.invoice_status IN ({services})
      AND l.period_start IS NOT NULL AND l.period_end IS NOT NULL
    ORDER BY customer_id, period_start, id
    """


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
    """Every customer of the mode that has a customer row or a subscription."""
    ids = set(session.scalars(select(T_CUSTOMERS.c.id).where(T_CUSTOMERS.c.livemode == livemode)))
    ids.update(session.scalars(select(T_SUBSCRIPTIONS.c.customer_id)
                               .where(T_SUBSCRIPTIONS.c.livemode == livemode).distinct()))
    return sorted(ids)


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _tax_inclusive_amount(raw: Any) -> int:
    total = 0
    if isinstance(raw, Mapping):
        for entry in raw.get("taxes") or []:
            if isinstance(entry, Mapping) and entry.get("tax_behavior") == "inclusive":
                amount = entry.get("amount")
                if isinstance(amount, int) and not isinstance(amount, bool):
                    total += amount
    return total


def load_chunk(session: Session, ids: Sequence[str], catalogue: Catalogue,
               livemode: bool) -> tuple[dict[str, CustomerData], int]:
    """The domain input of every customer in ``ids`` (and how many lines were read)."""
    params = {"ids": list(ids), "livemode": livemode}
    in_ids = _ids_param()
    row: Any
    customers: dict[str, Customer] = {}
    c = T_CUSTOMERS.c
    for row in session.execute(
            select(c.id, c.email, c.country, c.currency, c.metadata, c.deleted, c.livemode,
                   c.raw[("discount", "id")].as_string().label("discount_id"))
            .where(c.id.in_(in_ids), c.livemode == livemode), params):
        customers[row.id] = Customer(
            id=row.id, email=row.email, country=row.country, currency=row.currency,
            metadata={str(k): str(v) for k, v in (row.metadata or {}).items() if v is not None},
            deleted=bool(row.deleted), livemode=bool(row.livemode),
            discount_ids=(row.discount_id,) if row.discount_id else ())

    items: dict[str, list[SubscriptionItem]] = defaultdict(list)
    i = T_ITEMS.c
    for row in session.execute(
            select(i.id, i.subscription_id, i.price_id, i.quantity, i.current_period_start,
                   i.current_period_end, i.discount_ids, i.created)
            .where(i.customer_id.in_(in_ids), i.deleted.is_(False), i.livemode == livemode)
            .order_by(i.subscription_id, i.created, i.id), params):
        items[row.subscription_id].append(SubscriptionItem(
            id=row.id, subscription_id=row.subscription_id, price_id=row.price_id,
            quantity=row.quantity, current_period_start=row.current_period_start,
            current_period_end=row.current_period_end,
            discount_ids=tuple(row.discount_ids or ()), created=row.created))

    subscriptions: dict[str, list[Subscription]] = defaultdict(list)
    s = T_SUBSCRIPTIONS.c
    for row in session.execute(
            select(s.id, s.customer_id, s.status, s.currency, s.start_date, s.created,
                   s.trial_start, s.trial_end, s.cancel_at, s.cancel_at_period_end,
                   s.canceled_at, s.ended_at, s.paused_at, s.pause_collection, s.discount_ids,
                   s.livemode, s.state_at,
                   s.raw["billing_cycle_anchor"].as_integer().label("anchor"))
            .where(s.customer_id.in_(in_ids), s.livemode == livemode)
            .order_by(s.customer_id, s.created, s.id), params):
        pause = row.pause_collection if isinstance(row.pause_collection, Mapping) else None
        resumes_at = pause.get("resumes_at") if pause else None
        subscriptions[row.customer_id].append(Subscription(
            id=row.id, customer_id=row.customer_id, status=row.status,
            currency=(row.currency or "").lower(), start_date=row.start_date, created=row.created,
            trial_start=row.trial_start, trial_end=row.trial_end, cancel_at=row.cancel_at,
            cancel_at_period_end=bool(row.cancel_at_period_end), canceled_at=row.canceled_at,
            ended_at=row.ended_at, paused_at=row.paused_at,
            pause_collection_behavior=(str(pause.get("behavior") or "void") if pause else None),
            pause_collection_resumes_at=resumes_at if isinstance(resumes_at, int) else None,
            billing_cycle_anchor=row.anchor, items=tuple(items.get(row.id, ())),
            discount_ids=tuple(row.discount_ids or ()), livemode=bool(row.livemode),
            state_at=row.state_at))

    discounts: dict[str, dict[str, Discount]] = defaultdict(dict)
    d = T_DISCOUNTS.c
    for row in session.execute(
            select(d.id, d.coupon_id, d.customer_id, d.subscription_id, d.subscription_item_id,
                   d.start, d.end, d.removed_at, d.invoice_id)
            .where(d.customer_id.in_(in_ids), d.livemode == livemode), params):
        discounts[row.customer_id][row.id] = Discount(
            id=row.id, coupon_id=row.coupon_id, customer_id=row.customer_id,
            subscription_id=row.subscription_id, subscription_item_id=row.subscription_item_id,
            start=row.start, end=row.end, removed_at=row.removed_at, invoice_id=row.invoice_id)

    invoices: dict[str, dict[str, Invoice]] = defaultdict(dict)
    v = T_INVOICES.c
    for row in session.execute(
            select(v.id, v.customer_id, v.subscription_id, v.status, v.currency,
                   v.billing_reason, v.created, v.period_start, v.period_end, v.finalized_at,
                   v.paid_at, v.total, v.discount_ids, v.livemode)
            .where(v.customer_id.in_(in_ids), v.livemode == livemode,
                   v.status.in_(UNPAID_INVOICE_STATUSES)), params):
        invoices[row.customer_id][row.id] = Invoice(
            id=row.id, customer_id=row.customer_id, subscription_id=row.subscription_id,
            status=row.status, currency=(row.currency or "").lower(),
            billing_reason=row.billing_reason, created=row.created,
            period_start=row.period_start, period_end=row.period_end,
            finalized_at=row.finalized_at, paid_at=row.paid_at, total=row.total,
            discount_ids=tuple(row.discount_ids or ()), livemode=bool(row.livemode))

    lines: dict[str, list[InvoiceLine]] = defaultdict(list)
    lines_read = 0
    dialect = session.get_bind().dialect.name
    statement = text(state_lines_sql(dialect)).bindparams(_ids_param())
    needs_raw: list[str] = []
    for row in session.execute(statement, params):
        discount_ids = row.discount_ids
        if isinstance(discount_ids, str):  # SQLite hands the JSON text of a text() query
            discount_ids = _json_list(discount_ids)
        lines[row.customer_id].append(InvoiceLine(
            id=row.id, invoice_id=row.invoice_id, invoice_status=row.invoice_status,
            customer_id=row.customer_id, subscription_id=row.subscription_id,
            subscription_item_id=row.subscription_item_id, price_id=row.price_id,
            quantity=row.quantity, period_start=row.period_start, period_end=row.period_end,
            amount=row.amount or 0, currency=(row.currency or "").lower(),
            proration=bool(row.proration), discount_ids=tuple(sorted(discount_ids or ())),
            discount_amount=row.discount_amount or 0, livemode=livemode))
        if row.price_id in catalogue.tax_inclusive_prices:
            needs_raw.append(row.id)
        lines_read += 1
    if needs_raw:
        _fill_inclusive_tax(session, lines, needs_raw)

    data: dict[str, CustomerData] = {}
    for cid in ids:
        customer = customers.get(cid) or Customer(id=cid, deleted=True, livemode=livemode)
        data[cid] = CustomerData(
            customer=customer,
            subscriptions=tuple(subscriptions.get(cid, ())),
            invoices=invoices.get(cid, {}),
            lines=tuple(lines.get(cid, ())),
            discounts=discounts.get(cid, {}),
            prices=catalogue.prices,
            coupons=catalogue.coupons,
        )
    return data, lines_read


def _json_list(value: str) -> list[str]:
    import json

    parsed = json.loads(value)
    return [str(x) for x in parsed] if isinstance(parsed, list) else []


def _fill_inclusive_tax(session: Session, lines: dict[str, list[InvoiceLine]],
                        line_ids: list[str]) -> None:
    from dataclasses import replace

    taxes: dict[str, int] = {}
    for chunk in _chunks(line_ids, 500):
        for line_id, raw in session.execute(select(T_LINES.c.id, T_LINES.c.raw)
                                            .where(T_LINES.c.id.in_(chunk))):
            taxes[line_id] = _tax_inclusive_amount(raw)
    for customer_lines in lines.values():
        for index, line in enumerate(customer_lines):
            if line.id in taxes:
                customer_lines[index] = replace(line, tax_inclusive_amount=taxes[line.id])


# --------------------------------------------------------------------------- domain calls


def customer_rows(data: CustomerData, settings: Settings, rates: RateBook, *, now: int,
                  catalogue: Catalogue) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                 list[tuple[Any, ...]], list[Skip], bool]:
    """Timeline, ledger and fact rows of one customer (tuples in the column orders above)."""
    from nrr.domain import history as domain_history
    from nrr.domain import movements as domain_movements

    tz = settings.tz
    result = domain_history.customer_history(data, settings.policies, now=now)
    if result.excluded:
        return [], [], [], list(result.skips), True
    cid = data.customer.id
    timeline = [(cid, currency, at, mrr)
                for currency, steps in result.points.items() for at, mrr in steps]
    ledger = [(month_of(ch.effective_at, tz), ch.effective_at, ch.customer_id, ch.subscription_id,
               ch.subscription_item_id, ch.cause, ch.currency, ch.mrr_before_micro,
               ch.mrr_after_micro, ch.before, ch.after, ch.stripe_ids)
              for ch in result.ledger]
    facts = [(f.month, f.customer_id, f.opening_mrr_micro, f.closing_mrr_micro, f.movement,
              f.movement_micro, f.fx_impact_micro, f.first_paid_month, f.currency, f.plan,
              f.product, f.country, f.metadata_)
             for f in domain_movements.customer_month_facts(
                 result, data.customer, rate=rates.rate,
                 reporting_currency=settings.reporting_currency, tz=tz, now=now,
                 product_names=catalogue.product_names)]
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
    result.skips.extend(catalogue.skips)

    if full:
        ids = _customer_ids(session, livemode)
        _empty_derived(session)
    else:
        ids = sorted({c for c in customer_ids or () if c})
        for chunk in _chunks(ids, CHUNK):
            for table in (T_TIMELINE, T_LEDGER, T_FACTS):
                session.execute(delete(table).where(table.c.customer_id.in_(list(chunk))),
                                execution_options={"synchronize_session": False})

    for chunk in _chunks(ids, CHUNK):
        data, lines_read = load_chunk(session, chunk, catalogue, livemode)
        result.lines_read += lines_read
        timeline: list[tuple[Any, ...]] = []
        ledger: list[tuple[Any, ...]] = []
        facts: list[tuple[Any, ...]] = []
        for cid in chunk:
            try:
                t_rows, l_rows, f_rows, skips, excluded = customer_rows(
                    data[cid], settings, rates, now=now_ts, catalogue=catalogue)
            except MissingRate as exc:
                raise RecomputeError(f"customer {cid}: {exc}") from exc
            result.skips.extend(skips)
            if excluded:
                result.excluded += 1
                continue
            timeline.extend(t_rows)
            ledger.extend(l_rows)
            facts.extend(f_rows)
        result.timeline_points += bulk_insert(session, T_TIMELINE, TIMELINE_COLUMNS, timeline)
        result.ledger_entries += bulk_insert(session, T_LEDGER, LEDGER_COLUMNS, ledger)
        result.facts += bulk_insert(session, T_FACTS, FACT_COLUMNS, facts)
        result.customers += len(chunk)

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


def recompute_dirty(session: Session, settings: Settings, *,
                    now: datetime | None = None) -> RecomputeResult:
    """Recompute the customers marked in ``dirty_customers``, then clear them."""
    ids = list(session.scalars(select(T_DIRTY.c.customer_id).order_by(T_DIRTY.c.customer_id)))
    return recompute(session, settings, customer_ids=ids, now=now)


def _empty_derived(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("TRUNCATE mrr_timeline, mrr_ledger, customer_month_facts"))
        return
    for table in (T_TIMELINE, T_LEDGER, T_FACTS):
        session.execute(delete(table), execution_options={"synchronize_session": False})


def _record_skips(session: Session, skips: Sequence[Skip]) -> None:
    """A full recompute replaces the recorded normalisation skips with the current ones."""
    session.execute(delete(T_QUARANTINE).where(T_QUARANTINE.c.stage == "recompute"),
                    execution_options={"synchronize_session": False})
    if skips:
        now = datetime.now(UTC)
        session.execute(T_QUARANTINE.insert(), [
            {"object_type": s.object_type, "object_id": s.object_id, "stage": "recompute",
             "reason": s.reason, "raw": None, "created_at": now} for s in skips])

"""Write a synthetic Stripe account of N customers over 36 months straight into the mirror.

The rows are what the mirror store would hold after a backfill: customers, products,
prices, coupons, subscriptions with their items, discounts, invoices and their lines
(cycle lines every period, proration pairs for mid-period seat and plan changes, $0 trial
lines, discount amounts), plus monthly exchange rates. The mix is realistic rather than
uniform: monthly and yearly prices, seats, add-ons, upgrades and downgrades,
cancellations at period end and immediately, trials, coupons, returns after churn, a few
past-due subscriptions, four currencies (one zero-decimal).

Usage::

    python benchmarks/generate_account.py --customers 10000 --db sqlite:////tmp/bench.db

The generator is deterministic for a given ``--seed`` and ``--now``.
"""

from __future__ import annotations

import argparse
import calendar
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, bindparam, delete, update
from sqlalchemy.orm import Session

from integrations.stripe_mirror import mark_dirty
from models.derived import ExchangeRate
from models.mirror import (
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
from nrr.db.bulk import bulk_insert

T_CUSTOMERS: Table = StripeCustomer.__table__  # type: ignore[assignment]
T_PRODUCTS: Table = StripeProduct.__table__  # type: ignore[assignment]
T_PRICES: Table = StripePrice.__table__  # type: ignore[assignment]
T_COUPONS: Table = StripeCoupon.__table__  # type: ignore[assignment]
T_SUBSCRIPTIONS: Table = StripeSubscription.__table__  # type: ignore[assignment]
T_ITEMS: Table = StripeSubscriptionItem.__table__  # type: ignore[assignment]
T_DISCOUNTS: Table = StripeDiscount.__table__  # type: ignore[assignment]
T_INVOICES: Table = StripeInvoice.__table__  # type: ignore[assignment]
T_LINES: Table = StripeInvoiceLine.__table__  # type: ignore[assignment]
T_RATES: Table = ExchangeRate.__table__  # type: ignore[assignment]

MONTHS = 36
DAY = 86_400

# currency -> (weight, factor on the USD minor amounts, countries)
CURRENCIES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "usd": (0.70, 1.0, ("US", "CA")),
    "eur": (0.15, 1.0, ("DE", "FR", "NL", "ES")),
    "gbp": (0.10, 0.8, ("GB",)),
    "jpy": (0.05, 1.5, ("JP",)),  # zero-decimal: 1500 cents -> 2250 yen
}
# product -> monthly USD cents per seat
PLANS = {"starter": 1500, "pro": 4900, "business": 9900}
PLAN_ORDER = ["starter", "pro", "business"]
ADDON_CENTS = 2000
RATES = {"eur": 1.08, "gbp": 1.27, "jpy": 0.0067}

CUSTOMER_COLUMNS = ["id", "livemode", "created", "state_at", "raw", "synced_at", "email", "name",
                    "country", "currency", "metadata", "deleted"]
SUBSCRIPTION_COLUMNS = ["id", "livemode", "created", "state_at", "raw", "synced_at",
                        "customer_id", "status", "currency", "start_date", "trial_start",
                        "trial_end", "cancel_at", "cancel_at_period_end", "canceled_at",
                        "ended_at", "paused_at", "pause_collection", "discount_ids", "deleted"]
ITEM_COLUMNS = ["id", "livemode", "created", "state_at", "raw", "synced_at", "subscription_id",
                "customer_id", "price_id", "quantity", "current_period_start",
                "current_period_end", "discount_ids", "deleted"]
DISCOUNT_COLUMNS = ["id", "livemode", "created", "state_at", "raw", "synced_at", "coupon_id",
                    "customer_id", "subscription_id", "subscription_item_id", "invoice_id",
                    "start", "end", "removed_at"]
INVOICE_COLUMNS = ["id", "livemode", "created", "state_at", "raw", "synced_at", "customer_id",
                   "subscription_id", "status", "billing_reason", "currency", "period_start",
                   "period_end", "finalized_at", "paid_at", "total", "discount_ids",
                   "lines_complete"]
LINE_COLUMNS = ["id", "invoice_id", "customer_id", "subscription_id", "subscription_item_id",
                "price_id", "invoice_status", "quantity", "quantity_decimal", "period_start",
                "period_end", "amount", "currency", "proration", "discount_amount",
                "discount_ids", "livemode", "raw"]


def add_months(instant: int, n: int) -> int:
    """Stripe-like monthly step: same day and time, clamped to the month's last day."""
    moment = datetime.fromtimestamp(instant, tz=UTC)
    index = moment.year * 12 + moment.month - 1 + n
    year, month = divmod(index, 12)
    month += 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def month_floor(instant: int) -> int:
    moment = datetime.fromtimestamp(instant, tz=UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


def price_id(plan: str, interval: str, currency: str) -> str:
    return f"price_{plan}_{interval}_{currency}"


def unit_amount(plan: str, interval: str, currency: str) -> int:
    cents = ADDON_CENTS if plan == "addon" else PLANS[plan]
    # jpy is zero-decimal: 1500 (cents) x 1.5 = 2250 yen, about the dollar price.
    amount = round(cents * CURRENCIES[currency][1])
    return amount * (10 if interval == "year" else 1)


@dataclass
class Rows:
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    subscriptions: list[tuple[Any, ...]] = field(default_factory=list)
    items: list[tuple[Any, ...]] = field(default_factory=list)
    discounts: list[tuple[Any, ...]] = field(default_factory=list)
    invoices: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)

    def size(self) -> int:
        return len(self.lines) + len(self.invoices)


@dataclass
class ItemState:
    id: str
    plan: str
    quantity: int
    created: int


class AccountGenerator:
    def __init__(self, *, seed: int, now: int, months: int = MONTHS) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.first = add_months(month_floor(now), -(months - 1))
        self.months = months
        self.synced_at = datetime.fromtimestamp(now, tz=UTC)
        self.stats = {"customers": 0, "subscriptions": 0, "invoices": 0, "lines": 0,
                      "seat_changes": 0, "plan_changes": 0, "cancellations": 0, "trials": 0,
                      "reactivations": 0, "discounts": 0}

    # ------------------------------------------------------------------ catalogue

    def catalogue(self, session: Session) -> None:
        now = self.now
        products = [(f"prod_{p}", False, self.first, now,
                     {"id": f"prod_{p}", "object": "product", "name": p.title(), "active": True},
                     self.synced_at, p.title(), True, False) for p in [*PLANS, "addon"]]
        bulk_insert(session, T_PRODUCTS, ["id", "livemode", "created", "state_at", "raw",
                                          "synced_at", "name", "active", "deleted"], products)
        prices = []
        for plan in [*PLANS, "addon"]:
            for interval in ("month", "year"):
                for currency in CURRENCIES:
                    pid = price_id(plan, interval, currency)
                    unit = unit_amount(plan, interval, currency)
                    raw = {"id": pid, "object": "price", "active": True, "currency": currency,
                           "product": f"prod_{plan}", "type": "recurring",
                           "billing_scheme": "per_unit", "unit_amount": unit,
                           "unit_amount_decimal": str(unit), "tiers_mode": None,
                           "transform_quantity": None, "tax_behavior": "exclusive",
                           "recurring": {"interval": interval, "interval_count": 1,
                                         "usage_type": "licensed"},
                           "livemode": False, "created": self.first,
                           "nickname": f"{plan} {interval}ly"}
                    prices.append((pid, False, self.first, now, raw, self.synced_at,
                                   f"prod_{plan}", currency, True, "recurring", "per_unit", None,
                                   str(unit), interval, 1, "licensed", "exclusive",
                                   raw["nickname"], False))
        bulk_insert(session, T_PRICES, ["id", "livemode", "created", "state_at", "raw",
                                        "synced_at", "product_id", "currency", "active", "type",
                                        "billing_scheme", "tiers_mode", "unit_amount_decimal",
                                        "interval", "interval_count", "usage_type",
                                        "tax_behavior", "nickname", "deleted"], prices)
        coupons = [
            ("co_welcome20", "20", None, None, "repeating", 3),
            ("co_forever10", "10", None, None, "forever", None),
        ]
        bulk_insert(session, T_COUPONS, ["id", "livemode", "created", "state_at", "raw",
                                         "synced_at", "percent_off", "amount_off", "currency",
                                         "duration", "duration_in_months", "deleted"],
                    [(cid, False, self.first, now,
                      {"id": cid, "object": "coupon", "percent_off": float(pct),
                       "duration": dur, "duration_in_months": months, "valid": True},
                      self.synced_at, pct, off, cur, dur, months, False)
                     for cid, pct, off, cur, dur, months in coupons])
        rates = []
        month = self.first
        while month <= self.now:
            day = datetime.fromtimestamp(month, tz=UTC).date()
            for currency, base in RATES.items():
                drift = 1 + self.rng.uniform(-0.04, 0.04)
                rates.append((day, currency, "usd", f"{base * drift:.6f}"))
            month = add_months(month, 1)
        bulk_insert(session, T_RATES, ["date", "currency", "reporting_currency", "rate"], rates)

    # ------------------------------------------------------------------ customers

    def customer(self, index: int, rows: Rows) -> None:
        rng = self.rng
        cid = f"cus_{index:07d}"
        roll = rng.random()
        currency = "usd"
        for code, (weight, _factor, _countries) in CURRENCIES.items():
            if roll < weight:
                currency = code
                break
            roll -= weight
        country = rng.choice(CURRENCIES[currency][2])
        segment = rng.choice(("smb", "smb", "mid", "enterprise"))
        month_index = 0 if rng.random() < 0.45 else rng.randrange(self.months)
        start = add_months(self.first, month_index) + rng.randrange(27 * DAY)
        if start >= self.now:
            start = self.now - DAY
        email = f"billing+{index}@customer{index % 997}.example.com"
        raw = {"id": cid, "object": "customer", "livemode": False, "created": start,
               "email": email, "name": f"Customer {index}", "currency": currency,
               "address": {"country": country}, "metadata": {"segment": segment},
               "discount": None}
        rows.customers.append((cid, False, start, self.now, raw, self.synced_at, email,
                               f"Customer {index}", country, currency, {"segment": segment},
                               False))
        self.stats["customers"] += 1
        sub_index = 0
        while start < self.now:
            ended = self.subscription(cid, f"{index:07d}_{sub_index}", currency, start, rows)
            sub_index += 1
            if ended is None or rng.random() > 0.3 or sub_index > 2:
                break
            start = add_months(ended, rng.randint(1, 6)) + rng.randrange(DAY)
            if start < self.now:
                self.stats["reactivations"] += 1

    def subscription(self, cid: str, key: str, currency: str, start: int,
                     rows: Rows) -> int | None:
        """Simulate one subscription from ``start``; returns when it ended (None if running)."""
        rng = self.rng
        sid = f"sub_{key}"
        interval = "month" if rng.random() < 0.85 else "year"
        step = 1 if interval == "month" else 12
        plan = rng.choices(PLAN_ORDER, weights=(50, 35, 15))[0]
        seats = min(1 + int(rng.expovariate(0.25)), 60)
        items = [ItemState(f"si_{key}_0", plan, seats, start)]
        if rng.random() < 0.6:
            items.append(ItemState(f"si_{key}_1", "addon", 1, start))
        trial_end = None
        if rng.random() < 0.15:
            trial_end = start + 14 * DAY
            self.stats["trials"] += 1
        discount: tuple[str, str, int, int | None, int] | None = None
        roll = rng.random()
        if roll < 0.10:
            discount = (f"di_{key}", "co_welcome20", start, add_months(start, 3), 20)
        elif roll < 0.13:
            discount = (f"di_{key}", "co_forever10", start, None, 10)
        if discount:
            did, coupon, d_start, d_end, _pct = discount
            raw = {"id": did, "object": "discount", "start": d_start, "end": d_end,
                   "customer": cid, "subscription": sid,
                   "source": {"type": "coupon", "coupon": coupon}}
            rows.discounts.append((did, False, d_start, self.now, raw, self.synced_at, coupon,
                                   cid, sid, None, None, d_start, d_end, None))
            self.stats["discounts"] += 1
        invoice_n = 0
        status = "active"
        canceled_at = ended_at = None
        cancel_at_period_end = False

        def invoice(reason: str, lines: list[tuple[Any, ...]], created: int,
                    inv_status: str = "paid") -> None:
            nonlocal invoice_n
            inv = f"in_{key}_{invoice_n}"
            invoice_n += 1
            total = 0
            for ln in lines:
                (lid, item_id, pid, qty, p_start, p_end, amount, proration, disc) = ln
                total += amount - disc
                rows.lines.append((lid, inv, cid, sid, item_id, pid, inv_status, qty, None,
                                   p_start, p_end, amount, currency, proration, disc,
                                   [discount[0]] if disc and discount else [], False, None))
            paid_at = created + 3600 if inv_status == "paid" else None
            raw = {"id": inv, "object": "invoice", "customer": cid, "status": inv_status,
                   "billing_reason": reason, "currency": currency, "total": total,
                   "parent": {"type": "subscription_details",
                              "subscription_details": {"subscription": sid}}}
            rows.invoices.append((inv, False, created, self.now, raw, self.synced_at, cid, sid,
                                  inv_status, reason, currency, created, created, created + 60,
                                  paid_at, total, [], True))
            self.stats["invoices"] += 1
            self.stats["lines"] += len(lines)

        def discount_on(p_start: int, amount: int) -> int:
            if not discount or amount <= 0:
                return 0
            _did, _coupon, d_start, d_end, pct = discount
            if p_start < d_start or (d_end is not None and p_start >= d_end):
                return 0
            return amount * pct // 100

        line_n = 0

        def line_id() -> str:
            nonlocal line_n
            line_n += 1
            return f"il_{key}_{line_n}"

        if trial_end is not None:
            invoice("subscription_create",
                    [(line_id(), it.id, price_id(it.plan, interval, currency), it.quantity,
                      start, trial_end, 0, False, 0) for it in items], start)
            anchor = trial_end
        else:
            anchor = start
        period_start = anchor
        period_end = add_months(period_start, step)
        first = True
        while period_start < self.now:
            period_end = add_months(period_start, step)
            cycle = []
            for it in items:
                amount = unit_amount(it.plan, interval, currency) * it.quantity
                cycle.append((line_id(), it.id, price_id(it.plan, interval, currency),
                              it.quantity, period_start, period_end, amount, False,
                              discount_on(period_start, amount)))
            past_due = period_end > self.now and rng.random() < 0.02
            invoice("subscription_create" if first and trial_end is None else "subscription_cycle",
                    cycle, period_start, "open" if past_due else "paid")
            if past_due:
                status = "past_due"
            first = False
            # Mid-period changes: probabilities per month of the period.
            length = period_end - period_start
            events = []
            for _ in range(step):
                roll = rng.random()
                if roll < 0.05:
                    events.append("seat")
                elif roll < 0.07:
                    events.append("plan")
                elif roll < 0.085:
                    events.append("cancel")
            for kind in events[:2]:
                at = period_start + rng.randrange(max(length // DAY, 1)) * DAY + rng.randrange(DAY)
                if at >= self.now or at >= period_end:
                    continue
                main = items[0]
                if kind == "cancel":
                    canceled_at = at
                    if rng.random() < 0.8:
                        cancel_at_period_end = True
                        ended_at = period_end if period_end <= self.now else None
                    else:
                        ended_at = at
                        period_end = at
                    self.stats["cancellations"] += 1
                    break
                old_plan, old_qty = main.plan, main.quantity
                if kind == "seat":
                    delta = rng.choice((-2, -1, 1, 1, 2, 3))
                    main.quantity = max(1, old_qty + delta)
                    if main.quantity == old_qty:
                        continue
                    self.stats["seat_changes"] += 1
                else:
                    position = PLAN_ORDER.index(old_plan)
                    moves = [p for p in (position - 1, position + 1) if 0 <= p < len(PLAN_ORDER)]
                    main.plan = PLAN_ORDER[rng.choice(moves)]
                    self.stats["plan_changes"] += 1
                remaining = period_end - at
                old_amount = unit_amount(old_plan, interval, currency) * old_qty
                new_amount = unit_amount(main.plan, interval, currency) * main.quantity
                credit = -round(old_amount * remaining / length)
                charge = round(new_amount * remaining / length)
                invoice("subscription_update", [
                    (line_id(), main.id, price_id(old_plan, interval, currency), old_qty,
                     at, period_end, credit, True, 0),
                    (line_id(), main.id, price_id(main.plan, interval, currency), main.quantity,
                     at, period_end, charge, True, discount_on(at, charge)),
                ], at)
            if canceled_at is not None:
                break
            period_start = period_end

        if ended_at is not None and ended_at <= self.now:
            status = "canceled"
        self.stats["subscriptions"] += 1
        current_start = period_start if canceled_at is None else period_start
        raw_items = [{"id": it.id, "object": "subscription_item", "created": it.created,
                      "price": {"id": price_id(it.plan, interval, currency), "object": "price"},
                      "quantity": it.quantity, "current_period_start": current_start,
                      "current_period_end": period_end, "discounts": []} for it in items]
        raw = {"id": sid, "object": "subscription", "livemode": False, "customer": cid,
               "status": status, "currency": currency, "created": start, "start_date": start,
               "trial_start": start if trial_end else None, "trial_end": trial_end,
               "cancel_at": ended_at if cancel_at_period_end else None,
               "cancel_at_period_end": cancel_at_period_end, "canceled_at": canceled_at,
               "ended_at": ended_at if status == "canceled" else None,
               "billing_cycle_anchor": anchor, "pause_collection": None,
               "discounts": [discount[0]] if discount else [],
               "items": {"object": "list", "data": raw_items, "has_more": False}}
        rows.subscriptions.append((sid, False, start, self.now, raw, self.synced_at, cid, status,
                                   currency, start, raw["trial_start"], trial_end,
                                   raw["cancel_at"], cancel_at_period_end, canceled_at,
                                   raw["ended_at"], None, None, raw["discounts"], False))
        for it, raw_item in zip(items, raw_items, strict=True):
            rows.items.append((it.id, False, it.created, self.now, raw_item, self.synced_at, sid,
                               cid, price_id(it.plan, interval, currency), it.quantity,
                               current_start,
                               period_end, [], False))
        return ended_at if status == "canceled" else None


def write(session: Session, rows: Rows) -> None:
    bulk_insert(session, T_CUSTOMERS, CUSTOMER_COLUMNS, rows.customers)
    bulk_insert(session, T_SUBSCRIPTIONS, SUBSCRIPTION_COLUMNS, rows.subscriptions)
    bulk_insert(session, T_ITEMS, ITEM_COLUMNS, rows.items)
    bulk_insert(session, T_DISCOUNTS, DISCOUNT_COLUMNS, rows.discounts)
    bulk_insert(session, T_INVOICES, INVOICE_COLUMNS, rows.invoices)
    bulk_insert(session, T_LINES, LINE_COLUMNS, rows.lines)


def generate(session: Session, customers: int, *, seed: int = 7, now: int | None = None,
             months: int = MONTHS, batch: int = 2000) -> dict[str, int]:
    """Generate the account into the (migrated, empty) mirror tables; the caller commits."""
    generator = AccountGenerator(seed=seed, now=now or int(time.time()), months=months)
    generator.catalogue(session)
    rows = Rows()
    for index in range(1, customers + 1):
        generator.customer(index, rows)
        if index % batch == 0:
            write(session, rows)
            rows = Rows()
    write(session, rows)
    return generator.stats


def active_items(session: Session, fraction: float, seed: int) -> list[tuple[str, str, str, int,
                                                                             str, int, int]]:
    from sqlalchemy import select

    rows = session.execute(
        select(T_ITEMS.c.id, T_ITEMS.c.subscription_id, T_ITEMS.c.customer_id, T_ITEMS.c.quantity,
               T_ITEMS.c.price_id, T_ITEMS.c.current_period_start, T_ITEMS.c.current_period_end)
        .join(T_SUBSCRIPTIONS, T_SUBSCRIPTIONS.c.id == T_ITEMS.c.subscription_id)
        .where(T_SUBSCRIPTIONS.c.status == "active", T_ITEMS.c.id.like("%\\_0", escape="\\"))
        .order_by(T_ITEMS.c.id)).all()
    rng = random.Random(seed)
    count = max(1, int(len(rows) * fraction))
    return [tuple(r) for r in rng.sample(rows, min(count, len(rows)))]  # type: ignore[misc]


def change_customers(session: Session, total_customers: int, *, fraction: float = 0.01,
                     seed: int = 11, now: int | None = None) -> int:
    """Give ``fraction`` of all customers a seat change now (proration lines, item update),
    as the mirror would after their webhooks; marks them dirty. Returns how many changed."""
    now = now or int(time.time())
    wanted = max(1, int(total_customers * fraction))
    chosen = active_items(session, 1.0, seed)[:wanted]
    invoices: list[tuple[Any, ...]] = []
    lines: list[tuple[Any, ...]] = []
    updates: list[dict[str, Any]] = []
    synced = datetime.fromtimestamp(now, tz=UTC)
    run = time.time_ns()  # repeated benchmark runs on one database add new invoices
    for item_id, sub_id, cid, qty, pid, p_start, p_end in chosen:
        at = min(max(now - 3600, p_start + 1), p_end - 1)
        new_qty = qty + 1
        parts = pid.split("_")
        currency = parts[-1]
        unit = unit_amount(parts[1], parts[2], currency)
        length = max(p_end - p_start, 1)
        inv = f"in_{item_id}_chg{run}"
        credit = -round(unit * qty * (p_end - at) / length)
        charge = round(unit * new_qty * (p_end - at) / length)
        invoices.append((inv, False, at, now, {"id": inv, "object": "invoice"}, synced, cid,
                         sub_id, "paid", "subscription_update", currency, at, at, at, at,
                         credit + charge, [], True))
        lines.append((f"il_{inv}_1", inv, cid, sub_id, item_id, pid, "paid", qty, None, at, p_end,
                      credit, currency, True, 0, [], False, None))
        lines.append((f"il_{inv}_2", inv, cid, sub_id, item_id, pid, "paid", new_qty, None, at,
                      p_end, charge, currency, True, 0, [], False, None))
        updates.append({"b_id": item_id, "b_qty": new_qty, "b_state": now})
    bulk_insert(session, T_INVOICES, INVOICE_COLUMNS, invoices)
    bulk_insert(session, T_LINES, LINE_COLUMNS, lines)
    if updates:
        session.execute(update(T_ITEMS).where(T_ITEMS.c.id == bindparam("b_id"))
                        .values(quantity=bindparam("b_qty"), state_at=bindparam("b_state")),
                        updates, execution_options={"synchronize_session": False})
    mark_dirty(session, [c[2] for c in chosen])
    return len(chosen)


def clear(session: Session) -> None:
    for table in (T_LINES, T_INVOICES, T_DISCOUNTS, T_ITEMS, T_SUBSCRIPTIONS, T_COUPONS,
                  T_PRICES, T_PRODUCTS, T_CUSTOMERS, T_RATES):
        session.execute(delete(table))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, required=True, help="number of customers")
    parser.add_argument("--db", default="sqlite:///bench.db", help="database URL")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--now", type=int, default=None,
                        help="the account's 'now' as Unix seconds (default: the clock)")
    args = parser.parse_args(argv)
    from nrr.db import make_engine, session_scope, upgrade

    engine = make_engine(args.db)
    upgrade(engine)
    started = time.perf_counter()
    with session_scope(engine) as session:
        clear(session)
        stats = generate(session, args.customers, seed=args.seed, now=args.now)
    elapsed = time.perf_counter() - started
    print(f"generated {stats} in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

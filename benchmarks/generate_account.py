"""Write a generated Stripe account of N customers over 36 months straight into the mirror.

The account is made by the local emulator's engine (``integrations.emulator``), the one
simulator of Stripe billing the demo and the tests use too: renewals, seat and plan changes
with proration pairs, monthly-to-yearly switches, trials, coupons, dunning, pauses,
cancellations, win-backs, four currencies (one zero-decimal), tiers, metered usage. It is
generated batch by batch of customers so 100,000 customers fit in memory, and each batch
is turned into the rows the mirror store would hold after a backfill by the mirror's own
parsers (``integrations.stripe_mirror.mirror_rows``; subscriptions and invoices with
their discounts expanded, as the backfill lists them), then written with ``bulk_insert``
(COPY on PostgreSQL) instead of upserts. Monthly exchange rates are written too.

Usage::

    python benchmarks/generate_account.py --customers 10000 --db sqlite:////tmp/bench.db

The account is deterministic for a given ``--seed`` and ``--now``.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from integrations.emulator import EmulatedAccount, generate_in_batches
from integrations.stripe_mirror import mirror_rows, store_objects, table_for
from models.derived import ExchangeRate
from nrr.db.bulk import bulk_insert
from nrr.db.statements import in_chunks

MONTHS = 36
DAY = 86_400
RATES = {"eur": 1.08, "gbp": 1.27, "jpy": 0.0067}
T_RATES: Table = ExchangeRate.__table__  # type: ignore[assignment]
# Mirror tables in the order a backfill fills them.
KINDS = ("product", "price", "coupon", "customer", "subscription", "invoice")


def _write(session: Session, rows_by_table: dict[str, list[dict[str, Any]]]) -> int:
    written = 0
    for kind in (*KINDS, "subscription_item", "invoice_line", "discount"):
        table = table_for(kind)
        rows = rows_by_table.get(table.name)
        if not rows:
            continue
        columns = list(rows[0])
        written += bulk_insert(session, table, columns,
                               ([row[c] for c in columns] for row in rows))
    return written


def _merge(into: dict[str, list[dict[str, Any]]], rows: dict[str, list[dict[str, Any]]]) -> None:
    for name, found in rows.items():
        into.setdefault(name, []).extend(found)


def _with_every_line(account: EmulatedAccount, invoice: dict[str, Any]) -> dict[str, Any]:
    """The invoice as a backfill stores it: every line, paged or not."""
    if not invoice["lines"]["has_more"]:
        return invoice
    whole = dict(invoice)
    whole["lines"] = {**invoice["lines"], "data": account.lines_of(invoice["id"]),
                      "has_more": False}
    return whole


def _as_listed(account: EmulatedAccount, obj: dict[str, Any]) -> dict[str, Any]:
    """A subscription or invoice as the backfill lists it: its discounts, and its items'
    (``expand[]=data.discounts``, ``data.items.data.discounts``), as objects."""
    def expanded(holder: dict[str, Any]) -> dict[str, Any]:
        return {**holder, "discounts": [account.discounts[d] if isinstance(d, str) else d
                                        for d in holder["discounts"]]}

    listed = expanded(obj)
    if obj.get("object") == "subscription":
        listed["items"] = {**obj["items"],
                           "data": [expanded(item) for item in obj["items"]["data"]]}
    return listed


def batch_rows(account: EmulatedAccount, *, state_at: int, catalogue: bool
               ) -> dict[str, list[dict[str, Any]]]:
    """Mirror rows of one batch (with the catalogue when ``catalogue``), by table."""
    now = datetime.fromtimestamp(state_at, tz=UTC)
    out: dict[str, list[dict[str, Any]]] = {}
    if catalogue:
        for kind, store in (("product", account.products), ("price", account.prices),
                            ("coupon", account.coupons)):
            _merge(out, mirror_rows(kind, store.values(), state_at=state_at, now=now))
    customers = list(account.customers.values()) + list(account.deleted_customers.values())
    customer_rows = mirror_rows("customer", customers, state_at=state_at, now=now)
    for row in customer_rows.get(table_for("customer").name, []):
        row["deleted"] = row["id"] in account.deleted_customers
    _merge(out, customer_rows)
    _merge(out, mirror_rows("subscription", (_as_listed(account, sub)
                                             for sub in account.subscriptions.values()),
                            state_at=state_at, now=now))
    _merge(out, mirror_rows("invoice", (_as_listed(account, _with_every_line(account, inv))
                                        for inv in account.invoices.values()),
                            state_at=state_at, now=now))
    # A discount seen on a subscription and on its invoices is one row.
    discounts = out.get(table_for("discount").name, [])
    out[table_for("discount").name] = list({row["id"]: row for row in discounts}.values())
    return out


def _rates(session: Session, first: int, now: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    month = datetime.fromtimestamp(first, tz=UTC).date().replace(day=1)
    last = datetime.fromtimestamp(now, tz=UTC).date()
    while month <= last:
        for currency, base in RATES.items():
            drift = 1 + rng.uniform(-0.04, 0.04)
            rows.append((month, currency, "usd", f"{base * drift:.6f}"))
        month = (month.replace(month=month.month + 1) if month.month < 12
                 else month.replace(year=month.year + 1, month=1))
    bulk_insert(session, T_RATES, ["date", "currency", "reporting_currency", "rate"], rows)


def generate(session: Session, customers: int, *, seed: int = 7, now: int | None = None,
             months: int = MONTHS, batch: int = 1_000) -> dict[str, int]:
    """Generate the account into the (migrated, empty) mirror tables; the caller commits.
    Returns counts of what was made."""
    now = now or int(time.time())
    stats = {"customers": 0, "subscriptions": 0, "invoices": 0, "lines": 0, "discounts": 0,
             "seat_changes": 0, "plan_changes": 0, "rows": 0}
    first_batch = True
    for account in generate_in_batches(seed=seed, customers=customers, months=months, now=now,
                                       batch=batch):
        if first_batch:
            _rates(session, min(p["created"] for p in account.prices.values()), now, seed)
        rows = batch_rows(account, state_at=now, catalogue=first_batch)
        first_batch = False
        stats["rows"] += _write(session, rows)
        stats["customers"] += len(account.customers) + len(account.deleted_customers)
        stats["subscriptions"] += len(account.subscriptions)
        stats["invoices"] += len(account.invoices)
        stats["lines"] += sum(len(lines) for lines in account.invoice_lines.values())
        stats["discounts"] += len(account.discounts)
        stats["seat_changes"] = account._engine.changes["seats"]
        stats["plan_changes"] = account._engine.changes["plan"]
    return stats


def change_customers(session: Session, total_customers: int, *, fraction: float = 0.01,
                     seed: int = 11, now: int | None = None) -> int:
    """Give ``fraction`` of all customers a seat change now, as the mirror stores it after
    their webhooks: the subscription's new state and the proration invoice, made by the
    emulator's engine (:meth:`_Engine.change_item`, the one path every simulated seat change
    takes), stored through the mirror store (which marks them dirty). Returns how many
    changed."""
    now = now or int(time.time())
    at = now - 3_600
    rng = random.Random(seed)
    subscriptions = table_for("subscription")
    candidates = session.execute(
        select(subscriptions.c.raw).where(subscriptions.c.status == "active",
                                          subscriptions.c.deleted.is_(False))
        .order_by(subscriptions.c.id)).scalars().all()
    wanted = max(1, int(total_customers * fraction))
    chosen: dict[str, dict[str, Any]] = {}  # customer id -> its subscription, to change
    for raw in rng.sample(list(candidates), len(candidates)):
        if len(chosen) >= wanted:
            break
        # A subscription stored without its discounts expanded (a database generated before
        # the backfill's expansion was copied here) is passed over: it cannot be billed.
        expanded = all(isinstance(d, dict) for holder in (raw, *raw["items"]["data"])
                       for d in holder["discounts"])
        if raw["customer"] not in chosen and expanded and _seat_item(raw, at) is not None:
            chosen[raw["customer"]] = copy.deepcopy(raw)
    # The engine bills on an account holding what the invoices read: the customers, the
    # catalogue, the coupons and the discounts. Its ids are fresh on every call (repeated
    # benchmark runs on one database add new invoices).
    account = EmulatedAccount(now=now, seed=time.time_ns())
    engine = account.engine
    engine.silent = True
    _load(session, account, chosen)
    last_lines = _last_cycle_lines(session, chosen.values())
    for sub in chosen.values():
        state = engine.take_over(sub, last_lines)
        item = _seat_item(sub, at)
        assert item is not None
        engine.change_item(state, item, at, quantity=item["quantity"] + 1)
    invoices = []
    for invoice in account.invoices.values():
        invoice["lines"]["data"] = account.lines_of(invoice["id"])
        invoice["lines"]["has_more"] = False
        invoices.append(invoice)
    store_objects(session, "invoice", invoices, state_at=now)
    store_objects(session, "subscription", [_as_listed(account, sub) for sub in chosen.values()],
                  state_at=now)
    return len(chosen)


def _seat_item(sub: dict[str, Any], at: int) -> dict[str, Any] | None:
    """The subscription's first item with seats whose current period holds ``at``."""
    for item in sub["items"]["data"]:
        if isinstance(item.get("quantity"), int) \
                and item["current_period_start"] < at < item["current_period_end"]:
            return item
    return None


def _load(session: Session, account: EmulatedAccount, subs: dict[str, dict[str, Any]]) -> None:
    """Put what the subscriptions' invoices read into ``account``: the catalogue, the
    coupons, the customers and the discounts (stored expanded on the subscriptions and
    their items, as the backfill lists them, and on the customers)."""
    for kind, store in (("product", account.products), ("price", account.prices),
                        ("coupon", account.coupons)):
        table = table_for(kind)
        store.update((row.id, row.raw) for row in session.execute(select(table.c.id, table.c.raw)))
    customers = table_for("customer")
    for ids in in_chunks(list(subs)):
        account.customers.update((row.id, row.raw) for row in session.execute(
            select(customers.c.id, customers.c.raw).where(customers.c.id.in_(ids))))
    for customer in account.customers.values():
        if customer.get("discount"):
            account.discounts[customer["discount"]["id"]] = customer["discount"]
    for sub in subs.values():
        for holder in (sub, *sub["items"]["data"]):
            account.discounts.update((d["id"], d) for d in holder["discounts"])
            holder["discounts"] = [d["id"] for d in holder["discounts"]]


def _last_cycle_lines(session: Session, subs: Iterable[dict[str, Any]]
                      ) -> dict[str, tuple[str, str]]:
    """Each item's latest cycle line (invoice id, line id): what a credit of unused time
    credits (Stripe names it in ``proration_details.credited_items``)."""
    lines = table_for("invoice_line")
    item_ids = [item["id"] for sub in subs for item in sub["items"]["data"]]
    out: dict[str, tuple[str, str]] = {}
    for chunk in in_chunks(item_ids):
        rows = session.execute(
            select(lines.c.subscription_item_id, lines.c.invoice_id, lines.c.id)
            .where(lines.c.subscription_item_id.in_(chunk),
                   lines.c.proration.is_(False))
            .order_by(lines.c.period_start))
        out.update((row.subscription_item_id, (row.invoice_id, row.id)) for row in rows)
    return out


def clear(session: Session) -> None:
    for kind in ("invoice_line", "invoice", "discount", "subscription_item", "subscription",
                 "coupon", "price", "product", "customer"):
        session.execute(delete(table_for(kind)))
    session.execute(delete(T_RATES))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
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

"""One customer never blanks an account: a generated account with 1 % broken customers.

Usage::

    python benchmarks/bench_isolation.py --customers 10000 [--db URL] [--reuse]

Steps:

1. Generate N customers over 36 months into the mirror (``generate_account.py``), give 20
   of them a new subscription on a trial ending three months after now and add 5 new
   customers whose only subscription is such a trial (normal data: computed, never left
   out).
2. Full recompute: the clean run. Its facts are kept.
3. Break 1 % of the customers straight in the mirror, as a mirror written by hand or by
   an older version could hold them, four kinds in turn: a required field missing (the
   subscriptions' currency), an unknown enum value (a subscription status), an impossible
   date (a subscription that ended before it started), a row that cannot be read (a JSON
   column holding text that is not JSON).
4. Full recompute: the broken run. It must finish; exactly the broken customers are left
   out, each with its reason; every other customer's facts are identical to the clean
   run's.

Prints the figures (the README's Benchmarks table holds them) and exits 1 when a check
fails. SQLite by default (the unreadable-row kind needs a JSON column that holds text; on
PostgreSQL that kind is replaced by a negative quantity on a line).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

KINDS = ("missing required field", "unknown enum value", "impossible date", "unreadable row")
TRIALS_AHEAD = 20
DAY = 86_400


def add_trials_ahead(session: Session, customer_ids: Sequence[str], now: int) -> list[str]:
    """A subscription on a trial from 5 days ago to 90 days ahead: a second one for a few
    customers, the only one of a few new customers (whose first payment is three months
    ahead: before issue 11 this crashed the whole recompute)."""
    from models.mirror import (
        StripeCustomer,
        StripeInvoice,
        StripeInvoiceLine,
        StripePrice,
        StripeSubscription,
        StripeSubscriptionItem,
    )

    price = session.scalars(select(StripePrice.id).where(StripePrice.currency == "usd")
                            .order_by(StripePrice.id).limit(1)).one()
    start, end = now - 5 * DAY, now + 90 * DAY
    chosen = [cid for index, cid in enumerate(customer_ids) if index % 400 == 7][:TRIALS_AHEAD]
    for number in range(5):
        cid = f"cus_trial_ahead_{number}"
        session.add(StripeCustomer(id=cid, email=f"{cid}@example.com", name=cid, country="US",
                                   currency="usd", metadata_={}, deleted=False, livemode=False,
                                   created=start, state_at=now, raw={}))
        chosen.append(cid)
    for cid in chosen:
        session.add(StripeSubscription(
            id=f"sub_ahead_{cid}", customer_id=cid, status="trialing", currency="usd",
            start_date=start, created=start, trial_start=start, trial_end=end,
            cancel_at_period_end=False, discount_ids=[], livemode=False, state_at=now, raw={}))
        session.add(StripeSubscriptionItem(
            id=f"si_ahead_{cid}", subscription_id=f"sub_ahead_{cid}", customer_id=cid,
            price_id=price, quantity=1, current_period_start=start, current_period_end=end,
            discount_ids=[], livemode=False, created=start, state_at=now, raw={}))
        session.add(StripeInvoice(
            id=f"in_ahead_{cid}", customer_id=cid, subscription_id=f"sub_ahead_{cid}",
            status="paid", billing_reason="subscription_create", currency="usd",
            period_start=start, period_end=end, finalized_at=start, paid_at=start, total=0,
            discount_ids=[], livemode=False, created=start, state_at=now, raw={}))
        session.add(StripeInvoiceLine(
            id=f"il_ahead_{cid}", invoice_id=f"in_ahead_{cid}", customer_id=cid,
            subscription_id=f"sub_ahead_{cid}", subscription_item_id=f"si_ahead_{cid}",
            price_id=price, invoice_status="paid", quantity=1, period_start=start,
            period_end=end, amount=0, currency="usd", proration=False, discount_amount=0,
            discount_ids=[], livemode=False, raw=None))
    return chosen


def break_customers(session: Session, customer_ids: Sequence[str], dialect: str) -> dict[str, str]:
    """Break 1 % of the customers (those with a subscription), four kinds in turn."""
    with_subs = sorted(set(session.scalars(text(
        "SELECT DISTINCT s.customer_id FROM stripe_subscriptions s "
        "JOIN stripe_subscription_items i ON i.subscription_id = s.id "
        "WHERE s.id NOT LIKE 'sub_ahead_%'"))))
    step = max(1, len(customer_ids) // max(1, len(customer_ids) // 100))
    victims = [cid for index, cid in enumerate(with_subs) if index % step == 3][:len(customer_ids) // 100]
    broken: dict[str, str] = {}
    for index, cid in enumerate(victims):
        kind = KINDS[index % len(KINDS)]
        params = {"cid": cid}
        if kind == "missing required field":
            session.execute(text("UPDATE stripe_subscriptions SET currency = NULL "
                                 "WHERE customer_id = :cid"), params)
        elif kind == "unknown enum value":
            session.execute(text("UPDATE stripe_subscriptions SET status = 'frobnicated' "
                                 "WHERE customer_id = :cid"), params)
        elif kind == "impossible date":
            session.execute(text("UPDATE stripe_subscriptions SET ended_at = start_date - 86400 "
                                 "WHERE customer_id = :cid"), params)
        elif dialect == "sqlite":
            session.execute(text("UPDATE stripe_subscription_items SET discount_ids = '[not json' "
                                 "WHERE customer_id = :cid"), params)
        else:
            session.execute(text("UPDATE stripe_invoice_lines SET quantity = -1 "
                                 "WHERE customer_id = :cid AND proration = false"), params)
        broken[cid] = kind
    return broken


def run_recompute(engine: Engine, url: str, now: int) -> tuple[Any, float]:
    import os

    from nrr.db import session_scope
    from nrr.services.recompute import recompute
    from nrr.settings import load_settings

    settings = load_settings({**os.environ, "DATABASE_URL": url})
    started = time.perf_counter()
    with session_scope(engine) as session:
        result = recompute(session, settings, now=datetime.fromtimestamp(now, tz=UTC))
    return result, time.perf_counter() - started


def all_facts(engine: Engine) -> dict[tuple[str, str], tuple[Any, ...]]:
    from models.derived import CustomerMonthFact as F

    with Session(engine) as session:
        return {(row[0], row[1]): tuple(row[2:]) for row in session.execute(select(
            F.customer_id, F.month, F.opening_mrr_micro, F.closing_mrr_micro, F.movement,
            F.movement_micro, F.fx_impact_micro, F.first_paid_month, F.currency, F.plan,
            F.product, F.country, F.opening_t12m_micro))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-customer isolation on a generated account.")
    parser.add_argument("--customers", type=int, default=10_000, help="number of customers")
    parser.add_argument("--db", default=None,
                        help="database URL (default: a SQLite file /tmp/nrr-isolation-N.db)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--now", type=int, default=None, help="the account's now (Unix seconds)")
    args = parser.parse_args(argv)
    url = args.db or f"sqlite:////tmp/nrr-isolation-{args.customers}.db"
    now = args.now or int(time.time())

    from benchmarks.generate_account import clear, generate
    from models.mirror import StripeCustomer
    from nrr.db import make_engine, session_scope, upgrade
    from nrr.logs import configure_logging

    configure_logging("ERROR")
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    engine = make_engine(url)
    upgrade(engine)
    dialect = engine.dialect.name
    started = time.perf_counter()
    with session_scope(engine) as session:
        clear(session)
        generate(session, args.customers, seed=args.seed, now=now)
    with session_scope(engine) as session:
        customer_ids = sorted(session.scalars(select(StripeCustomer.id)))
        ahead = add_trials_ahead(session, customer_ids, now)
    generation = time.perf_counter() - started

    clean, clean_s = run_recompute(engine, url, now)
    clean_facts = all_facts(engine)
    with session_scope(engine) as session:
        broken = break_customers(session, customer_ids, dialect)
    result, broken_s = run_recompute(engine, url, now)
    facts = all_facts(engine)

    left = {entry.customer_id: entry for entry in result.left_out}
    others_clean = {k: v for k, v in clean_facts.items() if k[0] not in broken}
    others_broken = {k: v for k, v in facts.items() if k[0] not in broken}
    differing = sorted({k[0] for k in set(others_clean) ^ set(others_broken)}
                       | {k[0] for k in others_clean.keys() & others_broken.keys()
                          if others_clean[k] != others_broken[k]})
    broken_facts = sum(1 for k in facts if k[0] in broken)
    with Session(engine) as session:
        from nrr.services.isolation import left_out_count

        stored = left_out_count(session)
        customers_total = session.scalar(select(func.count()).select_from(StripeCustomer))
    by_kind = Counter(broken.values())
    checks = {
        "the broken run finished": True,
        "clean run left no customer out": not clean.left_out,
        "left out == broken customers": set(left) == set(broken),
        "every left-out customer has a reason": all(e.reason for e in left.values()),
        "left-out customers stored": stored == len(broken),
        "no fact of a left-out customer": broken_facts == 0,
        "trials three months ahead computed, not left out": not set(ahead) & set(left),
        "every other customer's facts identical to the clean run": not differing,
    }
    print(f"database:                 {url}")
    print(f"customers:                {customers_total:,} ({len(ahead)} with a trial ending "
          f"90 days ahead)")
    print(f"generation:               {generation:.1f} s")
    print(f"clean full recompute:     {clean_s:.2f} s, {len(clean_facts):,} facts, "
          f"{len(clean.left_out)} left out")
    print(f"broken customers:         {len(broken)} ("
          + ", ".join(f"{kind} {by_kind[kind]}" for kind in KINDS) + ")")
    print(f"broken full recompute:    {broken_s:.2f} s, {len(facts):,} facts, "
          f"{len(left)} left out")
    print("reasons (one per kind):")
    shown: set[str] = set()
    for cid in sorted(left):
        kind = broken.get(cid, "NOT BROKEN")
        if kind not in shown:
            shown.add(kind)
            print(f"  {kind:24} {cid}: {left[cid].stage}: {left[cid].reason}")
    print(f"other customers' facts:   {len(others_broken):,} compared, "
          f"{len(differing)} customers differ")
    failed = [name for name, ok in checks.items() if not ok]
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    if differing:
        print(f"  first customers that differ: {differing[:10]}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

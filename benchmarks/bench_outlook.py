"""Benchmark the outlook: its share of the full recompute, and ``nrr outlook``'s latency.

Usage::

    python benchmarks/bench_outlook.py --customers 100000 [--db URL] [--reuse] [--now UNIX]

Steps: the account of ``bench_recompute.py`` (its ``prepare``: N customers generated into
the mirror by ``generate_account.py``, with cancellations at period end and trials), give ``--schedules`` (default 2 %) of the active
subscriptions a subscription schedule whose next phase has one seat less, run a full
recompute in a child process (``bench_recompute.py --child full``) and read the seconds the
outlook took inside it (``timings.outlook``); then time ``outlook_report`` in a warm process
and the whole ``nrr outlook --format json`` command. Targets (issue 14): the outlook adds
at most 10 % to the full recompute; ``nrr outlook`` answers in under 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DAY = 86_400


def add_schedules(session: Any, fraction: float, now: int) -> int:
    """Schedules for ``fraction`` of the active subscriptions (every n-th by id)."""
    from sqlalchemy import select

    from integrations.stripe_mirror import store_objects
    from models.mirror import StripeSubscription

    rows = session.execute(select(StripeSubscription.id, StripeSubscription.customer_id,
                                  StripeSubscription.raw)
                           .where(StripeSubscription.status == "active")
                           .order_by(StripeSubscription.id)).all()
    step = max(1, round(1 / fraction)) if fraction > 0 else 0
    schedules = []
    for index, (sid, customer_id, raw) in enumerate(rows):
        if not step or index % step:
            continue
        items = (raw.get("items") or {}).get("data") or []
        if not items:
            continue
        end = max(int(item.get("current_period_end") or now + 30 * DAY) for item in items)
        start = min(int(item.get("current_period_start") or now) for item in items)

        def phase_items(less: int, items: list[dict[str, Any]] = items) -> list[dict[str, Any]]:
            result = []
            for item in items:
                price = item["price"]["id"] if isinstance(item.get("price"), dict) else item.get("price")
                quantity = item.get("quantity")
                result.append({"price": price, "discounts": [],
                               "quantity": None if quantity is None else max(1, quantity - less)})
            return result

        schedules.append({
            "id": f"sub_sched_{sid}", "object": "subscription_schedule", "customer": customer_id,
            "subscription": sid, "status": "active", "end_behavior": "release", "livemode": False,
            "created": start, "current_phase": {"start_date": start, "end_date": end},
            "phases": [
                {"start_date": start, "end_date": end, "items": phase_items(0), "discounts": []},
                {"start_date": end, "end_date": end + 90 * DAY, "items": phase_items(1),
                 "discounts": []},
            ]})
    for begin in range(0, len(schedules), 2000):
        store_objects(session, "subscription_schedule", schedules[begin:begin + 2000], state_at=now)
    return len(schedules)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the outlook on a generated account.")
    parser.add_argument("--customers", type=int, default=10_000, help="number of customers")
    parser.add_argument("--db", default=None,
                        help="database URL (default: a SQLite file /tmp/nrr-bench-outlook-N.db)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse an already generated database of the same size")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--now", type=int, default=None, help="the account's now (Unix seconds)")
    parser.add_argument("--schedules", type=float, default=0.02,
                        help="share of active subscriptions given a schedule (default 0.02)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the outlook reads")
    args = parser.parse_args(argv)
    url = args.db or f"sqlite:////tmp/nrr-bench-outlook-{args.customers}.db"
    now = args.now or int(time.time())

    from sqlalchemy import func, select

    from benchmarks.bench_recompute import prepare, run_child
    from models.outlook import StripeSubscriptionSchedule
    from nrr.db import make_engine, session_scope
    from nrr.logs import configure_logging
    from nrr.services.outlook import outlook_report
    from nrr.settings import load_settings

    configure_logging("WARNING")
    # The account is bench_recompute.py's (same generator, seed, reuse rule); the schedules
    # are added once, the first time (a new account has none).
    generation, lines = prepare(url, args.customers, seed=args.seed, now=now, reuse=args.reuse)
    engine = make_engine(url)
    with session_scope(engine) as session:
        schedules = session.scalar(select(func.count()).select_from(StripeSubscriptionSchedule)) or 0
        if not schedules:
            schedules = add_schedules(session, args.schedules, now)
    print(f"account: {args.customers:,} customers, {lines:,} invoice lines"
          + (f", generated in {generation:.1f} s" if generation else " (reused)")
          + f"; subscription schedules: {schedules}")
    engine.dispose()

    full = run_child("full", url, now)
    outlook = float(full["timings"].get("outlook", 0.0))
    without = float(full["seconds"]) - outlook
    print(f"full recompute: {full['seconds']:.2f} s, of which outlook {outlook:.2f} s "
          f"= {100 * outlook / float(full['seconds']):.1f} % of the full recompute, "
          f"{100 * outlook / without:.1f} % added to the recompute without it "
          f"({without:.2f} s); {full['customers']} customers (target: at most 10 %)")

    settings = load_settings({**os.environ, "DATABASE_URL": url})
    engine = make_engine(url)
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        with session_scope(engine) as session:
            document = outlook_report(session, settings, months=3)
        timings.append(time.perf_counter() - started)
    print(f"outlook_report (warm process): median {1000 * statistics.median(timings):.1f} ms, "
          f"best {1000 * min(timings):.1f} ms; {len(document['movements'])} scheduled movements "
          f"in 3 months")
    command = Path(sys.executable).with_name("nrr")
    runs = []
    cpu = []
    for _ in range(args.repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run([str(command), "outlook", "--format", "json"], capture_output=True,
                                   text=True, env={**os.environ, "DATABASE_URL": url}, check=False)
        runs.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if completed.returncode != 0:
            sys.stderr.write(completed.stderr)
            raise SystemExit("nrr outlook failed")
    # On a shared machine the wall time is mostly waiting for a core: the CPU time the
    # command used is printed beside it.
    print(f"nrr outlook --format json (whole command): median {1000 * statistics.median(runs):.0f} ms "
          f"wall, {1000 * statistics.median(cpu):.0f} ms CPU; best {1000 * min(runs):.0f} ms wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

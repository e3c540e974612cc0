"""Benchmark the full and the incremental recompute on a generated account.

Usage::

    python benchmarks/bench_recompute.py --customers 10000 [--db URL] [--reuse]

Steps: generate N customers over 36 months into the mirror (``generate_account.py``),
run a full recompute in a child process, change 1 % of the customers (a seat change with
proration lines, marked dirty as the mirror store does), run the incremental recompute in
another child process. Prints generation time, full recompute seconds, the child's peak
RSS (``ru_maxrss``), invoice lines per second, and the incremental time with its share of
the full one. Targets (issue 2): 100,000 customers in <= 60 s and <= 2 GiB, incremental
< 5 % of the full time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def child(kind: str, url: str, now: int) -> int:
    """Run one recompute in this (fresh) process and print its figures as JSON."""
    from datetime import UTC, datetime

    from nrr.db import make_engine, session_scope
    from nrr.logs import configure_logging
    from nrr.services.recompute import recompute, recompute_dirty
    from nrr.settings import load_settings

    configure_logging("WARNING")
    settings = load_settings({**os.environ, "DATABASE_URL": url})
    engine = make_engine(url)
    moment = datetime.fromtimestamp(now, tz=UTC)
    started = time.perf_counter()
    with session_scope(engine) as session:
        if kind == "full":
            result = recompute(session, settings, now=moment)
        else:
            result = recompute_dirty(session, settings, now=moment)
    seconds = time.perf_counter() - started  # including the commit
    figures: dict[str, Any] = result.as_dict()
    figures["seconds_with_commit"] = seconds
    figures["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The largest worker process of a parallel recompute (0 when it ran in this process),
    # as the workers measured it (``RUSAGE_CHILDREN`` counts a spawned worker's parent's
    # size at the fork).
    figures["max_rss_worker_kib"] = figures.get("worker_peak_rss_kib", 0)
    print(json.dumps(figures))
    return 0


def run_child(kind: str, url: str, now: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--db", url,
         "--now", str(now)],
        capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"{kind} recompute failed (exit {completed.returncode})")
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures


def prepare(url: str, customers: int, *, seed: int, now: int, reuse: bool) -> tuple[float, int]:
    """The benchmark account in ``url`` (migrated): generated, or kept with ``reuse`` when
    it already has ``customers`` customers. Returns (generation seconds, 0 when reused;
    invoice lines)."""
    from sqlalchemy import func, select

    from benchmarks.generate_account import clear, generate
    from models.mirror import StripeCustomer, StripeInvoiceLine
    from nrr.db import make_engine, session_scope, upgrade

    if url.startswith("sqlite:///") and not reuse:
        path = Path(url[len("sqlite:///"):])
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    engine = make_engine(url)
    upgrade(engine)
    with session_scope(engine) as session:
        existing = session.scalar(select(func.count()).select_from(StripeCustomer)) or 0
    generation = 0.0
    if not (reuse and existing == customers):
        started = time.perf_counter()
        with session_scope(engine) as session:
            clear(session)
            stats = generate(session, customers, seed=seed, now=now)
        generation = time.perf_counter() - started
        print(f"generated: {stats}")
    with session_scope(engine) as session:
        lines = session.scalar(select(func.count()).select_from(StripeInvoiceLine)) or 0
    engine.dispose()
    return generation, int(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark nrr recompute on a generated account.")
    parser.add_argument("--customers", type=int, default=10_000, help="number of customers")
    parser.add_argument("--db", default=None,
                        help="database URL (default: a SQLite file /tmp/nrr-bench-N.db)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse an already generated database of the same size")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--now", type=int, default=None, help="the account's now (Unix seconds)")
    parser.add_argument("--child", choices=["full", "incremental"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    url = args.db or f"sqlite:////tmp/nrr-bench-{args.customers}.db"
    now = args.now or int(time.time())
    if args.child:
        return child(args.child, url, now)

    from benchmarks.generate_account import change_customers
    from nrr.db import make_engine, session_scope

    generation, lines = prepare(url, args.customers, seed=args.seed, now=now, reuse=args.reuse)
    full = run_child("full", url, now)
    with session_scope(make_engine(url)) as session:
        changed = change_customers(session, args.customers, fraction=0.01, now=now)
    incremental = run_child("incremental", url, now)

    full_s = float(full["seconds_with_commit"])
    inc_s = float(incremental["seconds_with_commit"])
    print(f"database:              {url}")
    print(f"customers:             {args.customers:,}")
    print(f"invoice lines:         {lines:,}")
    print(f"generation:            {generation:.1f} s" + ("" if generation else " (reused)"))
    print(f"full recompute:        {full_s:.2f} s (service {full['seconds']:.2f} s)")
    print(f"  state lines read:    {full['lines_read']:,}")
    print(f"  timeline points:     {full['timeline_points']:,}")
    print(f"  ledger entries:      {full['ledger_entries']:,}")
    print(f"  monthly facts:       {full['facts']:,}")
    print(f"  peak RSS:            {full['max_rss_kib'] / 1024:.0f} MiB"
          + (f" (+ each worker process <= {full['max_rss_worker_kib'] / 1024:.0f} MiB)"
             if full.get("max_rss_worker_kib") else ""))
    print("  time split:          " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in sorted(full["timings"].items())))
    print(f"  lines/s:             {lines / full_s:,.0f}")
    print(f"incremental ({changed:,} changed): {inc_s:.2f} s = {100 * inc_s / full_s:.1f} % of full"
          f" (peak RSS {incremental['max_rss_kib'] / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

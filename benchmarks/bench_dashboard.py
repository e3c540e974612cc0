"""Benchmark the dashboard: the overview and a drill-down page over a 100,000-customer account.

Facts are inserted straight into the database with the report benchmark's generator
(``benchmarks/bench_report.py``: N customers over ``--months`` months, every kind of
movement, five plans, four countries), then the real server (``nrr.dashboard.app``) is
started on a free loopback port and timed over HTTP with a token, as a browser would ask:

* the overview, cold (the first view: every number collected and the page rendered),
  warm (the same filters and data again: the page kept per filters and data version) and
  after a recompute (an incremental recompute of no customer changes the data version,
  not the numbers: the kept page is not served, a fresh one is made);
* the overview for a date range (another cold view);
* a drill-down page: the customers of the month's largest movement (HTML and CSV);
* a customer page.

Target (issue 13): the overview and a drill-down page each under 1 s at 100,000 customers.

Usage::

    python benchmarks/bench_dashboard.py                       # 100,000 customers, SQLite
    python benchmarks/bench_dashboard.py --db sqlite:////tmp/bench_dash.db --reuse
    python benchmarks/bench_dashboard.py --postgres                # a throwaway PostgreSQL
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from benchmarks.bench_report import insert_facts
from benchmarks.databases import bench_database
from models.derived import CustomerMonthFact
from nrr.dashboard.app import make_server
from nrr.db import make_engine, session_scope, upgrade
from nrr.domain.months import add_months
from nrr.services.recompute import recompute
from nrr.settings import load_settings

TOKEN = "bench-token"


def fetch(url: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        size = len(response.read())
        if response.status != 200:
            raise SystemExit(f"{url}: HTTP {response.status}")
    return time.perf_counter() - started, size


def repeated(url: str, repeat: int) -> tuple[float, float, int]:
    samples, size = [], 0
    for _ in range(repeat):
        elapsed, size = fetch(url)
        samples.append(elapsed)
    return statistics.median(samples), min(samples), size



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=13)
    parser.add_argument("--last-month", default="2026-10")
    parser.add_argument("--db", default=None,
                        help="database URL (default: a new SQLite file in a temp directory)")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway local PostgreSQL (tests/support/servers.py) "
                             "and benchmark on it")
    parser.add_argument("--reuse", action="store_true", help="keep the facts already in --db")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    with bench_database(postgres=args.postgres, url=args.db, name="dashboard") as db_url:
        return run(args, db_url)


def run(args: argparse.Namespace, db_url: str) -> int:
    engine = make_engine(db_url)
    upgrade(engine)
    months = [add_months(args.last_month, -k) for k in range(args.months - 1, -1, -1)]
    if not args.reuse:
        started = time.perf_counter()
        rows = insert_facts(engine, args.customers, months, args.seed)
        print(f"inserted {rows:,} fact rows ({args.customers:,} customers, {len(months)} "
              f"months) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    settings = load_settings({"DATABASE_URL": db_url, "NRR_DASHBOARD_TOKEN": TOKEN,
                              "NRR_LOG_LEVEL": "WARNING"})
    with engine.connect() as conn:
        facts = conn.scalar(select(func.count()).select_from(CustomerMonthFact))
        month = months[-1]
        largest = conn.execute(
            select(CustomerMonthFact.movement, func.count()).where(
                CustomerMonthFact.month == month, CustomerMonthFact.movement.is_not(None))
            .group_by(CustomerMonthFact.movement).order_by(func.count().desc())).first()
        customer = conn.scalar(select(CustomerMonthFact.customer_id)
                               .where(CustomerMonthFact.month == month).limit(1))
    server, _dashboard = make_server(settings, engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        cold, size = fetch(base + "/")
        warm = repeated(base + "/", args.repeat)
        with session_scope(engine) as session:
            recompute(session, settings, customer_ids=[])
        after_recompute, _ = fetch(base + "/")
        ranged, _ = fetch(base + f"/?from={months[1]}&to={month}")
        movement = largest[0] if largest else "churn"
        drill_url = f"{base}/movement?month={month}&movement={movement}"
        drill = repeated(drill_url, args.repeat)
        drill_csv = repeated(drill_url + "&format=csv", args.repeat)
        person = repeated(f"{base}/customer?id={customer}", args.repeat)
    finally:
        server.shutdown()
        server.server_close()
    print(f"backend {engine.dialect.name}; {args.customers:,} customers, {facts:,} monthly "
          f"facts, {len(months)} months; month {month}, {largest[1] if largest else 0:,} "
          f"{movement} customers")
    print(f"overview, cold (first view since the start):   {cold * 1000:8.1f} ms "
          f"({size / 1024:.0f} KiB)   target < 1000 ms")
    print(f"overview, warm (same filters and data):        median {warm[0] * 1000:7.1f} ms   "
          f"best {warm[1] * 1000:7.1f} ms")
    print(f"overview after a recompute (new data version): {after_recompute * 1000:8.1f} ms")
    print(f"overview for a date range, cold:               {ranged * 1000:8.1f} ms")
    print(f"drill-down page ({movement}, largest 200 listed): median {drill[0] * 1000:7.1f} ms"
          f"   best {drill[1] * 1000:7.1f} ms ({drill[2] / 1024:.0f} KiB)   target < 1000 ms")
    print(f"drill-down CSV:                                median {drill_csv[0] * 1000:7.1f} ms")
    print(f"customer page:                                 median {person[0] * 1000:7.1f} ms")
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(1, 5, 15 min: {', '.join(f'{v:.2f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark the retention report over stored monthly facts.

Inserts synthetic ``customer_month_facts`` directly (N customers over ``--months`` months:
arrivals, expansions, contractions, churn and returns, five plans, four countries, a
metadata key), then prints:

* the in-process time of one month's report (``nrr.services.report.monthly_report``) in a
  warm process: ``time.perf_counter`` over ``--repeat`` runs, median and best;
* the same for the T12M report and a ``--by plan`` report (for information);
* the wall time of the whole ``nrr report --month M --format json`` command, run as a
  subprocess ``--command-repeat`` times (median and best).

Targets (issue 3): under 200 ms in process and under 1 s for the command, at 100,000
customers.

Usage::

    python benchmarks/bench_report.py --customers 100000
    python benchmarks/bench_report.py --customers 100000 --db sqlite:////tmp/bench_report.db --reuse
    python benchmarks/bench_report.py --customers 100000 --db postgresql://user@127.0.0.1:5432/nrr
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from benchmarks.databases import bench_database
from models.derived import CustomerMonthFact
from nrr.db import make_engine, upgrade
from nrr.domain.money import MICRO
from nrr.domain.months import add_months
from nrr.settings import load_settings

PLANS = (("starter", 1_900), ("team", 4_900), ("business", 14_900), ("scale", 49_900),
         ("enterprise", 250_000))
COUNTRIES = ("US", "DE", "GB", "FR")
TIERS = ("gold", "silver", "bronze")
COLUMNS = ("month", "customer_id", "opening_mrr_micro", "closing_mrr_micro", "movement",
           "movement_micro", "fx_impact_micro", "first_paid_month", "currency", "plan",
           "product", "country", "metadata")


def synthetic_facts(customers: int, months: list[str], seed: int) -> Iterator[tuple[Any, ...]]:
    """Fact rows month by month; every customer's months chain (closing -> next opening)."""
    rng = random.Random(seed)
    state: dict[int, dict[str, Any]] = {}
    # A third of the customers exist before the first month, the rest arrive over time.
    for n in range(customers):
        arrive = 0 if n < customers // 3 else rng.randrange(0, len(months))
        plan, price = PLANS[min(int(rng.expovariate(1.2)), len(PLANS) - 1)]
        seats = rng.randint(1, 20)
        state[n] = {"arrive": arrive, "plan": plan, "mrr": price * seats * MICRO,
                    "ever": arrive == 0, "first": months[0] if arrive == 0 else None,
                    "country": COUNTRIES[n % len(COUNTRIES)],
                    "tier": TIERS[n % len(TIERS)], "paying": arrive == 0}
    for index, month in enumerate(months):
        for n in range(customers):
            s = state[n]
            if index < s["arrive"]:
                continue
            opening = s["mrr"] if s["paying"] else 0
            roll = rng.random()
            closing = opening
            movement = None
            if index == s["arrive"] and not s["ever"]:
                closing, movement = s["mrr"], "new"
                s["ever"], s["paying"], s["first"] = True, True, month
            elif not s["paying"]:
                if roll < 0.02:
                    closing, movement, s["paying"] = s["mrr"], "reactivation", True
            elif roll < 0.02:
                closing, movement, s["paying"] = 0, "churn", False
            elif roll < 0.08:
                closing, movement = opening + opening // 4, "expansion"
            elif roll < 0.11:
                closing, movement = opening - opening // 5, "contraction"
            if not s["paying"] and opening == 0 and closing == 0:
                continue
            if closing:
                s["mrr"] = closing
            amount = {"new": closing, "reactivation": closing, "churn": opening,
                      "expansion": closing - opening, "contraction": opening - closing}
            yield (month, f"cus_{n:07d}", opening, closing, movement,
                   amount.get(movement or "", 0), 0, s["first"], "usd", s["plan"],
                   "prod_app", s["country"], {"tier": s["tier"]})


def insert_facts(engine: Any, customers: int, months: list[str], seed: int) -> int:
    table: Table = CustomerMonthFact.__table__  # type: ignore[assignment]
    rows = 0
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        conn.execute(delete(table))
        for row in synthetic_facts(customers, months, seed):
            batch.append(dict(zip(COLUMNS, row, strict=True)))
            if len(batch) >= 20_000:
                conn.execute(table.insert(), batch)
                rows += len(batch)
                batch.clear()
        if batch:
            conn.execute(table.insert(), batch)
            rows += len(batch)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE customer_month_facts")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    build_totals(engine)
    return rows


def build_totals(engine: Any) -> float:
    """The segment totals of the inserted facts (what every recompute writes beside its
    facts; run 0, the live run of a database no recompute has switched); returns seconds."""
    from nrr.db import session_scope
    from nrr.services.recompute import totals

    started = time.perf_counter()
    with session_scope(engine) as session:
        written = totals.build(session, 0)
    seconds = time.perf_counter() - started
    print(f"segment totals: {written:,} rows in {seconds:.1f} s", file=sys.stderr)
    return seconds


def timed(repeat: int, call: Any) -> tuple[float, float]:
    call()  # warm: imports, catalogue, statement caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), min(samples)


def command_times(db_url: str, month: str, repeat: int) -> tuple[float, float, float]:
    """Wall time (median, best) and CPU time (median, user + sys) of the whole command."""
    script = Path(sys.executable).parent / "nrr"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "nrr.cli"]
    argv += ["report", "--month", month, "--format", "json"]
    env = {**os.environ, "DATABASE_URL": db_url, "NRR_LOG_LEVEL": "WARNING"}
    samples, cpu = [], []
    for attempt in range(repeat + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"nrr report failed ({done.returncode}): {done.stderr}")
        if attempt:  # the first run warms the OS file cache
            samples.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples), min(samples), statistics.median(cpu)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=13,
                        help="months of facts (13 lets the T12M report run)")
    parser.add_argument("--last-month", default="2026-10")
    parser.add_argument("--db", default=None,
                        help="database URL (default: a new SQLite file in a temp directory)")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway local PostgreSQL (tests/support/servers.py) "
                             "and benchmark on it")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the facts already in --db (skip the insert)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--command-repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    with bench_database(postgres=args.postgres, url=args.db, name="report") as db_url:
        return run(args, db_url)


def run(args: argparse.Namespace, db_url: str) -> int:
    engine = make_engine(db_url)
    upgrade(engine)
    months = [add_months(args.last_month, -k) for k in range(args.months - 1, -1, -1)]
    month = months[-1]
    if not args.reuse:
        started = time.perf_counter()
        rows = insert_facts(engine, args.customers, months, args.seed)
        print(f"inserted {rows:,} fact rows ({args.customers:,} customers, {len(months)} months) "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    from nrr.services.report import cohort_table, monthly_report

    settings = load_settings({"DATABASE_URL": db_url})
    with Session(engine) as session:
        in_month = session.scalar(select(func.count()).select_from(CustomerMonthFact)
                                  .where(CustomerMonthFact.month == month))
        report = monthly_report(session, settings, month)
        monthly = timed(args.repeat, lambda: monthly_report(session, settings, month))
        t12m = timed(max(3, args.repeat // 4),
                     lambda: monthly_report(session, settings, month, period="t12m"))
        by_plan = timed(max(3, args.repeat // 4),
                        lambda: monthly_report(session, settings, month, by="plan"))
        started = time.perf_counter()
        cohort_table(session, settings)
        cohorts = time.perf_counter() - started
    command = command_times(db_url, month, args.command_repeat)

    backend = engine.dialect.name
    print(f"backend {backend}; month {month}: {in_month:,} customers with facts, "
          f"{report['customers']['opening']:,} paying at the opening, NRR {report['nrr']} %")
    print(f"monthly report, in process (warm):  median {monthly[0] * 1000:7.1f} ms   "
          f"best {monthly[1] * 1000:7.1f} ms   target < 200 ms")
    print(f"t12m report, in process (warm):     median {t12m[0] * 1000:7.1f} ms   "
          f"best {t12m[1] * 1000:7.1f} ms")
    print(f"--by plan report, in process:       median {by_plan[0] * 1000:7.1f} ms   "
          f"best {by_plan[1] * 1000:7.1f} ms")
    print(f"cohort table (all cohorts), once:   {cohorts * 1000:7.1f} ms")
    print(f"`nrr report --format json` command: median {command[0] * 1000:7.1f} ms   "
          f"best {command[1] * 1000:7.1f} ms   target < 1000 ms   "
          f"(CPU {command[2] * 1000:.0f} ms)")
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(wall times grow with the load; the CPU time does not)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

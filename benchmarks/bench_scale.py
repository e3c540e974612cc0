"""Benchmark the full recompute in shards through real Celery workers on Redis and PostgreSQL.

Usage::

    python benchmarks/bench_scale.py --customers 100000 [--workers 1,2] [--db URL] [--reuse]

Steps: start a PostgreSQL server (or use ``--db``) and generate N customers over 36
months straight into it (``generate_account.py``); start Redis; for each worker count W in
``--workers``, start one Celery worker with W processes, send the full recompute
(``nrr.recompute``, scope ``all``: planned into shards of ``--shard-customers``), wait
until its run is live and read the shards' figures. Prints the time from the plan to the
switch, rows and invoice lines per second, the peak memory of each worker process, the
scaling efficiency against one process, and the monthly report's latency on the result.
Targets (issue 15, 2 cores): 100,000 customers with 2 processes within 40 s, 300,000
within 150 s, peak memory per process the same (within 20 %) at both sizes and under
1 GiB, 2 processes at least 1.7x as fast as 1, the monthly report under 200 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent


def worker_environment(database_url: str, redis_url: str, shard_customers: int,
                       workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    config = workdir / "nrr.toml"
    config.write_text("[worker]\nsoft_time_limit_seconds = 3600\n")
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "NRR_RECOMPUTE_SHARD_CUSTOMERS": str(shard_customers),
                "NRR_LOG_LEVEL": "WARNING", "NRR_CONFIG": str(config),
                "PYTHONPATH": str(ROOT)})
    return env


def start_worker(env: dict[str, str], processes: int, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "worker.celery_app", "worker",
         "--concurrency", str(processes), "--loglevel", "WARNING", "--queues", "nrr",
         "--without-gossip", "--without-mingle", "--hostname", f"bench{processes}@%h"],
        cwd=str(log_path.parent), env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


def live_full_run(engine: Any, after: int) -> Any:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from models.derived import RecomputeRun

    with Session(engine) as session:
        return session.scalars(select(RecomputeRun).where(
            RecomputeRun.kind == "full", RecomputeRun.id > after,
            RecomputeRun.status.in_(("live", "retired", "failed")))).first()


def last_run_id(engine: Any) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from models.derived import RecomputeRun

    with Session(engine) as session:
        return int(session.scalar(select(func.max(RecomputeRun.id))) or 0)


def measure(engine: Any, env: dict[str, str], processes: int, workdir: Path,
            timeout: float) -> dict[str, Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from models.derived import RecomputeShard
    from nrr.settings import load_settings
    from tests.support.servers import stop_process_group
    from worker.celery_app import make_celery

    worker = start_worker(env, processes, workdir / f"worker-{processes}.log")
    try:
        time.sleep(3)  # the worker's processes import and connect
        before = last_run_id(engine)
        sent = time.monotonic()
        make_celery(load_settings(env)).send_task(
            "nrr.recompute", kwargs={"scope": "all", "reason": "benchmark", "follow_up": False})
        deadline = sent + timeout
        run = None
        while time.monotonic() < deadline:
            run = live_full_run(engine, before)
            if run is not None:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {workdir}/worker-{processes}.log")
            time.sleep(0.2)
        wall = time.monotonic() - sent
        if run is None:
            raise RuntimeError(f"no run went live in {timeout:.0f} s")
        if run.status == "failed":
            raise RuntimeError(f"run {run.id} failed")
        with Session(engine) as session:
            shards = [r.result or {} for r in session.scalars(
                select(RecomputeShard).where(RecomputeShard.run_id == run.id))]
    finally:
        stop_process_group(worker)
    peak: dict[int, int] = {}
    for figures in shards:
        pid = int(figures.get("pid") or 0)
        peak[pid] = max(peak.get(pid, 0), int(figures.get("max_rss_kib") or 0))
    seconds = (run.finished_at - run.started_at).total_seconds()
    rows = sum(int(f.get("facts") or 0) + int(f.get("ledger_entries") or 0)
               + int(f.get("timeline_points") or 0) for f in shards)
    timings: dict[str, float] = {}
    for figures in shards:
        for key, value in (figures.get("timings") or {}).items():
            timings[key] = timings.get(key, 0.0) + float(value)
    return {"processes": processes, "run_id": run.id, "shards": len(shards),
            "timings": {k: round(v, 1) for k, v in sorted(timings.items())},
            "seconds": seconds, "wall_seconds": wall, "rows": rows,
            "facts": sum(int(f.get("facts") or 0) for f in shards),
            "customers": sum(int(f.get("customers") or 0) for f in shards),
            "peak_rss_mib": sorted(round(v / 1024) for v in peak.values())}


def report_latency(engine: Any, env: dict[str, str], repeat: int) -> tuple[str, float, float]:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from models.derived import CustomerMonthFact
    from nrr.services.report import monthly_report
    from nrr.settings import load_settings

    settings = load_settings(env)
    with Session(engine) as session:
        months = sorted(session.scalars(select(CustomerMonthFact.month).distinct()))
        month = months[-2] if len(months) > 1 else months[-1]
        in_month = session.scalar(select(func.count()).select_from(CustomerMonthFact)
                                  .where(CustomerMonthFact.month == month))
    times = []
    for _ in range(repeat):
        with Session(engine) as session:
            started = time.perf_counter()
            monthly_report(session, settings, month)
            times.append(time.perf_counter() - started)
    print(f"  ({in_month:,} facts in {month})")
    return month, statistics.median(times) * 1000, min(times) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="number of customers")
    parser.add_argument("--months", type=int, default=36, help="months of history")
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated worker process counts to measure (e.g. 1,2,4)")
    parser.add_argument("--shard-customers", type=int, default=5000,
                        help="customers per shard (NRR_RECOMPUTE_SHARD_CUSTOMERS)")
    parser.add_argument("--db", default=None,
                        help="PostgreSQL URL (default: start a server for the run)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the account already in --db when it has --customers")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--now", type=int, default=None, help="the account's now (Unix seconds)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait per run")
    parser.add_argument("--report-repeat", type=int, default=15,
                        help="monthly reports timed after the runs")
    args = parser.parse_args(argv)

    from sqlalchemy import func, select

    from benchmarks.generate_account import clear, generate
    from models.mirror import StripeCustomer, StripeInvoiceLine
    from nrr.db import make_engine, session_scope, upgrade
    from nrr.logs import configure_logging
    from tests.support.servers import start_postgres, start_redis

    configure_logging("WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="nrr-bench-scale-"))
    postgres = None
    url = args.db
    if url is None:
        postgres = start_postgres()
        url = postgres.url("postgres")
    redis_server = start_redis()
    engine = make_engine(url)
    try:
        upgrade(engine)
        with session_scope(engine) as session:
            existing = session.scalar(select(func.count()).select_from(StripeCustomer)) or 0
        if not (args.reuse and existing == args.customers):
            started = time.perf_counter()
            with session_scope(engine) as session:
                clear(session)
                generate(session, args.customers, seed=args.seed, months=args.months,
                         now=args.now or int(time.time()))
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
            print(f"generated {args.customers:,} customers in {time.perf_counter() - started:.0f} s")
        with session_scope(engine) as session:
            lines = session.scalar(select(func.count()).select_from(StripeInvoiceLine)) or 0
        env = worker_environment(url, redis_server.url, args.shard_customers, workdir)
        load = os.getloadavg()
        print(f"customers: {args.customers:,}; invoice lines: {lines:,}; "
              f"shard: {args.shard_customers:,} customers; load average before: "
              f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
        results = []
        for processes in [int(p) for p in args.workers.split(",") if p.strip()]:
            figures = measure(engine, env, processes, workdir, args.timeout)
            results.append(figures)
            print(f"{processes} worker process(es): {figures['seconds']:.1f} s plan to switch "
                  f"({figures['wall_seconds']:.1f} s from the send), {figures['shards']} shards, "
                  f"{figures['rows'] / figures['seconds']:,.0f} rows/s, "
                  f"{lines / figures['seconds']:,.0f} invoice lines/s, "
                  f"peak RSS per process {figures['peak_rss_mib']} MiB; seconds in all "
                  f"shards: {figures['timings']}")
        base = results[0]
        for figures in results[1:]:
            speedup = base["seconds"] * base["processes"] / figures["seconds"]
            print(f"  {figures['processes']} vs {base['processes']}: "
                  f"{base['seconds'] / figures['seconds']:.2f}x as fast; scaling efficiency "
                  f"{100 * speedup / figures['processes']:.0f} %")
        month, median_ms, best_ms = report_latency(engine, env, args.report_repeat)
        print(f"monthly report {month}: median {median_ms:.1f} ms, best {best_ms:.1f} ms")
        load = os.getloadavg()
        print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
              f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        engine.dispose()
        redis_server.stop()
        if postgres is not None:
            postgres.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

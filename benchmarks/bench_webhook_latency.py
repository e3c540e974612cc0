"""Webhook-to-MRR latency with one Celery worker on Redis (target: p95 <= 2 s).

Starts a redis-server on a free loopback port, the local Stripe emulator with a generated
account, a SQLite (or ``--database-url``) database, one real worker process
(``celery -A worker.celery_app worker``) and the webhook endpoint (the WSGI app of
``nrr serve`` on a threaded server, dispatching to Celery). After the initial backfill and
recompute, it cancels one live subscription at a time in the emulator, posts the resulting
Stripe events, signed, to ``POST /webhooks/stripe``, and measures the time from the post
until ``mrr_timeline`` shows the customer's MRR dropping to zero at the cancellation.

    .venv/bin/python -m benchmarks.bench_webhook_latency --changes 40

Prints one line per figure and a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

if __package__ in (None, ""):  # run as a script: the repository root holds tests/support
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_benchmarksecret"
API_KEY = "sk_test_benchmarkkey"


# --------------------------------------------------------------------------- the change


def _customer_of(account: Any, subscription_id: str) -> str:
    customer = account.subscriptions[subscription_id]["customer"]
    return customer if isinstance(customer, str) else str(customer["id"])


def cancel_one_subscription(account: Any, at: int, eligible: Any = None
                            ) -> tuple[str, list[dict[str, Any]]]:
    """Cancel one live subscription of the emulated account at ``at``; its customer and events.

    ``eligible(customer_id)`` narrows the choice (for example to customers with MRR stored).
    """
    with account.lock:
        engine = account._engine
        at = max(at, account.now + 1)
        account.now = at
        live = sorted((s for s in engine.states.values() if not s.done
                       and account.subscriptions[s.sub_id]["status"] == "active"
                       and not account.subscriptions[s.sub_id]["cancel_at_period_end"]
                       and s.period_start < at < s.period_end
                       and (eligible is None or eligible(_customer_of(account, s.sub_id)))),
                      key=lambda s: s.sub_id)
        if not live:
            raise RuntimeError("no live subscription left to cancel")
        state = live[len(live) // 2]
        customer_id = _customer_of(account, state.sub_id)
        if not engine.change(state, "cancel_now", at):
            raise RuntimeError(f"could not cancel {state.sub_id}")
        return customer_id, engine.flush_events()


def sign(body: bytes, secret: str = SECRET) -> str:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def post_event(url: str, event: dict[str, Any], secret: str = SECRET) -> int:
    body = json.dumps(event).encode()
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def timeline_of(engine: Engine, customer_id: str) -> list[tuple[str, int, int]]:
    """The customer's stored MRR timeline (currency, effective_at, mrr_micro)."""
    from sqlalchemy.orm import Session

    from models.derived import MrrTimelinePoint

    # Through a Session: it reads the live run's rows only (models/live_rows.py).
    with Session(engine) as conn:
        return [tuple(row) for row in conn.execute(  # type: ignore[misc]
            select(MrrTimelinePoint.currency, MrrTimelinePoint.effective_at,
                   MrrTimelinePoint.mrr_micro)
            .where(MrrTimelinePoint.customer_id == customer_id)
            .order_by(MrrTimelinePoint.currency, MrrTimelinePoint.effective_at)).all()]


def has_mrr(engine: Engine, customer_id: str) -> bool:
    """True when the customer's stored MRR is above zero now (in some currency)."""
    latest: dict[str, int] = {}
    for currency, _, mrr in timeline_of(engine, customer_id):
        latest[currency] = mrr
    return any(mrr > 0 for mrr in latest.values())


def mrr_reflects_cancellation(engine: Engine, customer_id: str, at: int,
                              before: list[tuple[str, int, int]]) -> bool:
    """True once the stored timeline changed and has a step at the cancellation instant."""
    now = timeline_of(engine, customer_id)
    return now != before and any(effective == at for _, effective, _ in now)


def wait_for(predicate: Any, timeout: float, interval: float = 0.01) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


# --------------------------------------------------------------------------- the rig


def worker_environment(database_url: str, redis_url: str, emulator_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": emulator_url,
                "STRIPE_WEBHOOK_SECRET": SECRET, "NRR_STRIPE_RATE_LIMIT": "1000",
                "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000", "NRR_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT)})
    return env


def seed_rates(engine: Engine, months: int = 40) -> None:
    from datetime import date

    from nrr.db import session_scope
    from nrr.demo import demo_rates
    from nrr.domain.months import add_months, current_month
    from nrr.services.fx import RateRow, store_rates
    from nrr.settings import load_settings

    last = add_months(current_month(load_settings({}).tz), 1)
    rows = demo_rates(add_months(last, -months), last, "usd", ("eur", "gbp", "jpy"))
    with session_scope(engine) as session:
        store_rates(session, [RateRow(date.fromisoformat(d), c, r) for d, c, r in rows],
                    reporting_currency="usd")


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "celery"), "-A", "worker.celery_app", "worker",
         "--concurrency", "1", "--loglevel", "WARNING", "--queues", "nrr",
         "--without-gossip", "--without-mingle"],
        cwd=str(log_path.parent), env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


def run(changes: int, customers: int, database_url: str | None, workdir: Path,
        timeout: float = 30.0) -> dict[str, Any]:
    from integrations.emulator import EmulatorServer, generate_account
    from integrations.webhook_app import WEBHOOK_PATH, create_app, make_webhook_server
    from nrr.db import make_engine, upgrade
    from nrr.settings import load_settings
    from tests.support.servers import start_redis, stop_process_group
    from worker.dispatch import celery_dispatch

    database_url = database_url or f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    seed_rates(engine)
    account = generate_account(seed=3, customers=customers, months=12, now=int(time.time()))
    redis_server = start_redis()
    emulator = EmulatorServer(account).start()
    env = worker_environment(database_url, redis_server.url, emulator.url)
    settings = load_settings(env)
    worker = start_worker(env, workdir / "worker.log")
    app = create_app(settings, engine, dispatch=celery_dispatch(settings))
    server = make_webhook_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}{WEBHOOK_PATH}"
    latencies: list[float] = []
    missed = 0
    try:
        # The first state: a backfill and a recompute through the same worker.
        from worker.celery_app import make_celery

        make_celery(settings).send_task("nrr.backfill")
        backfilled = wait_for(lambda: _settled(engine), timeout=300, interval=0.2)
        if backfilled is None:
            raise RuntimeError(f"the backfill did not finish; see {workdir / 'worker.log'}")
        for _ in range(changes):
            customer_id, events = cancel_one_subscription(
                account, int(time.time()), eligible=lambda cid: has_mrr(engine, cid))
            at = max(e["created"] for e in events)
            before = timeline_of(engine, customer_id)
            started = time.monotonic()
            for event in events:
                post_event(url, event)
            waited = wait_for(
                lambda cid=customer_id, at=at, before=before: mrr_reflects_cancellation(
                    engine, cid, at, before), timeout=timeout)
            if waited is None:
                missed += 1
                continue
            latencies.append(time.monotonic() - started)
    finally:
        server.shutdown()
        server.server_close()
        stop_process_group(worker)
        emulator.stop()
        redis_server.stop()
        engine.dispose()
    return {
        "changes": changes, "measured": len(latencies), "missed": missed,
        "customers": customers,
        "p50_seconds": round(statistics.median(latencies), 3) if latencies else None,
        "p95_seconds": round(percentile(latencies, 0.95), 3) if latencies else None,
        "max_seconds": round(max(latencies), 3) if latencies else None,
        "target_p95_seconds": 2.0,
    }


def _settled(engine: Engine) -> bool:
    from models.derived import RecomputeRun
    from models.mirror import DirtyCustomer, SyncState

    with engine.connect() as conn:
        phases = conn.execute(select(SyncState.phase)).scalars().all()
        runs = conn.execute(select(RecomputeRun.id).where(
            RecomputeRun.finished_at.is_not(None))).first()
        dirty = conn.execute(select(DirtyCustomer.customer_id)).first()
    return bool(phases) and all(p in ("done", "idle") for p in phases) and runs is not None \
        and dirty is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40, help="cancellations to measure")
    parser.add_argument("--customers", type=int, default=300, help="customers in the account")
    parser.add_argument("--database-url", default=None,
                        help="database (default: a SQLite file in a temporary folder)")
    args = parser.parse_args(argv)
    from nrr.logs import configure_logging

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="nrr-bench-webhook-") as folder:
        result = run(args.changes, args.customers, args.database_url, Path(folder))
    print(f"webhook -> stored MRR, one worker on Redis, {result['measured']} changes "
          f"({result['missed']} missed), {result['customers']} customers")
    print(f"p50 {result['p50_seconds']} s")
    print(f"p95 {result['p95_seconds']} s (target <= 2 s)")
    print(f"max {result['max_seconds']} s")
    print(json.dumps(result))
    return 0 if result["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

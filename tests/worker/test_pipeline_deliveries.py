"""Many webhook deliveries at once leave no customer's numbers stale, with or without Redis.

A real ``nrr serve`` process receives 50 subscription cancellations, each delivered 4
times, shuffled among event types that do not affect revenue, from 20 threads. Within
10 s of the last answer every event is applied and no customer is left dirty, and
``nrr report --format json`` for the month equals the report after a full
``nrr recompute`` of the same mirror (the reference: it reads every customer afresh,
whatever the pipeline did or forgot).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from benchmarks.bench_webhook_latency import SECRET, cancel_one_subscription, post_event
from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from integrations.stripe_sync import run_sync
from models.mirror import DirtyCustomer, StripeEvent, StripeSubscription
from nrr.db import make_engine, session_scope
from nrr.domain.months import current_month
from nrr.services.recompute import recompute
from nrr.services.snapshots import last_closed_month, take_snapshots
from nrr.settings import load_settings
from tests.support.servers import free_port, stop_process_group
from tests.worker.conftest import API_KEY, WorkerProcess, seed_rates, wait_until

ROOT = Path(__file__).resolve().parents[2]
NRR = str(ROOT / ".venv" / "bin" / "nrr")
CANCELLATIONS = 50
COPIES = 4
THREADS = 20
SETTLE_SECONDS = 10.0
PAST = 600  # seconds: the emulated account's clock behind the real one
IRRELEVANT_TYPES = ("charge.succeeded", "payment_intent.created", "customer.source.created",
                    "invoiceitem.created", "payment_method.attached")


@pytest.fixture
def account() -> EmulatedAccount:
    # Enough live subscriptions to cancel 50 of them. The account's clock starts in the
    # past: the emulator moves it one second per cancellation, and every cancellation must
    # have happened before the first report (a report of the current month counts what
    # has happened by its recompute; a cancellation dated after it is in the outlook).
    return generate_account(seed=11, customers=110, months=4, now=int(time.time()) - PAST)


@pytest.fixture
def emulator(account: EmulatedAccount) -> Iterator[EmulatorServer]:
    server = EmulatorServer(account).start()
    yield server
    server.stop()


def base_env(db_url: str, emulator: EmulatorServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    config = tmp_path / "nrr.toml"
    config.write_text("[worker]\nlock_ttl_seconds = 6\nvisibility_timeout_seconds = 8\n")
    env.update({
        "DATABASE_URL": db_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "NRR_STRIPE_RATE_LIMIT": "1000",
        "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
        "NRR_LOG_LEVEL": "INFO",
        "NRR_CONFIG": str(config),
        "PYTHONPATH": str(ROOT),
    })
    return env


def nrr(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run([NRR, *args], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=str(ROOT))
    assert result.returncode == 0, f"nrr {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result.stdout


def report(env: dict[str, str], month: str) -> Any:
    return json.loads(nrr(["report", "--format", "json", "--month", month], env))


class Serve:
    """A real ``nrr serve`` process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [NRR, "serve", "--host", "127.0.0.1", "--port", str(self.port)], env=env,
            cwd=str(log_path.parent), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_until(lambda: "listening on" in self.text() or self.process.poll() is not None,
                   timeout=60, message="nrr serve listening")
        assert self.process.poll() is None, self.text()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if not self._log.closed:
            stop_process_group(self.process)
            self._log.close()


def irrelevant_event(index: int, at: int, rng: random.Random) -> dict[str, Any]:
    kind = IRRELEVANT_TYPES[index % len(IRRELEVANT_TYPES)]
    return {"id": f"evt_{rng.getrandbits(64):016x}", "object": "event", "type": kind,
            "api_version": "2026-10-28.endive", "created": at, "livemode": False,
            "data": {"object": {"id": f"obj_{rng.getrandbits(48):012x}",
                                "object": kind.split(".")[0]}}}


def cancellations(account: EmulatedAccount, engine: Engine) -> list[dict[str, Any]]:
    """50 cancellations of subscriptions stored as active: their ``.deleted`` events."""
    with session_scope(engine) as session:
        active = set(session.scalars(select(StripeSubscription.customer_id).where(
            StripeSubscription.status == "active")))
    chosen: set[str] = set()
    events = []
    at = int(time.time()) - PAST // 2
    for _ in range(CANCELLATIONS):
        customer, emitted = cancel_one_subscription(
            account, at, eligible=lambda cid: cid in active and cid not in chosen)
        chosen.add(customer)
        deleted = [e for e in emitted if e["type"] == "customer.subscription.deleted"]
        assert len(deleted) == 1, [e["type"] for e in emitted]
        events.append(deleted[0])
    assert max(e["created"] for e in events) < time.time() - 60, "cancellations in the past"
    return events


def deliveries(events: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    at = max(e["created"] for e in events)
    noise = [irrelevant_event(i, at, rng) for i in range(len(events))]
    sequence = [e for e in events for _ in range(COPIES)] + noise
    rng.shuffle(sequence)
    return sequence


def deliver(url: str, sequence: list[dict[str, Any]]) -> list[int]:
    """POST every delivery from ``THREADS`` threads; the status of each."""
    statuses: list[int] = []
    guard = threading.Lock()
    pending = list(sequence)

    def post_some() -> None:
        while True:
            with guard:
                if not pending:
                    return
                event = pending.pop()
            status = post_event(url, event)
            with guard:
                statuses.append(status)

    threads = [threading.Thread(target=post_some) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def settled(engine: Engine, event_ids: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        with engine.connect() as conn:
            processed = conn.execute(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.id.in_(sorted(event_ids)),
                StripeEvent.processed_at.is_not(None))).scalar_one()
            dirty = conn.execute(select(func.count()).select_from(DirtyCustomer)).scalar_one()
        return processed == len(event_ids) and dirty == 0
    return check


def prepare(env: dict[str, str]) -> Engine:
    """The account synced and recomputed (the state a user has before the webhooks)."""
    seed_rates(env["DATABASE_URL"])
    settings = load_settings(env)
    engine = make_engine(env["DATABASE_URL"])
    run_sync(engine, settings)
    with session_scope(engine) as session:
        recompute(session, settings)
    with session_scope(engine) as session:  # as the worker keeps them
        take_snapshots(session, settings, last_closed_month(settings))
    return engine


def run_deliveries(env: dict[str, str], engine: Engine, account: EmulatedAccount,
                   serve: Serve) -> None:
    month = current_month(load_settings(env).tz)
    before = report(env, month)
    rng = random.Random(10)
    events = cancellations(account, engine)
    sequence = deliveries(events, rng)
    assert len([e for e in sequence if e["type"] == "customer.subscription.deleted"]) == 200

    statuses = deliver(serve.url, sequence)
    delivered = time.monotonic()

    assert statuses == [200] * len(sequence)
    wait_until(settled(engine, {e["id"] for e in sequence}), timeout=SETTLE_SECONDS,
               interval=0.1, message="every event applied and no customer dirty")
    assert time.monotonic() - delivered <= SETTLE_SECONDS
    served = report(env, month)
    serve.stop()
    nrr(["recompute"], env)
    reference = report(env, month)
    assert served == reference
    # The cancellations are in the numbers (so the comparison is not of two stale reports).
    assert served != before


def test_in_process_serve_without_redis_keeps_every_customer_current(
        db_url: str, emulator: EmulatorServer, account: EmulatedAccount,
        tmp_path: Path) -> None:
    env = base_env(db_url, emulator, tmp_path)
    engine = prepare(env)
    serve = Serve(env, tmp_path / "serve.log")
    try:
        run_deliveries(env, engine, account, serve)
        assert "in-process processing" in serve.text()
    finally:
        serve.stop()
        engine.dispose()


def test_serve_on_redis_with_a_celery_worker_keeps_every_customer_current(
        db_url: str, redis_url: str, emulator: EmulatorServer, account: EmulatedAccount,
        tmp_path: Path, start_worker: Callable[..., WorkerProcess]) -> None:
    env = base_env(db_url, emulator, tmp_path)
    env["REDIS_URL"] = redis_url
    engine = prepare(env)
    worker = start_worker(env)
    serve = Serve(env, tmp_path / "serve.log")
    try:
        run_deliveries(env, engine, account, serve)
        assert "worker processing" in serve.text()
        assert "nrr.process_event" in worker.text()
    finally:
        serve.stop()
        engine.dispose()

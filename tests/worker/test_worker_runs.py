"""Real worker processes on Redis: one sync at a time, and a SIGKILL mid-backfill resumes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, func, select

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from models.derived import CustomerMonthFact, LedgerEntry, MrrTimelinePoint
from models.mirror import (
    StripeCustomer,
    StripeInvoice,
    StripeInvoiceLine,
    StripeSubscription,
    SyncState,
)
from nrr.db import session_scope
from nrr.services.recompute import recompute
from tests.worker.conftest import WorkerProcess, client_app, settings_of, wait_until


def _phases(engine: Engine) -> dict[str, tuple[str, int]]:
    with session_scope(engine) as session:
        return {r.resource: (r.phase, r.objects_synced)
                for r in session.scalars(select(SyncState))}


def _count(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_two_concurrent_sync_requests_make_one_run(
        worker_env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        emulator: EmulatorServer) -> None:
    emulator.latency_ms = 150  # the backfill takes long enough for the second request to overlap
    first = start_worker(worker_env, concurrency=1, name="first")
    second = start_worker(worker_env, concurrency=1, name="second")
    app = client_app(worker_env)
    app.send_task("nrr.sync")
    app.send_task("nrr.sync")

    def both_done() -> bool:
        logs = first.text() + second.text()
        return len(re.findall(r"Task nrr\.sync\[[0-9a-f-]+\] succeeded", logs)) == 2

    wait_until(both_done, timeout=90, message="both sync tasks finished")
    logs = first.text() + second.text()
    assert logs.count("sync.started") == 1, logs[-3000:]
    assert logs.count("another sync of this account is running") == 1
    # Each worker took one request: the lock held across processes, not only threads.
    for worker in (first, second):
        assert len(re.findall(r"Task nrr\.sync\[[0-9a-f-]+\] received", worker.text())) == 1


def test_sigkill_mid_backfill_then_restart_completes_without_duplicates(
        worker_env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        engine_of: Callable[[str], Engine], tmp_path: Path) -> None:
    account: EmulatedAccount = generate_account(seed=9, customers=260, months=8,
                                                now=int(time.time()))
    server = EmulatorServer(account, latency_ms=120).start()
    try:
        worker_env["STRIPE_API_BASE"] = server.url
        engine = engine_of(worker_env["DATABASE_URL"])
        worker = start_worker(worker_env, concurrency=1, name="doomed")
        client_app(worker_env).send_task("nrr.backfill")

        def partway() -> bool:
            states = _phases(engine)
            return any(phase == "running" and done > 0 for phase, done in states.values()) \
                and any(phase == "running" for phase, _ in states.values())

        wait_until(partway, timeout=60, interval=0.05, message="a backfill partway")
        worker.kill()
        stopped_at = _phases(engine)
        assert any(phase == "running" for phase, _ in stopped_at.values()), stopped_at

        # The unacknowledged task comes back to the restarted worker (visibility timeout),
        # waits for the dead holder's lock lease to run out, and resumes from the cursors.
        restarted = start_worker(worker_env, concurrency=1, name="phoenix")
        wait_until(lambda: all(phase in ("done", "idle") for phase, _ in _phases(engine).values())
                   and len(_phases(engine)) > 1, timeout=120, interval=0.3,
                   message="the backfill completed after the restart")
        restarted.wait_for("recompute.finished", timeout=60)
        restarted.wait_for("snapshots.taken", timeout=60)
    finally:
        server.stop()

    # Every object once: the mirror matches the account exactly.
    # (A deleted customer is kept when an event or invoice named it, so it may be there.)
    assert len(account.customers) <= _count(engine, StripeCustomer) <= len(
        account.customers) + len(account.deleted_customers)
    assert _count(engine, StripeSubscription) == len(account.subscriptions)
    assert _count(engine, StripeInvoice) == len(account.invoices)
    assert _count(engine, StripeInvoiceLine) == sum(len(v) for v in account.invoice_lines.values())
    with session_scope(engine) as session:
        facts = session.execute(select(CustomerMonthFact.month, CustomerMonthFact.customer_id)
                                ).all()
        assert len(facts) == len(set(facts))
        derived = (_count(engine, MrrTimelinePoint), _count(engine, LedgerEntry), len(facts))
    # The derived rows equal those of one clean full recompute of the same mirror.
    settings = settings_of(worker_env)
    with session_scope(engine) as session:
        recompute(session, settings)
    assert (_count(engine, MrrTimelinePoint), _count(engine, LedgerEntry),
            _count(engine, CustomerMonthFact)) == derived

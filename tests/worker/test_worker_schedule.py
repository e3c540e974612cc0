"""A scheduled tick (real beat, real worker, real Redis) runs sync, recompute and snapshot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from integrations.emulator import EmulatedAccount
from models.derived import CustomerMonthFact, RecomputeRun, RetentionSnapshot
from models.mirror import StripeCustomer, SyncState
from nrr.db import session_scope
from nrr.services.report import monthly_report
from nrr.services.snapshots import last_closed_month
from tests.worker.conftest import WorkerProcess, settings_of, wait_until, write_config


def test_a_scheduled_tick_syncs_recomputes_and_snapshots(
        worker_env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        engine_of: Callable[[str], Engine], account: EmulatedAccount, tmp_path: Path) -> None:
    worker_env["NRR_CONFIG"] = write_config(
        tmp_path, "[schedule]\nsync_every_minutes = 0.05\n[worker]\nlock_ttl_seconds = 10\n")
    settings = settings_of(worker_env)
    engine = engine_of(worker_env["DATABASE_URL"])
    month = last_closed_month(settings)

    worker = start_worker(worker_env, beat=True)

    def snapshot_total() -> RetentionSnapshot | None:
        with session_scope(engine) as session:
            return session.scalars(select(RetentionSnapshot).where(
                RetentionSnapshot.month == month, RetentionSnapshot.period == "monthly",
                RetentionSnapshot.dimension == "")).first()

    stored = wait_until(snapshot_total, timeout=120, message="the snapshot of the closed month")
    worker.wait_for("nrr.evaluate_alerts", timeout=60)

    with session_scope(engine) as session:
        phases = dict(session.execute(select(SyncState.resource, SyncState.phase)).all())
        customers = session.scalar(select(func.count()).select_from(StripeCustomer))
        facts = session.scalar(select(func.count()).select_from(CustomerMonthFact))
        runs = session.scalar(select(func.count()).select_from(RecomputeRun))
        report = monthly_report(session, settings, month, now=datetime.now(UTC))
    assert all(phase in ("done", "idle") for phase in phases.values()), phases
    assert customers is not None and customers >= len(account.customers) > 0
    assert facts and runs
    # The snapshot holds what the report says about the closed month now.
    assert stored.metrics["closing_mrr"] == report["closing_mrr"]
    assert stored.metrics["nrr"] == report["nrr"]
    assert stored.version == 1
    # Logs carry the task id; the Stripe key never appears.
    assert "task_id=" in worker.text()
    assert worker_env["STRIPE_API_KEY"] not in worker.text()

    # Changes in the current month reach the worker on a later tick (events), are
    # recomputed, and leave the closed month's snapshot as it was: no new version.
    with account.lock:
        new_events = account.apply_changes(6)
    assert new_events
    worker.wait_for("snapshots.taken", count=2, timeout=60)
    assert "unchanged=" in worker.text().split("snapshots.taken")[2].splitlines()[0]
    with session_scope(engine) as session:
        versions = session.scalars(select(RetentionSnapshot.version).where(
            RetentionSnapshot.month == month)).all()
    assert set(versions) == {1}

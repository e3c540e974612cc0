"""A signed webhook reaches the stored MRR through the real worker on Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from benchmarks.bench_webhook_latency import (
    SECRET,
    cancel_one_subscription,
    has_mrr,
    mrr_reflects_cancellation,
    post_event,
    timeline_of,
)
from integrations.emulator import EmulatedAccount
from integrations.webhook_app import WEBHOOK_PATH, create_app, make_webhook_server
from models.mirror import DirtyCustomer, StripeEvent
from nrr.cli import app as cli
from tests.worker.conftest import WorkerProcess, client_app, settings_of, wait_until
from worker.dispatch import celery_dispatch


@pytest.fixture
def webhook_url(worker_env: dict[str, str], engine_of: Callable[[str], Engine]) -> Iterator[str]:
    worker_env["STRIPE_WEBHOOK_SECRET"] = SECRET
    settings = settings_of(worker_env)
    app = create_app(settings, engine_of(worker_env["DATABASE_URL"]),
                     dispatch=celery_dispatch(settings))
    server = make_webhook_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{WEBHOOK_PATH}"
    server.shutdown()
    server.server_close()


def test_a_cancellation_posted_as_a_webhook_reaches_the_stored_mrr(
        worker_env: dict[str, str], webhook_url: str, account: EmulatedAccount,
        start_worker: Callable[..., WorkerProcess], engine_of: Callable[[str], Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of(worker_env["DATABASE_URL"])
    worker = start_worker(worker_env)
    client_app(worker_env).send_task("nrr.backfill")
    worker.wait_for("recompute.finished", timeout=90)
    worker.wait_for("alerts.evaluated", timeout=60)  # the backfill's chain is done
    evaluated = worker.text().count("alerts.evaluated")

    customer_id, events = cancel_one_subscription(
        account, int(time.time()), eligible=lambda cid: has_mrr(engine, cid))
    at = max(e["created"] for e in events)
    before = timeline_of(engine, customer_id)
    for event in events:
        assert post_event(webhook_url, event) == 200
    # A duplicate delivery is recorded once and changes nothing.
    assert post_event(webhook_url, events[0]) == 200

    wait_until(lambda: mrr_reflects_cancellation(engine, customer_id, at, before), timeout=30,
               interval=0.05, message="the cancellation in the stored MRR")
    ids = [e["id"] for e in events]

    def settled() -> bool:
        # Every event processed, and the customer recomputed after the last of them.
        with engine.connect() as conn:
            processed = conn.execute(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.id.in_(ids), StripeEvent.processed_at.is_not(None))).scalar_one()
            dirty = conn.execute(select(DirtyCustomer.customer_id).where(
                DirtyCustomer.customer_id == customer_id)).first()
        return processed == len(ids) and dirty is None

    wait_until(settled, timeout=30, interval=0.05, message="every event processed")
    assert mrr_reflects_cancellation(engine, customer_id, at, before)
    assert "nrr.process_event" in worker.text()
    # The events' recompute is followed by the snapshot and the alert evaluation.
    worker.wait_for("alerts.evaluated", count=evaluated + 1, timeout=30)

    # Running the same tasks again changes nothing: the event again, a full recompute.
    after = timeline_of(engine, customer_id)
    sender = client_app(worker_env)
    sender.send_task("nrr.process_event", args=[ids[0]])
    sender.send_task("nrr.recompute", kwargs={"scope": "all", "follow_up": False})
    worker.wait_for("kind=full", timeout=60)
    worker.wait_for("nrr.process_event[", count=2 * (len(ids) + 1), timeout=30)
    assert timeline_of(engine, customer_id) == after

    # `nrr status` tells what happened: the sync per resource, the queue, the last recompute.
    for key, value in worker_env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["status", "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    status = json.loads(result.stdout)
    assert {row["resource"] for row in status["sync"]} >= {"customers", "subscriptions"}
    assert status["queue"]["broker"] == "redis"
    assert status["queue"]["depth"] == 0
    assert status["event_cursor"]["age_seconds"] is not None
    assert status["last_recompute"]["kind"] == "full"
    assert status["last_snapshot"] is not None
    table = CliRunner().invoke(cli, ["status"])
    assert table.exit_code == 0 and "event cursor" in table.stdout

"""The worker's full recompute in shards over two real Celery workers on Redis and
PostgreSQL: a worker SIGKILLed mid-shard loses nothing and doubles nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchmarks.generate_account import clear, generate
from models.derived import RecomputeRun, RecomputeShard
from nrr.db import session_scope
from nrr.services.recompute import recompute
from tests.recompute.test_recompute import snapshot
from tests.worker.conftest import WorkerProcess, client_app, settings_of, wait_until

CUSTOMERS = 1600
SHARD = 400


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_shard_the_recompute_completes_as_in_one_process(
        worker_env: dict[str, str], start_worker: Callable[..., WorkerProcess],
        engine_of: Callable[[str], Engine]) -> None:
    engine = engine_of(worker_env["DATABASE_URL"])
    with session_scope(engine) as session:
        clear(session)  # the generated account brings its own exchange rates
        generate(session, CUSTOMERS, seed=13, now=int(time.time()) - 86_400)
    worker_env["NRR_RECOMPUTE_SHARD_CUSTOMERS"] = str(SHARD)
    doomed = start_worker(worker_env, concurrency=1, name="doomed")
    steady = start_worker(worker_env, concurrency=1, name="steady")
    client_app(worker_env).send_task("nrr.recompute", kwargs={
        "scope": "all", "reason": "test", "follow_up": False})

    doomed.wait_for("recompute.shard_started", timeout=180)
    doomed.kill()
    log = doomed.text()
    # It died inside a shard: one started that it never finished.
    assert log.count("recompute.shard_started") > log.count("recompute.shard_finished"), log

    def switched() -> RecomputeRun | None:
        with Session(engine) as session:
            return session.scalars(select(RecomputeRun).where(
                RecomputeRun.kind == "full", RecomputeRun.status == "live")).first()

    # The killed shard's message comes back after the visibility timeout and the other
    # worker redoes it; the last shard sends the final step, which switches.
    run = wait_until(switched, timeout=300, interval=0.5, message="the sharded run live")
    assert run.shards == CUSTOMERS // SHARD
    steady.wait_for("recompute.sharded_finished", timeout=60)
    with Session(engine) as session:
        shard_rows = list(session.scalars(select(RecomputeShard)
                                          .where(RecomputeShard.run_id == run.id)))
        sharded = snapshot(session)
    assert len(shard_rows) == CUSTOMERS // SHARD
    assert all(r.finished_at is not None for r in shard_rows)
    assert sum(r.customers for r in shard_rows) == CUSTOMERS
    assert len(sharded["facts"]) == len(set((f[0], f[1]) for f in sharded["facts"]))

    # The same facts, timeline and ledger as one recompute in one process, as of the same
    # instant (the sharded run's start).
    moment = datetime.fromtimestamp(int(run.started_at.timestamp()), tz=UTC)
    with session_scope(engine) as session:
        single = recompute(session, settings_of(worker_env).model_copy(
            update={"recompute_workers": 0}), now=moment)
    with Session(engine) as session:
        assert snapshot(session) == sharded
    assert single.customers == CUSTOMERS

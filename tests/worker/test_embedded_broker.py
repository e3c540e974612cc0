"""`nrr worker` with no REDIS_URL: an embedded broker, nothing to install, beat inside."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from integrations.emulator import EmulatorServer
from models.derived import RetentionSnapshot
from nrr.cli import app as cli
from nrr.db import make_engine, session_scope
from tests.support.servers import stop_process_group
from tests.worker.conftest import API_KEY, ROOT, seed_rates, wait_until, write_config


def test_nrr_worker_runs_the_schedule_on_the_embedded_broker(
        sqlite_url: str, emulator: EmulatorServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seed_rates(sqlite_url)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    env.update({"DATABASE_URL": sqlite_url, "STRIPE_API_KEY": API_KEY,
                "STRIPE_API_BASE": emulator.url, "NRR_STRIPE_RATE_LIMIT": "1000",
                "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
                "NRR_CONFIG": write_config(tmp_path, "[schedule]\nsync_every_minutes = 0.05\n")})
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "nrr"), "worker",
                                    "--concurrency", "1", "--loglevel", "INFO"],
                                   cwd=str(tmp_path), env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    engine = make_engine(sqlite_url)
    try:
        def snapshot() -> bool:
            with session_scope(engine) as session:
                return session.scalars(select(RetentionSnapshot.id).limit(1)).first() is not None

        try:
            wait_until(snapshot, timeout=120, message="a snapshot from the embedded worker")
        except AssertionError:
            raise AssertionError(log_path.read_text()[-4000:]) from None
        text = log_path.read_text()
        assert "embedded broker" in text
        assert "transport:   filesystem://" in text and "redis://" not in text
        database = Path(sqlite_url[len("sqlite:///"):])
        assert (database.parent / "nrr-state" / "broker").is_dir()

        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("REDIS_URL", raising=False)
        result = CliRunner().invoke(cli, ["status", "--format", "json"])
        assert result.exit_code == 0, result.output
        status = json.loads(result.stdout)
        assert status["queue"]["broker"] == "embedded"
        assert isinstance(status["queue"]["depth"], int)
    finally:
        stop_process_group(process)
        engine.dispose()
        time.sleep(0.1)

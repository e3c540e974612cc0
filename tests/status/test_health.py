"""`nrr status` is the health check: it fails (exit 1, the reason on stderr and in the
JSON) on an unreachable database or broker, a stale sync, no sync at all or a failed
last sync; it passes when the last sync is recent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from models.mirror import SyncState
from nrr.db import make_engine, session_scope
from nrr.logs import configure_logging


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


def status(env: dict[str, str], *args: str) -> Run:
    from typer.testing import CliRunner

    from nrr.cli import app

    try:
        result = CliRunner().invoke(app, ["status", *args], env=env, catch_exceptions=False)
    finally:
        configure_logging()
    return Run(result.exit_code, result.stdout, result.stderr)


def synced(database_url: str, *, ago: timedelta, error: str | None = None,
           phase: str = "idle") -> None:
    now = datetime.now(UTC)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        session.execute(delete(SyncState))
        for resource in ("customers", "subscriptions", "events"):
            session.add(SyncState(resource=resource, phase=phase, objects_synced=3,
                                  started_at=now - ago - timedelta(seconds=30),
                                  finished_at=None if phase == "running" else now - ago,
                                  last_error=error if resource == "subscriptions" else None))
    engine.dispose()


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": sqlite_url, "REDIS_URL": "", "NRR_CONFIG": ""}


def test_a_recent_sync_is_healthy(env: dict[str, str]) -> None:
    synced(env["DATABASE_URL"], ago=timedelta(minutes=10))

    result = status(env, "--format", "json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is True and document["problems"] == []


def test_a_stale_sync_fails_with_the_reason(env: dict[str, str], tmp_path: Path) -> None:
    # Default: 3 intervals of 15 minutes; 50 minutes ago is stale.
    synced(env["DATABASE_URL"], ago=timedelta(minutes=50))

    result = status(env, "--format", "json")
    table = status(env)
    config = tmp_path / "nrr.toml"
    config.write_text("[schedule]\nstale_after_intervals = 4\n")
    relaxed = status({**env, "NRR_CONFIG": str(config)})

    assert result.exit_code == 1
    assert "the sync is stale" in result.stderr and "45 minutes" in result.stderr
    assert json.loads(result.stdout)["healthy"] is False
    assert table.exit_code == 1 and "the sync is stale" in table.stderr
    assert relaxed.exit_code == 0, relaxed.stderr


def test_a_running_sync_is_not_stale(env: dict[str, str]) -> None:
    synced(env["DATABASE_URL"], ago=timedelta(hours=3), phase="running")
    assert status(env).exit_code == 0


def test_no_sync_yet_fails(env: dict[str, str]) -> None:
    result = status(env)
    assert result.exit_code == 1 and "no sync has finished yet" in result.stderr


def test_a_failed_last_sync_fails_with_its_error(env: dict[str, str]) -> None:
    synced(env["DATABASE_URL"], ago=timedelta(minutes=5), error="APIConnectionError: refused")

    result = status(env)

    assert result.exit_code == 1
    assert "the last sync of subscriptions failed: APIConnectionError: refused" in result.stderr


def test_an_unreachable_broker_fails(env: dict[str, str]) -> None:
    synced(env["DATABASE_URL"], ago=timedelta(minutes=5))

    result = status({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, "--format", "json")

    assert result.exit_code == 1
    assert "broker" in result.stderr
    assert any("broker" in p for p in json.loads(result.stdout)["problems"])


def test_an_unreachable_database_fails(env: dict[str, str]) -> None:
    result = status({**env, "DATABASE_URL": "postgresql://nrr:secret@127.0.0.1:1/nrr"},
                    "--format", "json")

    assert result.exit_code == 1
    assert "database: cannot connect" in result.stderr
    assert "secret" not in result.stderr + result.stdout
    assert json.loads(result.stdout) == {"healthy": False,
                                         "problems": [json.loads(result.stdout)["problems"][0]]}

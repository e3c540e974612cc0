"""Leases: SIGTERM releases a lock like Ctrl-C, and a refused `nrr sync` names the holder,
its start and when its lease ends (a killed holder's lease is called stale)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from integrations.emulator import EmulatorServer, generate_account
from models.derived import JobLock
from nrr.db import make_engine, ready_engine
from nrr.locks import SYNC_LOCK, account_lock, lock_key
from nrr.settings import load_settings


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    # Slow answers: a sync takes long enough to be interrupted in the middle.
    with EmulatorServer(generate_account(seed=5, customers=30, months=6),
                        latency_ms=150) as server:
        yield server


def _env(tmp_path: Path, emulator: EmulatorServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "NRR_", "REDIS_", "DATABASE_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'locks.db'}",
                "STRIPE_API_KEY": "sk_test_locks123", "STRIPE_API_BASE": emulator.url,
                "NRR_STRIPE_RATE_LIMIT": "1000", "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
                "NRR_LOG_LEVEL": "WARNING", **extra})
    return env


def _nrr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nrr.cli", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def _held(env: dict[str, str]) -> bool:
    settings = load_settings(env)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(JobLock.name).where(
                JobLock.name == lock_key(SYNC_LOCK, settings),
                JobLock.active.is_(True))).first() is not None
    finally:
        engine.dispose()


def test_sigterm_releases_the_sync_lock(tmp_path: Path, emulator: EmulatorServer) -> None:
    env = _env(tmp_path, emulator)
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,rate\n2000-01-01,eur,1.1\n2000-01-01,gbp,1.3\n"
                     "2000-01-01,jpy,0.0067\n", encoding="utf-8")
    assert _nrr(["fx", "import", str(rates)], env).returncode == 0
    process = subprocess.Popen([sys.executable, "-m", "nrr.cli", "sync", "--no-progress"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not _held(env):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)

    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)

    assert process.returncode != 0  # interrupted, like Ctrl-C
    assert not _held(env)
    again = _nrr(["sync", "--no-progress", "--format", "json"], env)
    # The next sync takes the lock at once and stores the mirror (what follows it, the
    # recompute, is not this test's subject).
    assert "another sync of this account is running" not in again.stderr
    assert again.returncode == 0 or "the mirror is stored" in again.stderr, again.stderr


def test_a_refused_sync_names_the_holder_and_its_lease(tmp_path: Path,
                                                       emulator: EmulatorServer) -> None:
    env = _env(tmp_path, emulator)
    settings = load_settings(env)
    engine = ready_engine(settings.database_url)
    try:
        with account_lock(SYNC_LOCK, settings, engine, ttl=90) as acquired:
            assert acquired
            result = _nrr(["sync", "--no-progress"], env)
    finally:
        engine.dispose()

    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "another sync of this account is running" in message
    assert f"held by {socket.gethostname()} pid {os.getpid()}, started 20" in message
    assert "its lease ends at 20" in message and "stale" not in message


def test_a_killed_holders_lease_is_called_stale_with_its_expiry(
        tmp_path: Path, emulator: EmulatorServer) -> None:
    env = _env(tmp_path, emulator)
    settings = load_settings(env)
    engine = ready_engine(settings.database_url)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs, as after kill -9
    started = datetime.now(UTC) - timedelta(seconds=30)
    expires = datetime.now(UTC) + timedelta(seconds=90)
    with engine.begin() as conn:
        conn.execute(insert(JobLock).values(
            name=lock_key(SYNC_LOCK, settings), active=True, expires_at=expires,
            owner=f"{socket.gethostname()}:{dead.pid}:{int(started.timestamp())}:abc"))
    engine.dispose()

    result = _nrr(["sync", "--no-progress"], env)

    message = " ".join(result.stderr.split())
    assert result.returncode == 1
    assert "a stale lease" in message and f"pid {dead.pid}" in message
    assert "is no longer running" in message
    assert f"expires at {expires.isoformat(timespec='seconds')}" in message


def test_the_redis_lock_names_its_holder_too(tmp_path: Path, emulator: EmulatorServer,
                                             redis_url: str) -> None:
    env = _env(tmp_path, emulator, REDIS_URL=redis_url)
    settings = load_settings(env)
    engine = ready_engine(settings.database_url)
    try:
        with account_lock(SYNC_LOCK, settings, engine, ttl=90) as acquired:
            assert acquired
            result = _nrr(["sync", "--no-progress"], env)
    finally:
        engine.dispose()

    message = " ".join(result.stderr.split())
    assert result.returncode == 1
    assert f"held by {socket.gethostname()} pid {os.getpid()}, started 20" in message
    assert "its lease ends at 20" in message

"""``nrr sync`` and ``nrr serve`` as a user runs them (subprocesses, emulator on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from integrations.emulator import EmulatorServer, generate_account
from tests.support.servers import free_port, wait_for_port


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(generate_account(seed=2, customers=15, months=4)) as server:
        yield server


def nrr(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nrr.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "NRR_", "REDIS_", "DATABASE_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "NRR_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def test_sync_json_prints_one_document_and_exits_0(emulator: EmulatorServer,
                                                   tmp_path: Path) -> None:
    env = _env(tmp_path, STRIPE_API_KEY="sk_test_cli12345", STRIPE_API_BASE=emulator.url)
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,rate\n2000-01-01,eur,1.1\n2000-01-01,gbp,1.3\n"
                     "2000-01-01,jpy,0.0067\n", encoding="utf-8")
    imported = nrr(["fx", "import", str(rates)], env)
    assert imported.returncode == 0, imported.stderr
    first = nrr(["sync", "--format", "json", "--no-progress"], env)
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    assert document["mode"] == "backfill" and document["objects_stored"] > 0
    assert document["resources"]["invoices"]["stored"] == len(emulator.account.invoices)
    assert "sk_test_cli12345" not in first.stdout + first.stderr
    assert document["recompute"] is not None

    second = nrr(["sync", "--format", "json"], env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["mode"] == "events"


def test_sync_without_a_key_is_a_usage_error(tmp_path: Path) -> None:
    result = nrr(["sync"], _env(tmp_path))
    assert result.returncode == 2
    assert "STRIPE_API_KEY" in result.stderr


def test_sync_with_a_rejected_key_fails_with_the_permission_help(emulator: EmulatorServer,
                                                                tmp_path: Path) -> None:
    env = _env(tmp_path, STRIPE_API_KEY="rk_live_wrongmode99", STRIPE_API_BASE=emulator.url)
    result = nrr(["sync", "--format", "json"], env)
    assert result.returncode == 1
    assert "restricted key" in result.stderr and "Invoices" in result.stderr
    assert "rk_live_wrongmode99" not in result.stderr
    assert result.stdout == ""


def test_serve_answers_health_and_rejects_unsigned_posts(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, STRIPE_WEBHOOK_SECRET="whsec_cli")
    process = subprocess.Popen([sys.executable, "-m", "nrr.cli", "serve", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert json.loads(answer.read()) == {"status": "ok"}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/stripe",
                                         data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 400
    finally:
        process.terminate()
        process.wait(timeout=10)
    time.sleep(0)


def test_help_texts_exist() -> None:
    for command in (["sync", "--help"], ["serve", "--help"]):
        result = nrr(command, dict(os.environ))
        assert result.returncode == 0
        assert "--format" in result.stdout or "--port" in result.stdout


def _start_waiting_for_the_lock(args: list[str], env: dict[str, str],
                                err_path: Path) -> subprocess.Popen[str]:
    """Start `nrr ARGS` while the test holds the recompute lock; return once it says it
    waits for the lock, checking that it is still waiting a moment later."""
    with err_path.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "nrr.cli", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=err, text=True)
    deadline = time.monotonic() + 90
    while ("waiting for it to finish" not in err_path.read_text()
           and process.poll() is None and time.monotonic() < deadline):
        time.sleep(0.1)
    time.sleep(1.0)  # still waiting a moment later
    assert process.poll() is None, err_path.read_text()
    assert "another recompute of this account is running" in err_path.read_text()
    return process


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_sync_waits_while_another_recompute_holds_the_account_lock(
        emulator: EmulatorServer, tmp_path: Path, backend: str,
        request: pytest.FixtureRequest) -> None:
    """The CLI's recompute takes the worker's recompute lock: Redis with REDIS_URL, else
    the database lock. While a holder (here: this test) keeps it, `nrr sync` waits and
    says so; once it is released, the recompute runs."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from models.derived import RecomputeRun
    from nrr.db import ready_engine, session_scope
    from nrr.locks import RECOMPUTE_LOCK, account_lock
    from nrr.settings import load_settings

    extra = {"REDIS_URL": request.getfixturevalue("redis_url")} if backend == "redis" else {}
    env = _env(tmp_path, STRIPE_API_KEY="sk_test_cli12345", STRIPE_API_BASE=emulator.url,
               **extra)
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,rate\n2000-01-01,eur,1.1\n2000-01-01,gbp,1.3\n"
                     "2000-01-01,jpy,0.0067\n", encoding="utf-8")
    assert nrr(["fx", "import", str(rates)], env).returncode == 0
    settings = load_settings(env)
    engine = ready_engine(settings.database_url)
    err_path = tmp_path / "sync.err"
    with account_lock(RECOMPUTE_LOCK, settings, engine, ttl=30) as held:
        assert held
        process = _start_waiting_for_the_lock(
            ["sync", "--format", "json", "--no-progress"], env, err_path)
        with session_scope(engine) as session:
            assert session.scalar(select(func.count()).select_from(RecomputeRun)) == 0
        released = datetime.now(UTC)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, err_path.read_text()
    assert json.loads(out)["recompute"] is not None
    with session_scope(engine) as session:
        run = session.scalars(select(RecomputeRun)).one()
        started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
        assert started >= released


def test_sync_gives_up_on_the_recompute_lock_with_a_clear_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sqlalchemy import func, select

    from models.derived import RecomputeRun
    from nrr.commands import common
    from nrr.commands import sync as sync_command
    from nrr.commands.common import CommandFailed
    from nrr.db import ready_engine, session_scope
    from nrr.locks import RECOMPUTE_LOCK, account_lock
    from nrr.settings import load_settings

    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'lock.db'}"})
    settings = settings.model_copy(update={
        "worker": settings.worker.model_copy(update={"soft_time_limit_seconds": 1})})
    monkeypatch.setattr(common, "RECOMPUTE_WAIT_MARGIN_SECONDS", 0)
    engine = ready_engine(settings.database_url)
    synced = SimpleNamespace(mode="events", objects_stored=0, events_applied=3,
                             customer_ids=set())

    def runs() -> int:
        with session_scope(engine) as session:
            return int(session.scalar(select(func.count()).select_from(RecomputeRun)) or 0)

    with account_lock(RECOMPUTE_LOCK, settings, engine, ttl=30):
        began = time.monotonic()
        with pytest.raises(CommandFailed, match="held the recompute lock for 1 s"):
            sync_command._refresh(engine, settings, synced)
        assert 0.9 <= time.monotonic() - began < 10
    assert runs() == 0
    sync_command._refresh(engine, settings, synced)
    assert runs() == 1


def test_recompute_command_waits_for_a_running_recompute(tmp_path: Path) -> None:
    """`nrr recompute` takes the same account-wide lock as the worker and `nrr sync`."""
    from sqlalchemy import func, select

    from models.derived import RecomputeRun
    from nrr.db import ready_engine, session_scope
    from nrr.locks import RECOMPUTE_LOCK, account_lock
    from nrr.settings import load_settings

    env = _env(tmp_path)
    settings = load_settings(env)
    engine = ready_engine(settings.database_url)
    err_path = tmp_path / "recompute.err"
    with account_lock(RECOMPUTE_LOCK, settings, engine, ttl=30) as held:
        assert held
        process = _start_waiting_for_the_lock(["recompute", "--format", "json"], env, err_path)
        with session_scope(engine) as session:
            assert session.scalar(select(func.count()).select_from(RecomputeRun)) == 0
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, err_path.read_text()
    assert json.loads(out)["customers"] == 0
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(RecomputeRun)) == 1


def test_the_sync_command_imports_no_celery() -> None:
    probe = ("import sys, nrr.cli, nrr.commands.sync, nrr.locks, integrations.stripe_sync;"
             "print(sorted(m for m in sys.modules if m == 'celery' or m.startswith('worker')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

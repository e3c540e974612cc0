"""Worker fixtures: a real Celery worker process on a real redis-server, the Stripe emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from nrr.db import make_engine
from nrr.settings import Settings, load_settings
from tests.support.servers import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(ROOT / ".venv" / "bin" / "celery")
API_KEY = "sk_test_workerkey123"


class WorkerProcess:
    """A `celery -A worker.celery_app worker` process with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, beat: bool = False,
                 concurrency: int = 2, name: str = "w1") -> None:
        self.log_path = log_path
        argv = [CELERY, "-A", "worker.celery_app", "worker", "--concurrency", str(concurrency),
                "--loglevel", "INFO", "--queues", "nrr", "--without-gossip", "--without-mingle",
                "--hostname", f"{name}@%h"]
        if beat:
            argv.append("--beat")
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        # cwd: the worker keeps its state (beat schedule) there for a non-SQLite database.
        self.process = subprocess.Popen(argv, cwd=str(log_path.parent), env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for("ready", timeout=60)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n"
                                     + self.text()[-4000:])
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not seen {count}x in {timeout}s:\n"
                             + self.text()[-4000:])

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and its pool children)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process_group(self.process)
        self._log.close()


@pytest.fixture(autouse=True)
def _logs_to_the_current_stderr() -> None:
    """A CLI test (CliRunner) configures structlog on its own, later closed, stream:
    point the logs back at the process's stderr before each test."""
    from nrr.logs import configure_logging

    configure_logging("INFO")


@pytest.fixture
def account() -> EmulatedAccount:
    return generate_account(seed=5, customers=25, months=6, now=int(time.time()))


@pytest.fixture
def emulator(account: EmulatedAccount) -> Iterator[EmulatorServer]:
    server = EmulatorServer(account).start()
    yield server
    server.stop()


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "nrr.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def worker_env(db_url: str, redis_url: str, emulator: EmulatorServer,
               tmp_path: Path) -> dict[str, str]:
    """The environment of a worker on Redis, the test database and the emulator."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    env.update({
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "NRR_STRIPE_RATE_LIMIT": "1000",
        "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
        "NRR_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
        "PATH": os.environ.get("PATH", ""),
        "NRR_CONFIG": write_config(tmp_path, "[worker]\nlock_ttl_seconds = 6\n"
                                             "visibility_timeout_seconds = 8\n"),
    })
    seed_rates(db_url)
    return env


def seed_rates(database_url: str, months: int = 30) -> None:
    """Monthly exchange rates for the emulator's currencies (eur, gbp, jpy -> usd)."""
    from datetime import date

    from nrr.db import session_scope
    from nrr.demo import demo_rates
    from nrr.domain.months import add_months, current_month
    from nrr.services.fx import RateRow, store_rates
    from nrr.settings import load_settings as _load

    tz = _load({}).tz
    last = add_months(current_month(tz), 1)
    rows = demo_rates(add_months(last, -months), last, "usd", ("eur", "gbp", "jpy"))
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        store_rates(session, [RateRow(date.fromisoformat(d), c, r) for d, c, r in rows],
                    reporting_currency="usd")
    engine.dispose()


def settings_of(env: dict[str, str]) -> Settings:
    return load_settings(env)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], **kwargs: Any) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(env, log, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def client_app(env: dict[str, str]) -> Celery:
    """A Celery app (in the test process) that sends to the worker's broker."""
    from worker.celery_app import make_celery

    return make_celery(settings_of(env))


@pytest.fixture
def engine_of() -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engine = make_engine(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached in {timeout}s")


__all__ = ["WorkerProcess", "client_app", "settings_of", "wait_until", "write_config",
           "API_KEY", "sys"]

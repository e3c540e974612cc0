"""Account locks: one holder at a time across threads and processes; expired leases move on."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from models.derived import JobLock
from nrr.db import make_engine
from nrr.locks import lock_holder
from nrr.settings import Settings, load_settings
from tests.conftest import _fresh_postgres_url
from tests.support.servers import PostgresServer
from worker.locks import account_lock, lock_key

NRR = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "nrr")


def _settings(db_url: str, redis_url: str | None = None) -> Settings:
    env = {"DATABASE_URL": db_url}
    if redis_url:
        env["REDIS_URL"] = redis_url
    return load_settings(env)


@pytest.fixture(params=["database", "redis"])
def lock_settings(request: pytest.FixtureRequest, db_url: str) -> Settings:
    if request.param == "redis":
        return _settings(db_url, request.getfixturevalue("redis_url"))
    return _settings(db_url)


def test_a_second_holder_is_refused_while_the_first_holds(lock_settings: Settings,
                                                          db_engine: Engine) -> None:
    with account_lock("sync", lock_settings, db_engine, ttl=5) as first:
        assert first
        with account_lock("sync", lock_settings, db_engine, ttl=5) as second:
            assert not second
        # Another name is another lock.
        with account_lock("recompute", lock_settings, db_engine, ttl=5) as other:
            assert other
    with account_lock("sync", lock_settings, db_engine, ttl=5) as again:
        assert again


def test_many_threads_racing_get_one_holder(lock_settings: Settings, db_engine: Engine) -> None:
    holders: list[int] = []
    concurrent = {"now": 0, "max": 0}
    guard = threading.Lock()
    start = threading.Barrier(6)

    def contend(index: int) -> None:
        start.wait()
        with account_lock("sync", lock_settings, db_engine, ttl=5) as acquired:
            if not acquired:
                return
            with guard:
                holders.append(index)
                concurrent["now"] += 1
                concurrent["max"] = max(concurrent["max"], concurrent["now"])
            time.sleep(0.5)
            with guard:
                concurrent["now"] -= 1

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(holders) == 1
    assert concurrent["max"] == 1


def test_the_lease_is_renewed_while_the_holder_works(lock_settings: Settings,
                                                     db_engine: Engine) -> None:
    with account_lock("recompute", lock_settings, db_engine, ttl=0.6) as held:
        assert held
        time.sleep(1.5)  # well past the first lease: the renewal kept it
        with account_lock("recompute", lock_settings, db_engine, ttl=0.6) as intruder:
            assert not intruder


def test_a_dead_holders_lock_is_taken_after_its_lease(lock_settings: Settings,
                                                      db_engine: Engine) -> None:
    # A holder that died without releasing: the lease is left to run out, nothing renews it.
    key = lock_key("sync", lock_settings)
    if lock_settings.redis_url:
        import redis

        client = redis.Redis.from_url(lock_settings.redis_url)
        client.set(key, "dead-token", px=700)
        client.close()
    else:
        from datetime import UTC, datetime, timedelta

        with db_engine.begin() as conn:
            conn.execute(JobLock.__table__.insert().values(
                name=key, owner="dead", active=True,
                expires_at=datetime.now(UTC) + timedelta(seconds=0.7)))
    with account_lock("sync", lock_settings, db_engine, ttl=5) as early:
        assert not early
    with account_lock("sync", lock_settings, db_engine, ttl=5, blocking=True,
                      timeout=10) as later:
        assert later


def test_blocking_waits_for_the_holder(lock_settings: Settings, db_engine: Engine) -> None:
    # Set by the holder as the last thing before it lets go (set after the release, the
    # waiter could take the lock and look before the holder's thread ran again).
    released = threading.Event()

    def hold() -> None:
        with account_lock("recompute", lock_settings, db_engine, ttl=5) as held:
            assert held
            time.sleep(0.6)
            released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.2)
    with account_lock("recompute", lock_settings, db_engine, ttl=5, blocking=True,
                      timeout=10) as acquired:
        assert acquired
        assert released.is_set()
    thread.join()


def test_the_database_lock_row_is_removed_on_release(db_url: str, db_engine: Engine) -> None:
    settings = _settings(db_url)
    with account_lock("sync", settings, db_engine, ttl=5) as held:
        assert held
        with db_engine.connect() as conn:
            assert conn.execute(select(JobLock.name)).scalars().all() == [
                lock_key("sync", settings)]
    with db_engine.connect() as conn:
        assert conn.execute(select(JobLock.name)).scalars().all() == []


def test_locks_of_two_databases_do_not_collide(redis_url: str) -> None:
    one = _settings("sqlite:////tmp/a.db", redis_url)
    two = _settings("sqlite:////tmp/b.db", redis_url)
    assert lock_key("sync", one) != lock_key("sync", two)


def test_nrr_sync_refuses_while_another_sync_holds_the_lock(
        db_url: str, db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from nrr.cli import app

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_lockedout")
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:9")  # never reached
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = _settings(db_url)
    with account_lock("sync", settings, db_engine, ttl=30) as held:
        assert held
        result = CliRunner().invoke(app, ["sync", "--format", "json"])
    assert result.exit_code == 1
    assert "another sync of this account is running" in result.output


# --------------------------------------------------------------------------- one lock per database


def test_the_database_identity_ignores_spelling_and_password(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from nrr.db import database_identity

    one = {database_identity(url) for url in (
        "postgres://nrr:s3cret-one@db.example:5432/nrr",
        "postgresql://nrr:other-pw@DB.example/nrr",
        "postgresql+psycopg://nrr@db.example:5432/nrr?sslmode=require",
    )}
    assert one == {"postgresql://nrr@db.example:5432/nrr"}
    assert database_identity("postgresql://nrr@db.example:5433/nrr") not in one
    assert database_identity("postgresql://nrr@db.example/other") not in one
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    paths = {database_identity(url) for url in (
        f"sqlite:///{tmp_path / 'nrr.db'}", "sqlite:///nrr.db", "sqlite:///./sub/../nrr.db")}
    assert paths == {f"sqlite:{(tmp_path / 'nrr.db').resolve()}"}


def _sync_refused(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nrr sync`` in its own process (it must give up at the lock, before any request)."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    full.update({"STRIPE_API_KEY": "sk_test_lockedout", "STRIPE_API_BASE": "http://127.0.0.1:9",
                 **env})
    return subprocess.run([NRR, "sync", "--format", "json"], env=full, capture_output=True,
                          text=True, timeout=120)


def _holder_text() -> str:
    return f"held by {socket.gethostname()} pid {os.getpid()}, started "


def test_three_spellings_of_one_postgresql_url_take_one_lock(
        postgres_server: PostgresServer) -> None:
    url = _fresh_postgres_url(postgres_server)  # postgresql+psycopg://postgres@host:port/db
    rest = url.split("://", 1)[1]
    user, _, location = rest.partition("@")
    spellings = [f"postgres://{user}:not-the-key@{location}", f"postgresql://{rest}", url]
    settings = [_settings(spelled) for spelled in spellings]
    keys = {lock_key("sync", s) for s in settings}
    assert len(keys) == 1 and "not-the-key" not in next(iter(keys))
    engines = [make_engine(spelled) for spelled in spellings]
    try:
        with account_lock("sync", settings[0], engines[0], ttl=30) as first:
            assert first
            for other_settings, other_engine in zip(settings[1:], engines[1:], strict=True):
                with account_lock("sync", other_settings, other_engine, ttl=30) as other:
                    assert not other
            # The second sync, spelled differently, is refused and names the holder.
            refused = _sync_refused({"DATABASE_URL": spellings[1]})
        assert refused.returncode == 1, refused.stderr
        assert "another sync of this account is running" in refused.stderr
        assert _holder_text() in refused.stderr
        assert "not-the-key" not in refused.stderr
        with account_lock("sync", settings[2], engines[2], ttl=30) as later:
            assert later
    finally:
        for engine in engines:
            engine.dispose()


def test_relative_and_absolute_paths_of_one_sqlite_file_take_one_lock(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    monkeypatch.chdir(path.parent)
    absolute, relative = _settings(sqlite_url), _settings(f"sqlite:///{path.name}")
    assert lock_key("recompute", absolute) == lock_key("recompute", relative)
    absolute_engine, relative_engine = make_engine(sqlite_url), make_engine(relative.database_url)
    try:
        with account_lock("recompute", absolute, absolute_engine, ttl=30) as first:
            assert first
            with account_lock("recompute", relative, relative_engine, ttl=30) as second:
                assert not second
    finally:
        absolute_engine.dispose()
        relative_engine.dispose()


def test_the_holder_is_recorded_and_named(lock_settings: Settings, db_engine: Engine) -> None:
    assert lock_holder("sync", lock_settings, db_engine) is None
    env = {"DATABASE_URL": lock_settings.database_url,
           **({"REDIS_URL": lock_settings.redis_url} if lock_settings.redis_url else {})}
    with account_lock("sync", lock_settings, db_engine, ttl=30) as held:
        assert held
        holder = lock_holder("sync", lock_settings, db_engine)
        assert holder is not None
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        assert holder.started_at is not None
        assert abs((datetime.now(UTC) - holder.started_at).total_seconds()) < 60
        refused = _sync_refused(env)
    assert refused.returncode == 1, refused.stderr
    assert _holder_text() in refused.stderr
    assert lock_holder("sync", lock_settings, db_engine) is None

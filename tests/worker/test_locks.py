"""Account locks: one holder at a time across threads and processes; expired leases move on."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, select

from models.derived import JobLock
from nrr.settings import Settings, load_settings
from worker.locks import account_lock, lock_key


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

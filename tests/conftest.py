"""Shared fixtures: databases (SQLite and a real PostgreSQL) built from the migrations, Redis.

``db_url`` is parametrised over both backends; each test gets a fresh database copied
from a migrated template, so tests never share state.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from nrr.db import make_engine, upgrade
from tests.support.servers import PostgresServer, RedisServer, start_postgres, start_redis

_counter = itertools.count()

# The declared markers, applied from what a test uses, so `-m "not postgres"` and friends
# select what they say: a fixture in the test's closure, or a parameter of it naming the
# backend (``db_url``'s ``postgresql``, a lock test's ``redis``).
_MARKER_FIXTURES = {
    "postgres": {"postgres_server"},
    "redis": {"redis_server", "redis_url"},
    "slow": {"start_worker"},  # real Celery worker processes
}
_MARKER_PARAMS = {"postgres": {"postgresql", "postgres"}, "redis": {"redis"}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = {value for value in (callspec.params.values() if callspec else ())
                  if isinstance(value, str)}
        for marker, names in _MARKER_FIXTURES.items():
            if fixtures & names or params & _MARKER_PARAMS.get(marker, set()):
                item.add_marker(getattr(pytest.mark, marker))
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if os.environ.get("NRR_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("NRR_TEST_SKIP_POSTGRES=1")
    server = start_postgres()
    admin = make_engine(server.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE nrr_template"))
    template_engine = make_engine(server.url("nrr_template"))
    upgrade(template_engine)
    template_engine.dispose()
    admin.dispose()
    yield server
    server.stop()


def _fresh_postgres_url(server: PostgresServer) -> str:
    name = f"nrr_test_{os.getpid()}_{next(_counter)}"
    admin = make_engine(server.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE nrr_template"))
    admin.dispose()
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh, migrated database URL on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "nrr.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return _fresh_postgres_url(server)


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh, migrated SQLite database URL (for tests about behaviour, not the backend)."""
    path = tmp_path / "nrr.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url

"""Engines, sessions and migrations. One place opens, commits and closes a session."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` URLs and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def database_identity(url: str) -> str:
    """One name per database, however its URL is spelled: what locks are keyed by.

    The PostgreSQL driver spellings (``postgres://``, ``postgresql://``,
    ``postgresql+psycopg://``) and the default port name one database; a SQLite file is
    named by its absolute, resolved path (relative paths are relative to the working
    directory, as SQLite opens them). The password and connection options never take part
    (the identity is hashed into lock names, and a changed password is the same database).
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(normalise_url(url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return f"sqlite:{database or ':memory:'}"
        return f"sqlite:{Path(database).expanduser().resolve()}"
    host = (parsed.host or str(parsed.query.get("host") or "")).lower()
    port = parsed.port or (5432 if backend == "postgresql" else None)
    user = parsed.username or ""
    return f"{backend}://{user}@{host}:{port or ''}/{parsed.database or ''}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(source: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on error; services never call ``commit()``.

    ``source`` is an engine or a session factory (a test's or a worker's).
    """
    session = (Session(bind=source, expire_on_commit=False) if isinstance(source, Engine)
               else source())
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config  # imported lazily: most commands never migrate

    ini = resources.files("models").joinpath("alembic.ini")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(resources.files("models").joinpath("migrations")))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.M)
_QUOTED = re.compile(r"^(['\"])([^'\"]+)\1$")


@lru_cache(maxsize=1)
def quick_head_revision() -> str | None:
    """The head revision read from the migration files' ``revision`` / ``down_revision``
    lines, without importing alembic (which, with its script directory, costs a read-only
    command such as ``nrr outlook`` about half a second). None when a file does not read
    plainly (a merge revision, a computed value): callers then ask alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    # find_spec, not resources.files: the latter imports ``models`` (every table declared).
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "migrations" / "versions"
    for entry in folder.iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("__"):
            continue
        found = dict(_REVISION_LINE.findall(entry.read_text(encoding="utf-8")))
        revision = _QUOTED.match(found.get("revision", ""))
        parent = found.get("down_revision")
        parent_named = _QUOTED.match(parent or "")
        if revision is None or not (parent == "None" or parent_named):
            return None
        revisions.add(revision.group(2))
        if parent_named is not None:
            parents.add(parent_named.group(2))
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


def _at_quick_head(engine: Engine) -> bool:
    """The database's ``alembic_version`` is the head read by :func:`quick_head_revision`
    (False whenever that cannot be told cheaply: the full check then runs)."""
    head = quick_head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    except SQLAlchemyError:
        return False
    return versions == [head]


def upgrade(engine: Engine) -> None:
    """Apply the migrations up to head (idempotent; called by the CLI on first use)."""
    if _at_quick_head(engine) or current_revision(engine) == head_revision():
        return
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def ready_engine(url: str) -> Engine:
    """An engine whose schema is at head."""
    engine = engine_for(url)
    upgrade(engine)
    return engine

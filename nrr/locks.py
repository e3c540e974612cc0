"""Account-wide locks: two syncs (or two recomputes) of one account never run at once.

With ``REDIS_URL`` the lock is a redis-py :class:`redis.lock.Lock` (a random token, a TTL,
renewed by a background thread while the holder works); without it, a row of
``job_locks`` taken with an insert, or stolen when its lease expired, in one short
transaction each (SQLite and PostgreSQL). Either way a holder that dies (SIGKILL, lost
machine) frees the lock when its lease runs out, and a holder whose lease was stolen
never releases the new holder's lock (the owner token is checked).

Lock names are scoped by the database the worker writes to (its normalised identity,
:func:`nrr.db.database_identity`: every spelling of one PostgreSQL URL, every path to one
SQLite file, gives one lock), so two deployments sharing one Redis do not block each
other and one database never has two holders.

The holder is recorded with the lock (:class:`LockHolder`: host, process id, when it took
the lock) so a refused caller can say who holds it (:func:`lock_holder`).

The worker's tasks and the CLI (``nrr sync``) take the same locks, so a recompute started
by either never runs beside another. This module imports neither Celery nor the worker;
:mod:`worker.locks` re-exports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from models.derived import JobLock
from nrr.db import database_identity
from nrr.logs import get_logger
from nrr.settings import Settings

log = get_logger(__name__)

SYNC_LOCK = "sync"
RECOMPUTE_LOCK = "recompute"

__all__ = ["RECOMPUTE_LOCK", "SYNC_LOCK", "LockHolder", "account_lock", "claim_flag", "clear_flag",
           "lock_holder", "lock_key"]


def lock_key(name: str, settings: Settings) -> str:
    """The stored name of lock ``name`` for this account (its database's identity)."""
    identity = database_identity(settings.database_url)
    account = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"nrr:lock:{account}:{name}"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as recorded when it was taken (a JSON object, so fields can be
    added; a record this version cannot read is kept as ``raw``)."""

    host: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    token: str = ""
    raw: str | None = None

    def record(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "token": self.token,
                           "started_at": None if self.started_at is None
                           else self.started_at.isoformat(timespec="seconds")},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, record: str | bytes | None) -> LockHolder | None:
        if record is None:
            return None
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
        try:
            fields = json.loads(text)
            started = fields.get("started_at")
            return cls(host=fields.get("host"), pid=fields.get("pid"),
                       started_at=datetime.fromisoformat(started) if started else None,
                       token=str(fields.get("token") or ""))
        except (ValueError, TypeError, AttributeError):
            return cls(raw=text)

    def describe(self) -> str:
        """``held by process 123 on host web-1 since 2026-12-02 15:40:01 UTC``."""
        if self.host is None and self.pid is None:
            return "held by an unrecorded holder"
        since = ("" if self.started_at is None
                 else f" since {self.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
        return f"held by process {self.pid} on host {self.host}{since}"


def _owner() -> str:
    return LockHolder(host=socket.gethostname(), pid=os.getpid(), started_at=_utcnow(),
                      token=uuid.uuid4().hex).record()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Renewal:
    """Extends a held lock every ``ttl / 3`` seconds until stopped."""

    def __init__(self, renew: Any, ttl: float, key: str) -> None:
        self._renew = renew
        self._interval = max(ttl / 3.0, 0.05)
        self._key = key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lock-renew:{key}", daemon=True)
        self.lost = False

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._renew():
                    self.lost = True
                    log.warning("lock.lost", lock=self._key,
                                reason="the lease expired and another holder took it")
                    return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried next tick
                log.warning("lock.renew_failed", lock=self._key,
                            error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --------------------------------------------------------------------------- Redis


@contextmanager
def _redis_lock(key: str, url: str, ttl: float, blocking: bool,
                timeout: float | None) -> Iterator[bool]:
    import redis
    from redis.exceptions import LockError

    client = redis.Redis.from_url(url)
    lock = client.lock(key, timeout=ttl, blocking=blocking, blocking_timeout=timeout,
                       thread_local=False)
    try:
        acquired = bool(lock.acquire(token=_owner()))
        if not acquired:
            yield False
            return
        renewal = _Renewal(lambda: lock.extend(ttl, replace_ttl=True), ttl, key)
        renewal.start()
        try:
            yield True
        finally:
            renewal.stop()
            try:
                lock.release()
            except LockError:
                log.warning("lock.release_lost", lock=key,
                            reason="the lease had expired; another holder owns it now")
    finally:
        client.close()


# --------------------------------------------------------------------------- database


def _db_try_acquire(engine: Engine, key: str, owner: str, ttl: float) -> bool:
    now = _utcnow()
    expires = now + timedelta(seconds=ttl)
    with engine.begin() as conn:
        taken = conn.execute(
            update(JobLock)
            .where(JobLock.name == key, (JobLock.expires_at < now) | (JobLock.active.is_(False)))
            .values(owner=owner, expires_at=expires, active=True)
        ).rowcount
        if taken:
            return True
        exists = conn.execute(select(JobLock.name).where(JobLock.name == key)).first()
        if exists is not None:
            return False
    try:
        with engine.begin() as conn:
            conn.execute(insert(JobLock).values(name=key, owner=owner, expires_at=expires,
                                                active=True))
        return True
    except IntegrityError:
        return False  # another worker inserted it first


def _db_renew(engine: Engine, key: str, owner: str, ttl: float) -> bool:
    with engine.begin() as conn:
        return bool(conn.execute(
            update(JobLock).where(JobLock.name == key, JobLock.owner == owner,
                                  JobLock.active.is_(True))
            .values(expires_at=_utcnow() + timedelta(seconds=ttl))
        ).rowcount)


def _db_release(engine: Engine, key: str, owner: str) -> bool:
    with engine.begin() as conn:
        return bool(conn.execute(
            delete(JobLock).where(JobLock.name == key, JobLock.owner == owner)
        ).rowcount)


@contextmanager
def _database_lock(key: str, engine: Engine, ttl: float, blocking: bool,
                   timeout: float | None) -> Iterator[bool]:
    owner = _owner()
    deadline = None if timeout is None else time.monotonic() + timeout
    acquired = _db_try_acquire(engine, key, owner, ttl)
    while not acquired and blocking and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.1)
        acquired = _db_try_acquire(engine, key, owner, ttl)
    if not acquired:
        yield False
        return
    renewal = _Renewal(lambda: _db_renew(engine, key, owner, ttl), ttl, key)
    renewal.start()
    try:
        yield True
    finally:
        renewal.stop()
        if not _db_release(engine, key, owner):
            log.warning("lock.release_lost", lock=key,
                        reason="the lease had expired; another holder owns it now")


# --------------------------------------------------------------------------- public


@contextmanager
def account_lock(name: str, settings: Settings, engine: Engine, *, ttl: float | None = None,
                 blocking: bool = False, timeout: float | None = None) -> Iterator[bool]:
    """Hold the account's lock ``name`` (``sync``, ``recompute``) for the ``with`` block.

    Yields whether it was acquired; with ``blocking`` it waits up to ``timeout`` seconds
    (None: as long as it takes). ``ttl`` (default ``settings.worker.lock_ttl_seconds``) is
    the lease, renewed every third of it while the block runs.
    """
    lease = float(ttl if ttl is not None else settings.worker.lock_ttl_seconds)
    key = lock_key(name, settings)
    if settings.redis_url:
        manager = _redis_lock(key, settings.redis_url, lease, blocking, timeout)
    else:
        manager = _database_lock(key, engine, lease, blocking, timeout)
    with manager as acquired:
        log.debug("lock.acquired" if acquired else "lock.busy", lock=name)
        yield acquired


def lock_holder(name: str, settings: Settings, engine: Engine) -> LockHolder | None:
    """Who holds the account's lock ``name`` now (None when nobody does)."""
    key = lock_key(name, settings)
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        try:
            return LockHolder.parse(client.get(key))  # type: ignore[arg-type]
        finally:
            client.close()
    with engine.connect() as conn:
        row = conn.execute(select(JobLock.owner).where(
            JobLock.name == key, JobLock.active.is_(True),
            JobLock.expires_at >= _utcnow())).first()
    return None if row is None else LockHolder.parse(row.owner)


# --------------------------------------------------------------------------- flags


def claim_flag(name: str, settings: Settings, engine: Engine, *, ttl: float) -> bool:
    """Raise the account's flag ``name`` unless it is up; True when this call raised it.

    A flag says "this is already requested" (a snapshot is queued): the caller that raises
    it sends the request, the others know it will run after them. It expires after ``ttl``
    seconds, so a lost request is sent again later.
    """
    key = lock_key(name, settings)
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        try:
            return bool(client.set(key, _owner(), nx=True, px=max(1, int(ttl * 1000))))
        finally:
            client.close()
    return _db_try_acquire(engine, key, _owner(), ttl)


def clear_flag(name: str, settings: Settings, engine: Engine) -> None:
    """Lower the account's flag ``name`` (the request it stood for is now running)."""
    key = lock_key(name, settings)
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        try:
            client.delete(key)
        finally:
            client.close()
        return
    with engine.begin() as conn:
        conn.execute(delete(JobLock).where(JobLock.name == key))

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


def _owner() -> str:
    """``host:pid:started:random``: the lock's value says who holds it and since when."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, from its stored owner and lease."""

    host: str
    pid: int | None
    started_at: datetime | None
    expires_at: datetime | None
    # The holder runs on this machine and its process is gone (killed): nobody renews the
    # lease, which frees the lock when it ends.
    stale: bool

    def describe(self, now: datetime | None = None) -> str:
        moment = now or _utcnow()
        who = f"{self.host} pid {self.pid}" if self.pid is not None else self.host
        since = (f", started {self.started_at.isoformat(timespec='seconds')}"
                 if self.started_at else "")
        if self.expires_at is not None:
            left = max(0, int((self.expires_at - moment).total_seconds()))
            ends = f"{self.expires_at.isoformat(timespec='seconds')} (in {left} s)"
        else:
            ends = "an unknown time"
        if self.stale:
            return (f"a stale lease: its holder ({who}{since}) is no longer running; the "
                    f"lease expires at {ends}, then the lock is free")
        return f"held by {who}{since}; its lease ends at {ends} unless the holder renews it"


def _parse_owner(owner: str, expires_at: datetime | None) -> LockHolder:
    parts = owner.split(":")
    host = parts[0] if parts else owner
    pid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    started = (datetime.fromtimestamp(int(parts[2]), UTC)
               if len(parts) > 3 and parts[2].isdigit() else None)
    return LockHolder(host, pid, started, expires_at,
                      stale=host == socket.gethostname() and pid is not None
                      and not _process_alive(pid))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


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


def lock_holder(name: str, settings: Settings, engine: Engine) -> LockHolder | None:
    """Who holds the account's lock ``name`` now (None: nobody)."""
    key = lock_key(name, settings)
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        try:
            value: Any = client.get(key)
            ttl_ms: Any = client.pttl(key)
        finally:
            client.close()
        if value is None:
            return None
        owner = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        expires = _utcnow() + timedelta(milliseconds=ttl_ms) if ttl_ms and ttl_ms > 0 else None
        return _parse_owner(owner, expires)
    with engine.connect() as conn:
        row = conn.execute(select(JobLock.owner, JobLock.expires_at)
                           .where(JobLock.name == key, JobLock.active.is_(True))).first()
    if row is None:
        return None
    expires_at = row.expires_at
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return _parse_owner(str(row.owner), expires_at)


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

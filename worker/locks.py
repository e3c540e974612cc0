"""Account-wide locks for the worker's tasks: see :mod:`nrr.locks`, where they live so the
CLI takes the same locks without importing Celery."""

from __future__ import annotations

from nrr.locks import RECOMPUTE_LOCK, SYNC_LOCK, account_lock, lock_key

__all__ = ["RECOMPUTE_LOCK", "SYNC_LOCK", "account_lock", "lock_key"]

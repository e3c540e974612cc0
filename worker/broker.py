"""Where the worker's queue lives, and how deep it is (no Celery import: `nrr status` uses it).

With ``REDIS_URL`` the queue is the Redis list ``nrr`` (plus kombu's priority lists);
without it, the embedded broker keeps one file per message in a folder next to the SQLite
database (``nrr-state/broker``), or under ``./nrr-state`` for other databases.
"""

from __future__ import annotations

from pathlib import Path

from nrr.db import normalise_url
from nrr.settings import Settings

QUEUE = "nrr"
# kombu's Redis transport keeps priority levels in lists named queue + sep + level.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_LEVELS = (3, 6, 9)


def state_dir(settings: Settings) -> Path:
    """Where the embedded broker and the beat schedule file live: beside a SQLite database."""
    url = normalise_url(settings.database_url)
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        database = Path(url[len("sqlite:///"):]).expanduser()
        return database.resolve().parent / "nrr-state"
    return Path.cwd() / "nrr-state"


def broker_folder(settings: Settings) -> Path:
    return state_dir(settings) / "broker"


def queue_depth(settings: Settings, queue: str = QUEUE) -> int | None:
    """Messages waiting in ``queue`` (None when the broker cannot be asked)."""
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                      socket_connect_timeout=5)
        try:
            names = [queue] + [f"{queue}{_PRIORITY_SEP}{level}" for level in _PRIORITY_LEVELS]
            return sum(int(client.llen(name)) for name in names)  # type: ignore[arg-type]
        except redis.RedisError:
            return None
        finally:
            client.close()
    folder = broker_folder(settings)
    if not folder.is_dir():
        return 0
    return sum(1 for path in folder.glob(f"*.{queue}.msg"))

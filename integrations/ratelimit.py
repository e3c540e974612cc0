"""Client-side rate limiter for Stripe: a global limit and one limit per endpoint.

Stripe allows 100 requests/s in live mode and 25/s in test mode, and by default 25/s per
endpoint. We stay under both on purpose instead of bouncing off 429s.

The algorithm is GCRA (the generic cell rate algorithm: one "theoretical arrival time"
per key, ``interval = 1 / rate``). A request may go when both its global key and its
endpoint key allow it; it then books one interval on both. ``burst`` requests may go
ahead of schedule (default 0: requests are evenly spaced, so no one-second window ever
holds more than the rate). :func:`limiter_for` paces at ``PACING`` (95 %) of Stripe's
limits, so network jitter between us and Stripe cannot push a window over.

With ``REDIS_URL`` set the state lives in Redis and one Lua script checks and books both
keys atomically, so every worker process shares the same budget; the clock is Redis'
``TIME``, so processes on different hosts agree. Without ``REDIS_URL`` the limiter is
in-process (a lock and a dict) and never touches Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from nrr.settings import Settings

LIVE_RATE = 100.0
TEST_RATE = 25.0
ENDPOINT_RATE = 25.0
PACING = 0.95


class RateLimiter(Protocol):
    global_rate: float
    endpoint_rate: float

    def acquire(self, endpoint: str) -> float:
        """Block until a request to ``endpoint`` may go; returns the seconds waited."""
        ...


def global_rate_for(settings: Settings) -> float:
    """The configured global limit, else the key's mode (live 100/s, test or unknown 25/s)."""
    if settings.stripe_rate_limit is not None:
        return float(settings.stripe_rate_limit)
    return LIVE_RATE if settings.stripe_livemode else TEST_RATE


def _check_rate(name: str, rate: float) -> float:
    if not rate > 0:
        raise ValueError(f"{name} must be a positive number of requests per second, got {rate!r}")
    return float(rate)


class LocalRateLimiter:
    """In-process GCRA limiter shared by the threads of one process."""

    def __init__(self, global_rate: float, endpoint_rate: float, *, burst: int = 0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.global_rate = _check_rate("global rate", global_rate)
        self.endpoint_rate = _check_rate("endpoint rate", endpoint_rate)
        self.burst = max(0, int(burst))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def _try(self, endpoint: str) -> float:
        """Book a slot now (returns 0) or return how long to wait before trying again."""
        g_interval = 1.0 / self.global_rate
        e_interval = 1.0 / self.endpoint_rate
        with self._lock:
            now = self._clock()
            g_tat = max(self._tat.get("*", now), now)
            e_key = "e:" + endpoint
            e_tat = max(self._tat.get(e_key, now), now)
            wait = max(g_tat - now - self.burst * g_interval,
                       e_tat - now - self.burst * e_interval, 0.0)
            if wait > 1e-9:  # below a nanosecond is float rounding, not a real wait
                return wait
            self._tat["*"] = g_tat + g_interval
            self._tat[e_key] = e_tat + e_interval
            return 0.0

    def acquire(self, endpoint: str) -> float:
        waited = 0.0
        while True:
            wait = self._try(endpoint)
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait


# KEYS[1] global key, KEYS[2] endpoint key; ARGV: global interval us, endpoint interval us,
# burst, key ttl ms. Returns 0 when the slot was booked, else the microseconds to wait.
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gi = tonumber(ARGV[1])
local ei = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local g_tat = tonumber(redis.call('GET', KEYS[1]) or now)
local e_tat = tonumber(redis.call('GET', KEYS[2]) or now)
if g_tat < now then g_tat = now end
if e_tat < now then e_tat = now end
local wait = math.max(g_tat - now - burst * gi, e_tat - now - burst * ei, 0)
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%d', g_tat + gi), 'PX', ttl)
redis.call('SET', KEYS[2], string.format('%d', e_tat + ei), 'PX', ttl)
return 0
"""


class RedisRateLimiter:
    """GCRA limiter whose state lives in Redis, shared by every process using ``prefix``."""

    def __init__(self, redis_url: str, global_rate: float, endpoint_rate: float, *,
                 burst: int = 0, prefix: str = "nrr:stripe-rate",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import redis

        self.global_rate = _check_rate("global rate", global_rate)
        self.endpoint_rate = _check_rate("endpoint rate", endpoint_rate)
        self.burst = max(0, int(burst))
        self.prefix = prefix
        self._sleep = sleep
        self._redis: Any = redis.Redis.from_url(redis_url)
        self._script = self._redis.register_script(_GCRA_SCRIPT)

    def acquire(self, endpoint: str) -> float:
        g_interval = int(1_000_000 / self.global_rate)
        e_interval = int(1_000_000 / self.endpoint_rate)
        ttl_ms = max(1000, 2 * max(g_interval, e_interval) * (self.burst + 1) // 1000)
        keys = [f"{self.prefix}:global", f"{self.prefix}:endpoint:{endpoint}"]
        waited = 0.0
        while True:
            wait_us = int(self._script(keys=keys, args=[g_interval, e_interval, self.burst, ttl_ms]))
            if wait_us <= 0:
                return waited
            self._sleep(wait_us / 1_000_000)
            waited += wait_us / 1_000_000

    def close(self) -> None:
        self._redis.close()


def limiter_for(settings: Settings) -> RateLimiter:
    """The limiter the settings ask for: Redis-shared with ``REDIS_URL``, in-process otherwise."""
    global_rate = global_rate_for(settings) * PACING
    endpoint_rate = float(settings.stripe_endpoint_rate_limit) * PACING
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, global_rate, endpoint_rate)
    return LocalRateLimiter(global_rate, endpoint_rate)

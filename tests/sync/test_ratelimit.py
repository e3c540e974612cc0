"""The client-side limiter: global and per-endpoint rates, in-process and shared through Redis."""

from __future__ import annotations

import threading
import time

import pytest

from integrations.ratelimit import (
    LocalRateLimiter,
    RedisRateLimiter,
    global_rate_for,
    limiter_for,
)
from tests.sync.conftest import make_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_mode_comes_from_the_key_prefix_unless_configured() -> None:
    env: dict[str, str | None] = {"NRR_STRIPE_RATE_LIMIT": None}
    assert global_rate_for(make_settings(STRIPE_API_KEY="rk_live_x", **env)) == 100
    assert global_rate_for(make_settings(STRIPE_API_KEY="sk_live_x", **env)) == 100
    assert global_rate_for(make_settings(STRIPE_API_KEY="rk_test_x", **env)) == 25
    assert global_rate_for(make_settings(STRIPE_API_KEY="sk_test_x", **env)) == 25
    assert global_rate_for(make_settings(STRIPE_API_KEY="sk_live_x",
                                         NRR_STRIPE_RATE_LIMIT="40")) == 40


def test_without_redis_url_the_limiter_is_in_process_with_headroom() -> None:
    limiter = limiter_for(make_settings(REDIS_URL=None, NRR_STRIPE_RATE_LIMIT="100",
                                        NRR_STRIPE_ENDPOINT_RATE_LIMIT="25"))
    assert isinstance(limiter, LocalRateLimiter)
    assert (limiter.global_rate, limiter.endpoint_rate) == (95.0, 23.75)


def test_endpoint_limit_paces_one_endpoint() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(100, 25, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(101):
        limiter.acquire("/v1/invoices")
        stamps.append(clock.now)
    assert stamps[-1] == pytest.approx(100 / 25, abs=1e-6)
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 1 / 25 - 1e-9


def test_global_limit_caps_the_sum_of_endpoints() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(25, 25, clock=clock, sleep=clock.sleep)
    endpoints = ["/v1/customers", "/v1/prices", "/v1/invoices", "/v1/subscriptions"]
    for n in range(200):
        limiter.acquire(endpoints[n % 4])
    # 200 requests at 25/s overall, although each endpoint alone could go at 25/s.
    assert clock.now == pytest.approx(199 / 25, abs=1e-6)


def test_burst_lets_requests_go_ahead_of_schedule() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(100, 10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.acquire("/v1/x")
    assert clock.now == 0.0
    limiter.acquire("/v1/x")
    assert clock.now == pytest.approx(0.1)


def test_threads_never_exceed_the_rate_on_a_real_clock() -> None:
    limiter = LocalRateLimiter(200, 50)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire("/v1/x") for _ in range(15)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert elapsed >= (60 - 2) / 50  # 60 requests at 50/s, one of burst


def test_redis_limiter_is_shared_between_instances(redis_url: str) -> None:
    # Two instances stand for two worker processes: together they keep one budget.
    first = RedisRateLimiter(redis_url, 1000, 40, prefix="test-shared")
    second = RedisRateLimiter(redis_url, 1000, 40, prefix="test-shared")
    started = time.monotonic()
    threads = [threading.Thread(target=lambda lim=lim: [lim.acquire("/v1/invoices")
                                                       for _ in range(20)])
               for lim in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert elapsed >= (40 - 2) / 40
    assert elapsed < 3.0  # and it does let requests through at about the rate
    first.close()
    second.close()


def test_redis_limiter_keeps_endpoints_apart(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, 1000, 20, prefix="test-apart")
    started = time.monotonic()
    for n in range(20):
        limiter.acquire(f"/v1/endpoint{n % 10}")
    # Ten endpoints at 20/s each: 20 requests need only about 0.05 s, not 1 s.
    assert time.monotonic() - started < 0.5
    limiter.close()


def test_limiter_for_uses_redis_when_configured(redis_url: str) -> None:
    limiter = limiter_for(make_settings(REDIS_URL=redis_url))
    assert isinstance(limiter, RedisRateLimiter)
    assert limiter.acquire("/v1/customers") == 0.0
    limiter.close()

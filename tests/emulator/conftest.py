"""Fixtures for the emulator tests: a generated account (fixed seed and clock), a running
emulator on a free loopback port, and a real ``stripe.StripeClient`` pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account

NOW = 1_795_000_000  # 2026-11-18 (UTC), fixed so the generated account is always the same
TEST_KEY = "sk_test_emulator"


@pytest.fixture(scope="session")
def account() -> EmulatedAccount:
    """A read-only account served to the SDK tests (never change it: use
    ``fresh_account``); small enough for the SDK to parse quickly, with deleted customers,
    long invoices, trials, pauses and unpaid subscriptions."""
    return generate_account(seed=4, customers=120, months=18, now=NOW)


@pytest.fixture(scope="session")
def big_account() -> EmulatedAccount:
    """The default size (300 customers, 24 months) for the generator's invariants."""
    return generate_account(seed=7, customers=300, months=24, now=NOW)


@pytest.fixture
def fresh_account() -> EmulatedAccount:
    return generate_account(seed=11, customers=60, months=12, now=NOW)


@pytest.fixture(scope="session")
def shared_server(account: EmulatedAccount) -> Iterator[EmulatorServer]:
    with EmulatorServer(account) as server:
        yield server


@pytest.fixture
def server(shared_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The shared server with a clean log and no injected faults."""
    shared_server.reset_log()
    yield shared_server
    shared_server.latency_ms = 0
    shared_server.fail_every = None
    shared_server.fail_status = 429
    shared_server.error_code = "rate_limit"
    shared_server.rate_limit = None
    shared_server.endpoint_rate_limit = None


def make_client(url: str, key: str = TEST_KEY, retries: int = 0) -> Any:
    """A real ``stripe.StripeClient`` (typed Any: tests send parameters its types refuse)."""
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=retries)


@pytest.fixture
def client(server: EmulatorServer) -> Any:
    return make_client(server.url)

"""The sync against the local Stripe emulator (real SDK, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from integrations.stripe_client import StripeReader
from integrations.stripe_sync import (
    EVENTS_RESOURCE,
    RESOURCE_NAMES,
    SyncInterrupted,
    read_sync_state,
    run_sync,
)
from models.mirror import (
    StripeCoupon,
    StripeCustomer,
    StripeInvoice,
    StripeInvoiceLine,
    StripePrice,
    StripeProduct,
    StripeSubscription,
    StripeSubscriptionItem,
    SyncState,
)
from models.outlook import StripeSubscriptionSchedule
from nrr.db import make_engine, session_scope
from nrr.settings import Settings, load_settings
from tests.sync.conftest import mirror_snapshot

KEY = "sk_test_emulator123"


def emulator_settings(url: str, server: EmulatorServer) -> Settings:
    return load_settings({"DATABASE_URL": url, "STRIPE_API_KEY": KEY,
                          "STRIPE_API_BASE": server.url,
                          "NRR_STRIPE_RATE_LIMIT": "2000",
                          "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "2000"})


@pytest.fixture
def account() -> EmulatedAccount:
    return generate_account(seed=11, customers=60, months=8)


@pytest.fixture
def server(account: EmulatedAccount) -> Iterator[EmulatorServer]:
    with EmulatorServer(account) as running:
        yield running


def _copy_db(url: str, name: str) -> str:
    source = url.removeprefix("sqlite:///")
    target = str(Path(source).with_name(name))
    shutil.copy(source, target)
    return f"sqlite:///{target}"


def _rows(engine: Engine, model: type[Any]) -> dict[str, Any]:
    with session_scope(engine) as session:
        return {row.id: row for row in session.scalars(select(model))}


def test_backfill_holds_exactly_the_emulator_objects(account: EmulatedAccount,
                                                     server: EmulatorServer, db_url: str,
                                                     db_engine: Engine) -> None:
    settings = emulator_settings(db_url, server)
    result = run_sync(db_engine, settings)

    assert result.mode == "backfill" and result.skipped == 0
    expected = {StripeCustomer: account.customers, StripeProduct: account.products,
                StripePrice: account.prices, StripeCoupon: account.coupons,
                StripeSubscription: account.subscriptions, StripeInvoice: account.invoices,
                StripeSubscriptionSchedule: account.subscription_schedules}
    assert account.subscription_schedules
    for model, objects in expected.items():
        stored = _rows(db_engine, model)
        assert set(stored) == set(objects), model.__name__
    customers = _rows(db_engine, StripeCustomer)
    for customer_id, obj in account.customers.items():
        assert customers[customer_id].raw == obj
        assert customers[customer_id].email == obj["email"]
    prices = _rows(db_engine, StripePrice)
    for price_id, obj in account.prices.items():
        assert prices[price_id].raw.get("tiers") == obj.get("tiers")  # expanded
        assert prices[price_id].raw.get("currency_options") == obj.get("currency_options")
        assert prices[price_id].unit_amount_decimal == obj.get("unit_amount_decimal")
    subscriptions = _rows(db_engine, StripeSubscription)
    items = _rows(db_engine, StripeSubscriptionItem)
    for sub_id, obj in account.subscriptions.items():
        assert subscriptions[sub_id].status == obj["status"]
        assert subscriptions[sub_id].cancel_at_period_end == obj["cancel_at_period_end"]
        for item in obj["items"]["data"]:
            assert items[item["id"]].quantity == item["quantity"]
            assert items[item["id"]].price_id == item["price"]["id"]
    invoices = _rows(db_engine, StripeInvoice)
    for invoice_id, obj in account.invoices.items():
        assert (invoices[invoice_id].status, invoices[invoice_id].total) == (obj["status"],
                                                                             obj["total"])
        assert invoices[invoice_id].lines_complete
    lines = _rows(db_engine, StripeInvoiceLine)
    expected_lines = {line["id"]: line for ls in account.invoice_lines.values() for line in ls}
    assert set(lines) == set(expected_lines)
    for line_id, line in expected_lines.items():
        assert lines[line_id].amount == line["amount"]
        assert lines[line_id].period_start == line["period"]["start"]
    # No per-object requests for the listing: only events applied after it may re-fetch.
    counts = server.counts_by_endpoint()
    retrieves = sum(n for endpoint, n in counts.items() if endpoint.endswith("/:id"))
    assert retrieves <= result.events_applied
    assert counts["/v1/invoices/:id/lines"] == sum(
        math.ceil((len(ls) - 10) / 100) for ls in account.invoice_lines.values() if len(ls) > 10)


def test_a_backfilled_account_prices_every_item_in_its_subscription_currency(
        sqlite_url: str) -> None:
    """Items on a usd price with currency_options in eur / gbp / jpy subscriptions are
    priced from the options, which the backfill must expand: the recompute skips none."""
    from datetime import UTC, datetime

    from nrr.demo import demo_rates
    from nrr.domain.months import add_months, current_month
    from nrr.services.fx import parse_rates_csv, store_rates
    from nrr.services.recompute import recompute

    now = 1_795_000_000
    account = generate_account(seed=3, customers=40, months=8, now=now)
    foreign = [(s["currency"], i["price"]["id"]) for s in account.subscriptions.values()
               for i in s["items"]["data"] if i["price"]["currency"] != s["currency"]]
    assert foreign  # the case under test is in this account
    engine = make_engine(sqlite_url)
    with EmulatorServer(account) as running:
        settings = emulator_settings(sqlite_url, running)
        run_sync(engine, settings)
    stored = _rows(engine, StripePrice)
    for currency, price_id in foreign:
        assert currency in stored[price_id].raw["currency_options"]
    month = current_month(settings.tz, datetime.fromtimestamp(now, UTC))
    rates = demo_rates(add_months(month, -10), month, settings.reporting_currency,
                       ("eur", "gbp", "jpy"))
    csv = "date,currency,rate\n" + "".join(f"{d},{c},{r}\n" for d, c, r in rates)
    with session_scope(engine) as session:
        store_rates(session, parse_rates_csv(csv), reporting_currency=settings.reporting_currency)
    with session_scope(engine) as session:
        result = recompute(session, settings, now=datetime.fromtimestamp(now, UTC))
    assert result.skips == [] and result.customers > 0


def test_a_429_on_every_fifth_request_still_completes(account: EmulatedAccount,
                                                      server: EmulatorServer,
                                                      sqlite_url: str) -> None:
    reference_url = _copy_db(sqlite_url, "reference.db")
    reference = make_engine(reference_url)
    run_sync(reference, emulator_settings(reference_url, server))

    server.reset_log()
    server.fail_every = 5
    engine = make_engine(sqlite_url)
    client = StripeReader(emulator_settings(sqlite_url, server), backoff_base=0.01)
    result = run_sync(engine, emulator_settings(sqlite_url, server), client=client)

    statuses = [r.status for r in server.requests]
    assert statuses.count(429) == len(statuses) // 5 >= 4
    assert client.rate_limited == statuses.count(429) and result.requests == len(statuses)
    assert mirror_snapshot(engine) == mirror_snapshot(reference)


def test_twenty_crashes_at_random_pages_end_in_the_uninterrupted_state(
        account: EmulatedAccount, server: EmulatorServer, sqlite_url: str) -> None:
    reference_url = _copy_db(sqlite_url, "reference.db")
    reference = make_engine(reference_url)
    run_sync(reference, emulator_settings(reference_url, server))
    expected = mirror_snapshot(reference)

    engine = make_engine(sqlite_url)
    settings = emulator_settings(sqlite_url, server)
    rng = random.Random(2026)
    sizes = {"customers": account.customers, "products": account.products,
             "prices": account.prices, "coupons": account.coupons,
             "subscriptions": account.subscriptions, "invoices": account.invoices,
             "subscription_schedules": account.subscription_schedules}
    crashes = 0
    for _attempt in range(20):
        states = {row["resource"]: row for row in read_sync_state(engine)}
        open_resources = [name for name in RESOURCE_NAMES
                          if states.get(name, {}).get("phase") != "done"]
        if not open_resources:
            # The backfill finished: open a new one to crash into (as `--full` would).
            with session_scope(engine) as session:
                for row in session.scalars(select(SyncState)):
                    if row.resource != EVENTS_RESOURCE:
                        row.phase, row.cursor = "running", None
                events = session.get(SyncState, EVENTS_RESOURCE)
                assert events is not None
                events.phase = "waiting"
            open_resources = list(RESOURCE_NAMES)
        target = rng.choice(open_resources)
        at_page = rng.randrange(min(3, math.ceil(len(sizes[target]) / 17)))

        def crash(resource: str, done: int, target: str = target, at_page: int = at_page) -> None:
            if resource == target and done == at_page:
                raise SyncInterrupted("injected crash")

        client = StripeReader(settings)
        small = client.iter_pages

        def iter_pages(resource, params=None, *, starting_after=None, limit=100,  # type: ignore[no-untyped-def]
                       small=small):
            return small(resource, params, starting_after=starting_after, limit=17)

        client.iter_pages = iter_pages  # type: ignore[method-assign]
        try:
            run_sync(engine, settings, client=client, page_hook=crash,
                     parallel=bool(rng.getrandbits(1)))
        except SyncInterrupted:
            crashes += 1
    run_sync(engine, settings)
    assert crashes >= 15  # a resumed resource may finish before the chosen page
    assert mirror_snapshot(engine) == expected


def test_sigkill_at_random_times_then_resume(account: EmulatedAccount, server: EmulatorServer,
                                             sqlite_url: str) -> None:
    reference_url = _copy_db(sqlite_url, "reference.db")
    reference = make_engine(reference_url)
    run_sync(reference, emulator_settings(reference_url, server))
    server.latency_ms = 150  # a sync of ~20 requests outlasts the kill times below
    env = {**os.environ, "DATABASE_URL": sqlite_url, "STRIPE_API_KEY": KEY,
           "STRIPE_API_BASE": server.url, "NRR_STRIPE_RATE_LIMIT": "2000",
           "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "2000", "NRR_LOG_LEVEL": "WARNING"}
    rng = random.Random(5)
    command = [sys.executable, "-c", "from integrations.stripe_sync import run_sync;"
               "from nrr.db import ready_engine; from nrr.settings import load_settings;"
               "s = load_settings(); run_sync(ready_engine(s.database_url), s)"]
    killed = 0
    for _ in range(3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=30)
    server.latency_ms = 0
    engine = make_engine(sqlite_url)
    run_sync(engine, emulator_settings(sqlite_url, server))
    assert killed >= 1
    assert mirror_snapshot(engine) == mirror_snapshot(reference)


def test_incremental_sync_after_changes_matches_a_fresh_backfill(
        account: EmulatedAccount, server: EmulatorServer, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    settings = emulator_settings(sqlite_url, server)
    run_sync(engine, settings)
    account.apply_changes(25, rng=random.Random(3))
    server.reset_log()

    result = run_sync(engine, settings)

    assert result.mode == "events" and result.events_applied > 0
    fresh_url = _fresh_template_copy(sqlite_url)
    fresh = make_engine(fresh_url)
    run_sync(fresh, emulator_settings(fresh_url, server))
    for model in (StripeCustomer, StripeSubscription, StripeSubscriptionItem, StripeInvoice,
                  StripePrice, StripeCoupon, StripeInvoiceLine):
        synced, truth = _rows(engine, model), _rows(fresh, model)
        live = {k: v for k, v in synced.items() if not getattr(v, "deleted", False)}
        assert set(live) == set(truth), model.__name__
        for object_id, row in truth.items():
            assert _comparable(live[object_id].raw) == _comparable(row.raw), (model.__name__,
                                                                            object_id)
    gone = {k for k, v in _rows(engine, StripeCustomer).items() if v.deleted}
    assert gone <= set(account.deleted_customers)


# Stripe changes these without an event for the object (a new invoice bumps its customer's
# sequence); they carry no revenue meaning.
_NO_EVENT_FIELDS = {"next_invoice_sequence"}


# Objects embedded in another (a subscription item's price and plan) are refreshed by
# their own events in their own rows; Stripe sends no event for the embedding object when
# a price is renamed, so the embedded copy is compared by id only.
_EMBEDDED_BY_ID = {"price", "plan", "product", "coupon"}


def _by_id(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("object") in _EMBEDDED_BY_ID and "id" in value:
            return value["id"]
        return {k: _by_id(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_id(v) for v in value]
    return value


def _comparable(raw: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _by_id(v) for k, v in (raw or {}).items() if k not in _NO_EVENT_FIELDS}


def _fresh_template_copy(sqlite_url: str) -> str:
    """A migrated, empty database beside ``sqlite_url`` (built from the migrations)."""
    from nrr.db import upgrade

    path = Path(sqlite_url.removeprefix("sqlite:///")).with_name("fresh.db")
    path.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return f"sqlite:///{path}"


def test_a_stale_cursor_triggers_the_refresh(account: EmulatedAccount, server: EmulatorServer,
                                             sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    settings = emulator_settings(sqlite_url, server)
    run_sync(engine, settings)
    with session_scope(engine) as session:
        state = session.get(SyncState, EVENTS_RESOURCE)
        assert state is not None
        state.event_cursor = int(time.time()) - 40 * 86_400
    server.reset_log()

    result = run_sync(engine, settings)

    assert result.mode == "refresh"
    counts = server.counts_by_endpoint()
    assert counts["/v1/customers"] >= 1 and counts["/v1/invoices"] >= 1

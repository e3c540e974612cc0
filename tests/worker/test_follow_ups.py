"""Every recompute path is followed by the snapshot and the alert evaluation, each sent only
after the transaction before it committed (tasks run in this process; sends recorded)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from integrations.stripe_sync import record_event, run_sync
from models.derived import AlertDelivery, RecomputeRun, RetentionSnapshot
from models.mirror import DirtyCustomer
from nrr.db import make_engine, session_scope
from nrr.settings import Settings, load_settings
from tests.worker.conftest import API_KEY, seed_rates
from worker import tasks


@pytest.fixture
def account() -> EmulatedAccount:
    return generate_account(seed=5, customers=25, months=6, now=int(time.time()))


@pytest.fixture
def world(sqlite_url: str, account: EmulatedAccount,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Engine]]:
    """A synced mirror; the tasks module pointed at its database and the emulator."""
    with EmulatorServer(account) as server:
        settings = load_settings({"DATABASE_URL": sqlite_url, "STRIPE_API_KEY": API_KEY,
                                  "STRIPE_API_BASE": server.url,
                                  "NRR_STRIPE_RATE_LIMIT": "1000",
                                  "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000"})
        seed_rates(sqlite_url)
        engine = make_engine(sqlite_url)
        run_sync(engine, settings)
        monkeypatch.setattr(tasks, "app_settings", settings)
        monkeypatch.setattr(tasks, "_readers", {})
        yield settings, engine
        for reader in tasks._readers.values():
            reader.close()
        engine.dispose()


def _count(engine: Engine, model: type[Any]) -> int:
    # A separate connection: it sees only what was committed.
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _record_sends(monkeypatch: pytest.MonkeyPatch, task: Any, engine: Engine,
                  committed: type[Any]) -> list[tuple[dict[str, Any], int]]:
    """Replace ``task.apply_async``: each send records its kwargs and how many rows of
    ``committed`` another connection saw at that moment."""
    sent: list[tuple[dict[str, Any], int]] = []

    def apply_async(args: Any = None, kwargs: dict[str, Any] | None = None,
                    **_: Any) -> None:
        sent.append((dict(kwargs or {}), _count(engine, committed)))

    monkeypatch.setattr(task, "apply_async", apply_async)
    return sent


def _record(engine: Engine, events: list[dict[str, Any]]) -> None:
    with session_scope(engine) as session:
        for event in events:
            record_event(session, event, source="webhook")


def _subscription_event(account: EmulatedAccount) -> dict[str, Any]:
    for _ in range(20):
        events = account.apply_changes(5)
        found = [e for e in events if e["type"].startswith("customer.subscription.")]
        if found:
            return found[-1]
    raise AssertionError("no subscription event in 100 changes")


def test_a_webhook_event_queues_one_recompute_then_the_snapshot_after_commit(
        world: tuple[Settings, Engine], account: EmulatedAccount,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _settings, engine = world
    tasks.recompute.apply(kwargs={"scope": "all", "follow_up": False}).get()
    event = _subscription_event(account)
    _record(engine, [event])
    recomputes = _record_sends(monkeypatch, tasks.recompute, engine, DirtyCustomer)
    snapshots = _record_sends(monkeypatch, tasks.snapshot, engine, RecomputeRun)

    touched = tasks.process_event.apply(args=[event["id"]]).get()

    assert touched
    # One recompute of the dirty customers, sent once the event's marks were committed.
    assert recomputes == [({"scope": "dirty", "reason": f"event {event['id']}",
                            "wait": tasks.SHORT / 2}, len(touched))]
    runs_before = _count(engine, RecomputeRun)
    tasks.recompute.apply(kwargs=recomputes[0][0]).get()
    assert _count(engine, DirtyCustomer) == 0
    # That recompute is followed by one snapshot (it queues the alerts), after its commit.
    assert snapshots == [({"reason": f"event {event['id']}"}, runs_before + 1)]


def test_a_burst_of_events_queues_one_recompute_until_it_starts(
        world: tuple[Settings, Engine], account: EmulatedAccount,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _settings, engine = world
    events = [_subscription_event(account) for _ in range(3)]
    _record(engine, events)
    recomputes = _record_sends(monkeypatch, tasks.recompute, engine, DirtyCustomer)
    _record_sends(monkeypatch, tasks.snapshot, engine, RecomputeRun)
    touched: set[str] = set()
    for event in events[:2]:
        touched |= set(tasks.process_event.apply(args=[event["id"]]).get())
    assert len(recomputes) == 1  # the first is queued and has not started
    tasks.recompute.apply(kwargs=recomputes[0][0]).get()
    assert _count(engine, DirtyCustomer) == 0
    # An event after that recompute started queues the next one.
    touched |= set(tasks.process_event.apply(args=[events[2]["id"]]).get())
    assert len(recomputes) == 2 and touched


def test_the_snapshot_is_followed_by_the_alerts_after_commit(
        world: tuple[Settings, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, engine = world
    tasks.recompute.apply(kwargs={"scope": "all", "follow_up": False}).get()
    sent = _record_sends(monkeypatch, tasks.evaluate_alerts, engine, RetentionSnapshot)

    outcome = tasks.snapshot.apply(kwargs={"reason": "test"}).get()

    assert outcome["created"] and _count(engine, RetentionSnapshot) > 0
    assert sent == [({"month": outcome["month"]}, _count(engine, RetentionSnapshot))]


def test_alert_evaluation_twice_plans_each_message_once(
        world: tuple[Settings, Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, engine = world
    # A threshold no month reaches, so the rule fires and there is something to deliver.
    monkeypatch.setattr(tasks, "app_settings", load_settings(
        {"DATABASE_URL": settings.database_url, "NRR_ALERT_NRR_THRESHOLD": "1000"}))
    tasks.recompute.apply(kwargs={"scope": "all", "follow_up": False}).get()
    month = tasks.snapshot.apply(kwargs={"follow_up": False}).get()["month"]

    first = tasks.evaluate_alerts.apply(kwargs={"month": month}).get()
    rows = _count(engine, AlertDelivery)
    second = tasks.evaluate_alerts.apply(kwargs={"month": month}).get()

    assert first["created"] == rows > 0
    assert second["created"] == 0 and _count(engine, AlertDelivery) == rows

